"""Where the tests find SciFact, the development data set (BEIR format).

It is not in the repository: the project's shared folder sits beside the clone
(``../shared/data/scifact``), as on developers' machines and in CI. ``SHOAL_SCIFACT_DIR``
points elsewhere. A test that needs it and finds none fails saying so (no skip).
"""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = [
    Path(os.environ["SHOAL_SCIFACT_DIR"]) if os.environ.get("SHOAL_SCIFACT_DIR") else None,
    Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact",
    Path("/work/shared/data/scifact"),
]

SCIFACT = next(
    (p for p in _CANDIDATES if p is not None and (p / "corpus.jsonl").is_file()),
    Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact",
)
