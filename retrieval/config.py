"""Configuration models of the read path; ``app.settings.Settings`` composes them."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class VectorStoreConfig(BaseModel):
    """Which vector engine holds the collections; :func:`retrieval.stores.make_store` reads it."""

    url: str | None = Field(
        None,
        description=(
            "Qdrant server URL, e.g. `http://qdrant:6333`. Unset: embedded Qdrant Edge under "
            "the data directory (one process owns it)."
        ),
    )
    api_key: SecretStr | None = Field(
        None, description="API key of the Qdrant server; ignored by the embedded store."
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        description="Timeout of each call to the Qdrant server, in seconds (rounded up).",
    )
