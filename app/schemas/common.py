"""What every body shares: names, field types, scopes, and refusing unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$"),
    Field(description="Lower-case letters, digits, `-` and `_`; 1-63 characters."),
]
FieldType = Literal["keyword", "integer", "float", "bool", "datetime"]
Scope = Literal["admin", "write", "query"]


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")
