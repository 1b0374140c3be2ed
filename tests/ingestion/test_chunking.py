"""Chunking: exact offsets, order, coverage and the model's limit, for any text."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.chunking import chunk
from ingestion.document import Chunk, Page, ParsedDocument
from ingestion.normalise import normalise_text
from ingestion.parsers import PDF, parse
from tests.ingestion.conftest import CountTokens
from tests.ingestion.samples import make_pdf


def count_words(text: str) -> int:
    return len(text.split())


def count_words_and_specials(text: str) -> int:
    return len(text.split()) + 2


def count_characters(text: str) -> int:
    """Spaces count too, so a chunk costs more than its words: estimates must be re-checked."""
    return len(text) + 2


SIMPLE_COUNTERS = [count_words, count_words_and_specials, count_characters]

pieces = st.one_of(
    st.text(max_size=40),  # any Unicode: accents, combining marks, controls, RTL, ...
    st.sampled_from([" ", "\n", "\n\n", "\n\n\n\n\n", "\t", ". ", "! ", "\u3002", "\n# Heading\n"]),
    st.text(alphabet="\u4f60\u597d\u4e16\u754c\u4e2d\u6587\u5b57\u3002\uff1f", max_size=400),
    st.text(alphabet="\U0001f600\U0001f389\U0001f44d\U0001f3fd\u200d", max_size=50),
    st.text(alphabet="abcdefghij", min_size=100, max_size=1500),  # a long run without spaces
    st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta."]), max_size=60).map(" ".join),
)
texts = st.lists(pieces, max_size=25).map("".join)


@st.composite
def documents(draw: st.DrawFn) -> ParsedDocument:
    text = draw(texts)
    if draw(st.booleans()):
        return ParsedDocument(text=text, media_type="text/plain")  # raw, not even normalised
    return parse_markdown_or_empty(text)


def parse_markdown_or_empty(text: str) -> ParsedDocument:
    if not normalise_text(text).strip():
        return ParsedDocument(text=text, media_type="text/markdown")  # parse would refuse it
    return parse(text.encode(), media_type="text/markdown")


def limits(min_max_tokens: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.integers(min_max_tokens, 80).flatmap(
        lambda m: st.tuples(st.just(m), st.integers(0, m - 1))
    )


def assert_chunk_contract(
    doc: ParsedDocument, chunks: list[Chunk], max_tokens: int, count: CountTokens
) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    covered = 0
    for previous, current in zip([None, *chunks], chunks, strict=False):
        assert doc.text[current.start : current.end] == current.text
        assert current.text == current.text.strip() != ""
        assert count(current.text) == current.token_count <= max_tokens
        assert doc.text[covered : current.start].strip() == "", "non-whitespace left out"
        covered = max(covered, current.end)
        if previous is not None:
            assert current.start > previous.start, "starts strictly increase"
            assert current.end > previous.end, "overlap never stalls progress"
    assert doc.text[covered:].strip() == ""
    assert bool(chunks) == bool(doc.text.strip())


def innermost_section(doc: ParsedDocument, offset: int) -> str | None:
    containing = [s for s in doc.sections if s.start <= offset < s.end]
    return " > ".join(max(containing, key=lambda s: len(s.path)).path) if containing else None


@pytest.mark.parametrize("count", SIMPLE_COUNTERS)
@given(doc=documents(), limit=limits(3))
def test_chunks_keep_the_contract_with_simple_counters(
    count: CountTokens, doc: ParsedDocument, limit: tuple[int, int]
) -> None:
    max_tokens, overlap_tokens = limit
    chunks = chunk(doc, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count)
    assert_chunk_contract(doc, chunks, max_tokens, count)


@given(doc=documents(), limit=limits(3))
def test_chunks_keep_the_contract_with_the_minilm_tokenizer(
    minilm_count: CountTokens, doc: ParsedDocument, limit: tuple[int, int]
) -> None:
    max_tokens, overlap_tokens = limit
    chunks = chunk(
        doc, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=minilm_count
    )
    assert_chunk_contract(doc, chunks, max_tokens, minilm_count)


@given(doc=documents(), limit=limits(1))
def test_overlap_stays_within_its_budget(doc: ParsedDocument, limit: tuple[int, int]) -> None:
    max_tokens, overlap_tokens = limit
    chunks = chunk(
        doc, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count_words
    )
    for previous, current in itertools.pairwise(chunks):
        assert count_words(doc.text[current.start : previous.end]) <= overlap_tokens


@given(doc=documents())
def test_a_chunk_is_labelled_with_the_innermost_section_at_its_start(doc: ParsedDocument) -> None:
    chunks = chunk(doc, max_tokens=24, overlap_tokens=6, count_tokens=count_words)
    for c in chunks:
        assert c.section == innermost_section(doc, c.start)


@st.composite
def paged_documents(draw: st.DrawFn) -> ParsedDocument:
    """Documents as the PDF parser makes them: stripped page texts joined by blank lines."""
    pages_text = [normalise_text(t).strip() for t in draw(st.lists(texts, min_size=1, max_size=6))]
    pages, offset = [], 0
    for number, text in enumerate(pages_text, start=1):
        pages.append(Page(number, offset, offset + len(text)))
        offset += len(text) + 2
    return ParsedDocument(text="\n\n".join(pages_text), media_type=PDF, pages=tuple(pages))


@given(doc=paged_documents())
def test_a_chunk_carries_the_number_of_the_page_it_starts_on(doc: ParsedDocument) -> None:
    chunks = chunk(doc, max_tokens=24, overlap_tokens=6, count_tokens=count_words)
    for c in chunks:
        (page,) = [p for p in doc.pages if p.start <= c.start < p.end]
        assert c.page == page.number


def test_chunks_of_a_pdf_name_their_pages_and_others_none() -> None:
    pages = ["First page words. " * 8, "", "Third page words. " * 8]
    doc = parse(make_pdf(pages), media_type=PDF)
    chunks = chunk(doc, max_tokens=20, overlap_tokens=0, count_tokens=count_words)
    assert {c.page for c in chunks} == {1, 3}
    assert all(c.text.startswith("First") == (c.page == 1) for c in chunks)
    plain = chunk(
        parse(b"no pages", media_type="text/plain"),
        max_tokens=20,
        overlap_tokens=0,
        count_tokens=count_words,
    )
    assert [c.page for c in plain] == [None]


MANUAL = """\
# Manual

