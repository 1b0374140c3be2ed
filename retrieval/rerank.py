"""Reordering retrieved passages by a finer relevance model before they are answered from.

A :class:`Reranker` takes the passages a vector search returned (best cosine first) and gives
back at most ``top_k`` of them, best first. Two implementations, side by side:

    IdentityReranker       keeps the retrieval order; costs nothing (the default)
    CrossEncoderReranker   scores every (question, passage) pair with a local CrossEncoder

:func:`make_reranker` builds either from a spec string. No cross-encoder weights ship with
Shoal and none are ever downloaded: the cross-encoder loads a directory already on disk.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from retrieval.generation.base import Passage

log = structlog.get_logger(__name__)

IDENTITY_SPEC = "identity"
CROSS_ENCODER_PREFIX = "cross-encoder:"


class Reranker(Protocol):
    """Orders passages by relevance to a question and keeps the best ``top_k``.

    ``name`` identifies the reranker and its model in responses and metrics (``identity``,
    ``cross-encoder:<directory name>``). Implementations are safe to call from several
    threads at once.
    """

    @property
    def name(self) -> str:
        """Stable identifier of the reranker and its model."""
        ...

    def rerank(self, question: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        """Return at most ``top_k`` of ``passages``, the most relevant to ``question`` first.

        The passages come back as they went in: only which are kept and their order change.
        In particular ``Passage.score`` stays the retrieval cosine, never a reranker score,
        because abstention compares it with the calibrated ``min_score`` and a reranker's
        scores are on another scale. No passages give an empty list.

        Raises:
            ValueError: ``top_k`` is below 1.
        """
        ...


class IdentityReranker:
    """Keeps the retrieval order and truncates to ``top_k``: reranking switched off."""

    @property
    def name(self) -> str:
        """Always ``identity``."""
        return IDENTITY_SPEC

    def rerank(self, question: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        """The first ``top_k`` of ``passages``, in their order; ``question`` is not read.

        Raises:
            ValueError: ``top_k`` is below 1.
        """
        _check_top_k(top_k)
        return list(passages[:top_k])


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` read from a local directory.

    It reads the question and a passage together and gives the pair one relevance score,
    which is what it sorts by. Thread-safe: calls share one model and take turns under a
    lock (inference on the CPU already uses every core, so little is lost).
    """

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        """Load the model in ``path`` onto ``device`` now (importing sentence-transformers
        alone takes ~7 s), so a bad directory fails at start-up, not at the first query.

        ``path`` holds a CrossEncoder saved by sentence-transformers, or a Hugging Face model
        with a sequence-classification head (the older cross-encoder layout). ``batch_size``
        pairs go through the model at once; ``max_length`` caps the tokens of a pair
        (default: the model's own limit), longer pairs being truncated.

        Raises:
            ValueError: ``batch_size`` or ``max_length`` is below 1; ``path`` is missing, is
                not a model directory, holds an embedding model rather than a cross-encoder,
                gives several scores per pair, or fails to load. The message names ``path``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        _check_model_dir(path)
        self._name = f"{CROSS_ENCODER_PREFIX}{path.name}"
        self._batch_size = batch_size
        self._model, self._raw_scores = _load_cross_encoder(path, device, max_length)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """``cross-encoder:<directory name>``."""
        return self._name

    def rerank(self, question: str, passages: Sequence[Passage], top_k: int) -> list[Passage]:
        """The ``top_k`` passages the model scores highest with ``question``, best first.

        Equal scores keep the retrieval order. Fewer than two passages are returned without
        calling the model: there is nothing to order.

        Raises:
            ValueError: ``top_k`` is below 1.
        """
        _check_top_k(top_k)
        if len(passages) < 2:
            return list(passages[:top_k])
        pairs = [(question, passage.text) for passage in passages]
        with self._lock:
            scores = self._model.predict(
                pairs,
                batch_size=self._batch_size,
                # Raw logits: the default sigmoid is monotonic but saturates in float32
                # (every logit above ~17 becomes 1.0), turning clear winners into ties.
                activation_fn=self._raw_scores,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        order = _order_by_score(np.asarray(scores, dtype=np.float32).reshape(len(passages)))
        return [passages[index] for index in order[:top_k]]


def make_reranker(spec: str) -> Reranker:
    """Build the reranker ``spec`` names: ``identity``, or ``cross-encoder:<directory>``
    with an absolute path (``~`` expands) to a local CrossEncoder model, loaded on the CPU.

    Raises:
        ValueError: ``spec`` is neither form, or the cross-encoder cannot be loaded (see
            :class:`CrossEncoderReranker`).
    """
    if spec == IDENTITY_SPEC:
        return IdentityReranker()
    if spec.startswith(CROSS_ENCODER_PREFIX):
        path = Path(spec.removeprefix(CROSS_ENCODER_PREFIX)).expanduser()
        # A relative path would depend on the directory each server or worker starts in.
        if path.is_absolute():
            return CrossEncoderReranker(path)
    raise ValueError(
        f"unknown reranker {spec!r}: use {IDENTITY_SPEC!r} or "
        f"'{CROSS_ENCODER_PREFIX}/absolute/path/to/a/cross-encoder/directory'"
    )


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")


def _order_by_score(scores: npt.NDArray[np.float32]) -> list[int]:
    # NaN (a half-precision overflow) has no place in a sort; it ranks last. A stable sort of
    # the negated scores keeps ties in retrieval order.
    keys = -np.nan_to_num(scores.astype(np.float64), nan=-np.inf)
    return [int(index) for index in np.argsort(keys, kind="stable")]


def _check_model_dir(path: Path) -> None:
    """Refuse, before the slow import, what is no cross-encoder directory.

    sentence-transformers loads an embedding model (or a bare encoder) as a CrossEncoder
    with a freshly initialised, untrained scoring head and only logs a warning: its order
    would be noise, so such a directory is refused here.
    """
    if not path.is_dir():
        raise ValueError(f"cross-encoder directory {path} does not exist or is not a directory")
    config = _read_json(path / "config.json")
    if (path / "modules.json").is_file():
        st_config_path = path / "config_sentence_transformers.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
        # sentence-transformers' own default when the file or the key is missing.
        model_type = st_config.get("model_type", "SentenceTransformer")
        if model_type != "CrossEncoder":
            raise ValueError(
                f"{path} holds a {model_type} model (an embedding model?), not a CrossEncoder"
            )
        return
    architectures = config.get("architectures") or []
    if not any(
        str(name).endswith(("ForSequenceClassification", "ForCausalLM")) for name in architectures
    ):
        raise ValueError(
            f"{path} is not a cross-encoder: config.json names no sequence-classification "
            f"architecture (architectures: {architectures})"
        )


def _read_json(path: Path) -> dict[str, Any]:  # Any: JSON values
    if not path.is_file():
        raise ValueError(f"{path.parent} is not a model directory: {path.name} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _load_cross_encoder(path: Path, device: str, max_length: int | None) -> tuple[Any, Any]:
    """The CrossEncoder in ``path`` and an identity activation for its raw scores.

    Any: sentence-transformers and torch modules, imported here because they are slow to
    import and only a configured cross-encoder needs them.
    """
    # The hub must never be asked, and loading bars are noise in a server's log; both are
    # read when the libraries are imported, so set them first.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from sentence_transformers import CrossEncoder

    started = time.perf_counter()
    try:
        model = CrossEncoder(str(path), device=device, max_length=max_length, local_files_only=True)
    except Exception as exc:  # whatever the libraries raise, this directory cannot be used
        raise ValueError(f"cannot load a CrossEncoder from {path}: {exc}") from exc
    if model.num_labels != 1:
        raise ValueError(
            f"{path} holds a classifier with {model.num_labels} labels; a reranker needs one "
            "relevance score per pair (num_labels=1)"
        )
    log.info(
        "reranker_loaded",
        path=str(path),
        device=str(model.device),
        load_s=round(time.perf_counter() - started, 2),
    )
    return model, torch.nn.Identity()
