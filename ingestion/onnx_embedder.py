"""The embedding model on ONNX Runtime's CPU execution provider.

The same model directory, tokenizer, limits, mean pooling and normalisation as
:class:`~ingestion.embedder.SentenceTransformerEmbedder`, run by ONNX Runtime from a file
exported once (:mod:`ingestion.onnx_export`). In fp32 its vectors are torch's (cosine 1.0 to
1e-6), so it shares torch's model id, cache entries and namespaces; int8 vectors differ (cosine
about 0.99), so int8 has a model id of its own. Figures: bench/RESULTS.md, "Embedding runtime
on CPU".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingestion.config import ONNX_BATCH_SIZE, EmbeddingConfig, OnnxPrecision
from ingestion.embedder import (
    INT8_SUFFIX,
    check_lengths,
    counting_tokenizer,
    read_dimension,
    read_json,
    read_json_list,
    read_max_seq_length,
    resolve_model_path,
)
from ingestion.errors import ModelNotFoundError

# The pipeline the exported graph reproduces: a transformer, then mean pooling, then (in
# encode) normalisation. Anything else (CLS pooling, a Dense layer) runs on torch.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def unsupported_pipeline(path: Path) -> str | None:
    """Why the ONNX backend cannot run the model at ``path``, or None when it can."""
    for module in read_json_list(path, "modules.json"):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            return f"its pipeline has a {kind} module"
        if kind == "Pooling":
            config = read_json(path / str(module["path"]), "config.json")
            modes = config.get("pooling_mode")
            if modes is None:  # older configs: one pooling_mode_<mode> flag per mode
                modes = [
                    k.removeprefix("pooling_mode_")
                    for k, v in config.items()
                    if k.startswith("pooling_mode_") and v is True
                ]
            if modes not in ("mean", ["mean"], ["mean_tokens"]):
                return f"it pools by {modes}, not by the mean alone"
    return None


def onnx_model_id(model: str, precision: OnnxPrecision) -> str:
    """The model id of ``model``'s vectors at ``precision``: fp32's are torch's own."""
    return model if precision == "fp32" else model + INT8_SUFFIX


class OnnxEmbedder:
    """The model on ONNX Runtime (CPU): token counting at once, the session on first use.

    Thread-safe like :class:`~ingestion.embedder.SentenceTransformerEmbedder`: ONNX Runtime
    sessions may run from several threads, and the export and session load happen once,
    under a lock.
    """

    def __init__(self, config: EmbeddingConfig, *, cache_dir: Path) -> None:
        """Read the model directory (about 0.05 s); export and load happen on first use.

        Raises:
            ModelNotFoundError: the model cannot be found, or its pipeline is not one the
                ONNX backend runs (then set ``SHOAL_EMBEDDING__BACKEND=torch``).
        """
        self._config = config
        self._path = resolve_model_path(config.model)
        self._max_seq_length = read_max_seq_length(self._path)
        self._dimension = read_dimension(self._path)
        why = unsupported_pipeline(self._path)
        if why is not None:
            raise ModelNotFoundError(
                f"the onnx embedding backend cannot run {config.model!r}: {why}; set "
                "SHOAL_EMBEDDING__BACKEND=torch"
            )
        self._tokenizer = counting_tokenizer(self._path)
        self._cache_dir = cache_dir
        self._model_id = onnx_model_id(config.model, config.onnx_precision)
        self._batch_size = config.batch_size or ONNX_BATCH_SIZE[config.onnx_precision]
        self._session: Any = None  # an onnxruntime.InferenceSession (untyped)
        self._input_names: tuple[str, ...] = ()
        self._load_lock = threading.Lock()
        self._encoded = threading.Event()

    @property
    def model_id(self) -> str:
        """The model and, where vectors differ from torch's, the precision: ``+onnx-int8``."""
        return self._model_id

    @property
    def dimension(self) -> int:
        """Length of every vector :meth:`encode` returns."""
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """Most tokens, special tokens included, the model reads; :meth:`encode` refuses more."""
        return self._max_seq_length

    @property
    def precision(self) -> str:
        """``fp32`` or ``int8``."""
        return self._config.onnx_precision

    @property
    def device(self) -> str | None:
        """``cpu`` once the session is loaded, else None."""
        return None if self._session is None else "cpu"

    @property
    def batch_size(self) -> int:
        """Texts per forward pass: the setting, else the precision's :data:`ONNX_BATCH_SIZE`."""
        return self._batch_size

    @property
    def warm(self) -> bool:
        """True once the session has loaded and encoded a text."""
        return self._encoded.is_set()

    def count_tokens(self, text: str) -> int:
        """The model's token count of ``text``, including its special tokens ([CLS], [SEP])."""
        return len(self._tokenizer.encode(text).ids)

    def warm_up(self) -> None:
        """Export the model if needed, load the session and encode one text.

        Whatever exporting or loading raises is raised here.
        """
        self.encode(["warm-up"])

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts``: one unit-length float32 row per text, in input order.

        As sentence-transformers does, texts are sorted by length and cut into batches of
        :attr:`batch_size`, each padded to its longest text. The tokens that go into the model
        are counted for the length check, so ``token_counts`` is not needed (it is checked
        for its length only).

        Raises:
            ValueError: a text is longer than :attr:`max_seq_length` tokens (nothing is ever
                silently truncated), or ``token_counts`` has another length than ``texts``.
        """
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        if token_counts is not None and len(token_counts) != len(texts):
            raise ValueError("token_counts must have one count per text")
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        check_lengths(lengths.tolist(), max_seq_length=self._max_seq_length, model_id=self.model_id)
        session = self._load()
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = int(lengths[rows[0]])  # the longest of the batch: sorted longest first
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                ids[i, : lengths[row]] = encodings[row].ids
                mask[i, : lengths[row]] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (pooled,) = session.run(None, {name: feed[name] for name in self._input_names})
            vectors[rows] = pooled
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = vectors / np.maximum(norms, np.float32(1e-12))
        self._encoded.set()
        return normalised

    def _load(self) -> Any:  # Any: onnxruntime.InferenceSession is untyped
        with self._load_lock:
            if self._session is None:
                import onnxruntime

                from ingestion.onnx_export import onnx_file

                path = onnx_file(self._path, self._config.onnx_precision, cache_dir=self._cache_dir)
                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                session = onnxruntime.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
                self._input_names = tuple(i.name for i in session.get_inputs())
                self._session = session
            return self._session
