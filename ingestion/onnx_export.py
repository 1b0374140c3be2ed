"""A sentence-transformers directory as the ONNX files that ONNX Runtime embeds with.

Done once per model and recipe, offline, at the first load (torch is imported only here), and
kept under the data directory:

1. ``torch.onnx.export`` (the TorchScript exporter: the dynamo one needs ``onnxscript``, one
   more dependency for no gain on a six-layer encoder) of the transformer with mean pooling
   in the graph, dynamic batch and sequence axes, eager attention;
2. for ``int8``, dynamic quantisation of the weights, per output channel. Per-tensor scales
   cost MiniLM up to 0.10 of cosine to fp32 (min 0.90 over SciFact chunks), per-channel 0.01;
   the matrices in :data:`INT8_KEEP_FP32` cost the most and stay in fp32.

ONNX Runtime's own graph optimisations fuse attention, GELU and layer norms when a session
loads the file; its offline BERT fusions (``onnxruntime.transformers.optimizer``) measured no
faster on top of them (bench/RESULTS.md), so the files stay portable between processors.

The files depend only on the model's bytes, this recipe and the library versions, which name
the folder; a file lock lets concurrent processes share one export.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import structlog
from filelock import FileLock

from ingestion.config import OnnxPrecision

log = structlog.get_logger(__name__)

# Bump when a step below changes the files' contents: a new folder is exported beside the old.
# A change to the int8 vectors also needs a new INT8_SUFFIX (ingestion.embedder), so that the
# embedding cache and namespaces keep the old vectors apart from the new.
RECIPE = "1"
# Left in fp32 by the int8 recipe (patterns of node names): the feed-forward output projections
# of the first three layers. Quantised one node at a time, these cost MiniLM the most cosine
# (bench/RESULTS.md); models named otherwise are quantised whole.
INT8_KEEP_FP32: tuple[str, ...] = (r"layer\.[012]/output/dense/MatMul$",)
_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")
_EXPORT_LOCK_TIMEOUT_S = 900


def onnx_file(model_path: Path, precision: OnnxPrecision, *, cache_dir: Path) -> Path:
    """The ONNX file of ``model_path`` at ``precision`` under ``cache_dir``, exported now if
    it is not there yet (another process exporting it is waited for).

    Raises:
        filelock.Timeout: another process held the export lock for 15 minutes.
    """
    folder = export_folder(model_path, cache_dir=cache_dir)
    target = folder / f"{precision}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock"), timeout=_EXPORT_LOCK_TIMEOUT_S):
        if not target.is_file():
            started = time.perf_counter()
            _build(model_path, folder, precision)
            log.info(
                "onnx_model_exported",
                model=str(model_path),
                precision=precision,
                file=str(target),
                export_ms=round((time.perf_counter() - started) * 1000),
            )
    return target


def export_folder(model_path: Path, *, cache_dir: Path) -> Path:
    """The folder of ``model_path``'s files under ``cache_dir``: named by a digest of the
    model's files, the recipe and the libraries that write the graph, so that changing any of
    them exports anew instead of serving stale vectors."""
    return cache_dir / f"{model_path.name}-{_fingerprint(model_path)}"


def _fingerprint(model_path: Path) -> str:
    digest = hashlib.sha256(f"recipe {RECIPE} {INT8_KEEP_FP32}\n".encode())
    for name in _LIBRARIES:
        digest.update(f"{name} {importlib.metadata.version(name)}\n".encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(model_path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _build(model_path: Path, folder: Path, precision: OnnxPrecision) -> None:
    fp32 = folder / "fp32.onnx"
    if not fp32.is_file():
        written = folder / "fp32.onnx.tmp"
        _export(model_path, written)
        _publish(written, fp32)
    if precision == "int8":
        _quantize(fp32, folder / "int8.onnx")


def _publish(written: Path, target: Path) -> None:
    # Readers test for the final name without the lock: it must appear complete or not at all.
    os.replace(written, target)


def _export(model_path: Path, out: Path) -> None:
    # As for the torch backend: never ask the hub, no loading bar in a server's log.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
        """The transformer and sentence-transformers' mean pooling (the mean of the token
        vectors the attention mask keeps), in one graph that returns one row per text."""

        def __init__(self, encoder: Any) -> None:  # Any: a transformers PreTrainedModel
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(input_names, inputs, strict=True))
            hidden = self.encoder(**named).last_hidden_state
            mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return pooled

    # Eager attention: the pattern ONNX Runtime's fusion recognises (SDPA exports differently).
    encoder = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()
    input_names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(encoder.forward).parameters:
        input_names.append("token_type_ids")
    example = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches in transformers' mask code that it freezes;
        # each is constant for a mask as long as the input, which is all this graph is given
        # (the tests compare its vectors with torch's at several batch sizes and lengths).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled(encoder),
            example,
            str(out),
            dynamo=False,
            input_names=input_names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
        )


def _quantize(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    written = out.with_suffix(".onnx.tmp")
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_dynamic(
            str(fp32),
            str(written),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=_int8_nodes(graph),
        )
    finally:
        root.removeFilter(_no_preprocessing_advice)
    _publish(written, out)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    # The quantiser advises shape inference first (for static quantisation of convolutions);
    # the weights of these MatMuls have their shapes, and the advice would read as a fault in a
    # server's log.
    return "pre-processing before quantization" not in record.getMessage()


def _int8_nodes(graph: Any) -> list[str]:  # Any: an onnx GraphProto
    """The matrix products by a weight to quantise: all but those kept in fp32.

    Products of two activations (attention scores) stay in fp32: their scales would change
    with every input, for little work saved.
    """
    weights = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and any(name in weights for name in node.input)
        and not any(re.search(keep, node.name) for keep in INT8_KEEP_FP32)
    ]