Welcome to the manual. It explains everything you need to know about the tool.

## Install

Download the archive. Unpack it somewhere sensible. Run the installer and follow the prompts.

### On Linux

Use the package manager of your distribution. The package is called shoal.

## Use

Start the server. Open the browser. Upload a document and ask a question about it.
"""


def test_markdown_chunks_follow_the_sections_and_carry_their_heading_path() -> None:
    doc = parse(MANUAL.encode(), media_type="text/markdown")
    chunks = chunk(doc, max_tokens=24, overlap_tokens=4, count_tokens=count_words)
    assert [(c.text.split("\n", 1)[0], c.section) for c in chunks] == [
        ("# Manual", "Manual"),
        ("## Install", "Manual > Install"),
        ("### On Linux", "Manual > Install > On Linux"),
        ("## Use", "Manual > Use"),
    ]


def test_paragraphs_are_preferred_to_sentences_and_sentences_to_words() -> None:
    paragraph = "One two three. Four five six seven. Eight nine ten eleven twelve"
    doc = ParsedDocument(text=f"{paragraph}\n\n{paragraph}", media_type="text/plain")
    chunks = chunk(doc, max_tokens=20, overlap_tokens=0, count_tokens=count_words)
    assert [c.text for c in chunks] == [paragraph, paragraph]
    chunks = chunk(doc, max_tokens=10, overlap_tokens=0, count_tokens=count_words)
    assert chunks[0].text == "One two three. Four five six seven."


def test_a_long_run_without_spaces_is_cut_at_characters_within_the_limit(
    minilm_count: CountTokens,
) -> None:
    run = "\u4f60\u597d\u4e16\u754c" * 300  # CJK: one token per character, no spaces
    doc = ParsedDocument(text=run, media_type="text/plain")
    chunks = chunk(doc, max_tokens=64, overlap_tokens=8, count_tokens=minilm_count)
    assert len(chunks) > 1
    assert_chunk_contract(doc, chunks, 64, minilm_count)


def test_whitespace_only_text_has_no_chunks() -> None:
    doc = ParsedDocument(text=" \n\n\t ", media_type="text/plain")
    assert chunk(doc, max_tokens=10, overlap_tokens=2, count_tokens=count_words) == []


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(2, 0), (3, 3), (3, 5), (10, -1)])
def test_impossible_limits_are_refused(max_tokens: int, overlap_tokens: int) -> None:
    doc = ParsedDocument(text="some text", media_type="text/plain")
    with pytest.raises(ValueError, match="tokens"):
        chunk(
            doc,
            max_tokens=max_tokens,
            overlap_tokens=overlap_tokens,
            count_tokens=count_words_and_specials,
        )


def test_a_character_the_limit_cannot_hold_is_refused() -> None:
    doc = ParsedDocument(text="ab", media_type="text/plain")
    with pytest.raises(ValueError, match="cannot hold"):
        chunk(doc, max_tokens=3, overlap_tokens=0, count_tokens=lambda t: 3 * len(t) + 2)


def test_the_tokenizer_runs_once_per_distinct_word_plus_a_few_times_per_chunk(
    minilm_count: CountTokens,
) -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible document, not a secret
    vocabulary = [
        "".join(rng.choices("abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(2000)
    ]
    paragraphs: list[str] = []
    while sum(map(len, paragraphs)) < 200_000:
        if rng.random() < 0.05:
            paragraphs.append(f"## {' '.join(rng.choices(vocabulary, k=3))}")
        else:
            sentences = [
                " ".join(rng.choices(vocabulary, k=rng.randint(4, 18))) + "." for _ in range(5)
            ]
            paragraphs.append(" ".join(sentences))
    doc = parse("\n\n".join(paragraphs).encode(), media_type="text/markdown")
    calls = 0

    def counted(text: str) -> int:
        nonlocal calls
        calls += 1
        return minilm_count(text)

    chunks = chunk(doc, max_tokens=256, overlap_tokens=32, count_tokens=counted)
    distinct_atoms = len(set(doc.text.split()))
    assert calls <= distinct_atoms + 1 + 3 * len(chunks)
    assert all(c.token_count <= 256 for c in chunks)
