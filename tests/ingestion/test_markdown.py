"""Markdown keeps its source as text; headings become nested sections with exact offsets."""

from __future__ import annotations

from ingestion.document import ParsedDocument, Section
from ingestion.parsers import parse

GUIDE = """\
Preamble before any heading.

# Shoal guide

Intro paragraph.

## Install *quickly*

Run `make install`.

### From `source`

Clone it.

## Use

Setext heading below.

Configure
---------

Set the variables.

```markdown
# Not a heading, just code
```

> # Quoted, not structure

Appendix
========

The end.
"""


def parse_md(source: str) -> ParsedDocument:
    return parse(source.encode(), media_type="text/markdown", filename="guide.md")


def heading_line(doc: ParsedDocument, section: Section) -> str:
    return doc.text[section.start :].split("\n", 1)[0]


def test_text_is_the_markdown_source() -> None:
    doc = parse_md(GUIDE)
    assert doc.text == GUIDE
    assert doc.media_type == "text/markdown"


def test_sections_nest_under_their_enclosing_headings() -> None:
    doc = parse_md(GUIDE)
    assert [s.path for s in doc.sections] == [
        ("Shoal guide",),
        ("Shoal guide", "Install quickly"),
        ("Shoal guide", "Install quickly", "From source"),
        ("Shoal guide", "Use"),
        ("Shoal guide", "Configure"),
        ("Appendix",),
    ]


def test_each_section_starts_at_its_heading_line() -> None:
    doc = parse_md(GUIDE)
    assert [heading_line(doc, s) for s in doc.sections] == [
        "# Shoal guide",
        "## Install *quickly*",
        "### From `source`",
        "## Use",
        "Configure",
        "Appendix",
    ]


def test_a_section_ends_at_the_next_heading_of_the_same_or_higher_level() -> None:
    doc = parse_md(GUIDE)
    guide, install, source, use, configure, appendix = doc.sections
    assert guide.end == appendix.start
    assert install.end == use.start
    assert source.end == use.start
    assert use.end == configure.start
    assert configure.end == appendix.start
    assert appendix.end == len(doc.text)
    assert doc.text[install.start : install.end].endswith("Clone it.\n\n")


def test_headings_in_code_fences_and_block_quotes_are_not_sections() -> None:
    paths = [s.path[-1] for s in parse_md(GUIDE).sections]
    assert not any("Not a heading" in p or "Quoted" in p for p in paths)


def test_title_is_the_first_level_one_heading() -> None:
    assert parse_md(GUIDE).title == "Shoal guide"
    assert parse_md("## Only a subheading\n\n# Real title\n").title == "Real title"


def test_without_a_level_one_heading_there_is_no_title() -> None:
    assert parse_md("## Sub\n\ntext\n").title is None
    assert parse_md("no headings at all\n").sections == ()


def test_offsets_index_the_normalised_text_of_a_crlf_file() -> None:
    doc = parse(GUIDE.replace("\n", "\r\n").encode(), media_type="text/markdown")
    assert doc.text == GUIDE
    assert heading_line(doc, doc.sections[2]) == "### From `source`"


def test_empty_headings_are_ignored() -> None:
    doc = parse_md("# Title\n\n#\n\ntext\n")
    assert [s.path for s in doc.sections] == [("Title",)]
