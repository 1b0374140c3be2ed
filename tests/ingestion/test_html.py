"""HTML: the main content's text, headings as sections, and nothing a reader never sees."""

from __future__ import annotations

import html

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.document import ParsedDocument, Section
from ingestion.errors import ParseError
from ingestion.parsers import HTML, XHTML, parse
from ingestion.parsers.html import parse_html as read_html

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Caring for Sourdough &amp; Starters | The Bread Blog</title>
  <style>body { font-family: serif; } .zanzibarstyle { color: red }</style>
  <script>window.trackingPixel = "glorbnakket"; console.log("loaded");</script>
</head>
<body>
  <header><a href="/">The Bread Blog</a> <p>Baking since 2009</p></header>
  <nav><ul><li><a href="/recipes">Recipes</a></li><li><a href="/about">About</a></li></ul></nav>
  <main>
    <article>
      <h1>Caring for a <em>sourdough</em> starter</h1>
      <p>A starter is a culture of wild yeast   and lactobacilli.
         Feed it <strong>flour</strong> and water daily&nbsp;&mdash; or weekly if refrigerated.</p>
      <h2>Feeding</h2>
      <p>Discard half, then add equal weights of flour&nbsp;and water.</p>
      <ul><li>50 g starter</li><li>50 g flour</li><li>50 g water</li></ul>
      <h3>Ratios</h3>
      <table>
        <tr><th>Ratio</th><th>Peak after</th></tr>
        <tr><td>1:1:1</td><td>4 hours</td></tr>
        <tr><td>1:5:5</td><td>12 hours</td></tr>
      </table>
      <h2>Troubleshooting</h2>
      <p>Hooch on top means it is hungry.<br>Stir it back in.</p>
      <pre>
temp = 24  # degrees
  feed(starter)</pre>
      <noscript>Enable JavaScript to see comments.</noscript>
      <form><label>Email <input name="email"></label><button>Subscribe</button></form>
      <template><p>templated quixotry</p></template>
      <svg><title>icon</title><text>vectorwords</text></svg>
      <p hidden>hidden paragraph</p>
    </article>
  </main>
  <aside><h2>Related</h2><p>Rye breads</p></aside>
  <footer>&copy; 2024 The Bread Blog</footer>
  <script src="/app.js"></script>
  <script>document.write("flumptastic");</script>
</body>
</html>
"""


def parse_html(source: str | bytes, media_type: str = HTML) -> ParsedDocument:
    data = source.encode() if isinstance(source, str) else source
    return parse(data, media_type=media_type, filename="page.html")


def section_text(doc: ParsedDocument, section: Section) -> str:
    return doc.text[section.start : section.end]


def test_main_content_is_kept_as_readable_text() -> None:
    doc = parse_html(PAGE)
    assert doc.media_type == HTML
    assert doc.text == (
        "Caring for a sourdough starter\n\n"
        "A starter is a culture of wild yeast and lactobacilli. Feed it flour and water daily "
        "\u2014 or weekly if refrigerated.\n\n"
        "Feeding\n\n"
        "Discard half, then add equal weights of flour and water.\n\n"
        "50 g starter\n50 g flour\n50 g water\n\n"
        "Ratios\n\n"
        "Ratio | Peak after\n1:1:1 | 4 hours\n1:5:5 | 12 hours\n\n"
        "Troubleshooting\n\n"
        "Hooch on top means it is hungry.\nStir it back in.\n\n"
        "temp = 24  # degrees\n  feed(starter)"
    )


@pytest.mark.parametrize(
    "word",
    [
        "glorbnakket",  # script in the head
        "flumptastic",  # script in the body
        "zanzibarstyle",  # style
        "JavaScript",  # noscript
        "Subscribe",  # form
        "quixotry",  # template
        "vectorwords",  # svg
        "hidden paragraph",
        "Recipes",  # nav
        "Baking since",  # header
        "Rye breads",  # aside
        "2024",  # footer
    ],
)
def test_what_a_reader_never_sees_as_content_is_dropped(word: str) -> None:
    assert word not in parse_html(PAGE).text


def test_title_is_the_title_element_entities_decoded() -> None:
    assert parse_html(PAGE).title == "Caring for Sourdough & Starters | The Bread Blog"


def test_without_a_title_element_the_first_h1_is_the_title() -> None:
    doc = parse_html("<body><h2>Sub</h2><h1>The <b>real</b> title</h1><p>x</p></body>")
    assert doc.title == "The real title"
    assert parse_html("<p>no headings</p>").title is None


def test_headings_become_nested_sections_starting_at_their_text() -> None:
    doc = parse_html(PAGE)
    assert [s.path for s in doc.sections] == [
        ("Caring for a sourdough starter",),
        ("Caring for a sourdough starter", "Feeding"),
        ("Caring for a sourdough starter", "Feeding", "Ratios"),
        ("Caring for a sourdough starter", "Troubleshooting"),
    ]
    top, feeding, ratios, trouble = doc.sections
    assert section_text(doc, feeding).startswith("Feeding\n\nDiscard half")
    assert feeding.end == trouble.start
    assert ratios.end == trouble.start
    assert top.end == trouble.end == len(doc.text)


def test_only_main_is_kept_when_the_page_has_one() -> None:
    doc = parse_html("<body><p>Cookie banner</p><main><p>The content.</p></main><p>More</p>")
    assert doc.text == "The content."


def test_without_main_the_top_level_articles_are_kept() -> None:
    doc = parse_html(
        "<body><p>Site intro</p><article><p>First post.</p><article><p>A quoted post.</p>"
        "</article></article><div><article><p>Second post.</p></article></div></body>"
    )
    assert doc.text == "First post.\n\nA quoted post.\n\nSecond post."


def test_an_article_in_an_aside_is_not_the_main_content() -> None:
    doc = parse_html("<body><p>The page itself.</p><aside><article>Related</article></aside>")
    assert doc.text == "The page itself."


def test_inline_elements_join_without_spaces_the_source_did_not_have() -> None:
    doc = parse_html("<p>un<b>believ</b><i>able</i>, <a href='#'>link</a>!</p>")
    assert doc.text == "unbelievable, link!"


def test_entities_are_decoded() -> None:
    doc = parse_html("<p>caf&eacute; &lt;tag&gt; &amp; &#8364;5 &#x1F600;</p>")
    assert doc.text == "caf\u00e9 <tag> & \u20ac5 \U0001f600"


def test_the_declared_encoding_is_honoured() -> None:
    source = '<meta charset="windows-1251"><p>\u041f\u0440\u0438\u0432\u0435\u0442</p>'
    assert parse_html(source.encode("cp1251")).text == "\u041f\u0440\u0438\u0432\u0435\u0442"


def test_undeclared_bytes_that_are_not_utf8_are_read_as_windows_1252() -> None:
    source = "<p>na\u00efve d\u00e9j\u00e0 vu \u2014 \u201cquoted\u201d</p>"
    assert (
        parse_html(source.encode("cp1252")).text
        == "na\u00efve d\u00e9j\u00e0 vu \u2014 \u201cquoted\u201d"
    )


def test_xhtml_is_read_by_the_same_parser() -> None:
    source = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>X</title></head>'
        "<body><h1>Chapter</h1><p>Body text.</p></body></html>"
    )
    doc = parse_html(source, media_type=XHTML)
    assert doc.text == "Chapter\n\nBody text."
    assert doc.title == "X"


def test_deeply_nested_markup_is_read_without_recursion() -> None:
    doc = parse_html("<div>" * 20_000 + "deep" + "</div>" * 20_000)
    assert doc.text == "deep"


def test_a_page_with_no_visible_text_is_refused() -> None:
    with pytest.raises(ParseError, match="no text"):
        parse_html("<html><head><script>var x = 1;</script></head><body> </body></html>")


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
tags = st.sampled_from(["p", "div", "span", "b", "li", "td", "h2", "h3", "section", "em"])


@st.composite
def fragments(draw: st.DrawFn, depth: int = 0) -> tuple[str, list[str]]:
    """Random markup and the words it shows, in order."""
    parts: list[str] = []
    shown: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["word", "element", "script"] if depth < 3 else ["word"]))
        if kind == "word":
            word = draw(words)
            parts.append(f" {html.escape(word)} ")
            shown.append(word)
        elif kind == "script":
            parts.append("<script>var SECRETWORD = 1;</script>")
        else:
            tag = draw(tags)
            inner, inner_shown = draw(fragments(depth + 1))
            parts.append(f"<{tag}>{inner}</{tag}>")
            shown += inner_shown
    return "".join(parts), shown


@given(fragments())
def test_every_shown_word_is_kept_in_order_and_script_text_never(
    fragment: tuple[str, list[str]],
) -> None:
    markup, shown = fragment
    doc = read_html(f"<body>{markup}</body>".encode())  # no text is allowed here
    assert doc.text.split() == shown
    assert "SECRETWORD" not in doc.text
    assert doc.text == doc.text.strip()
    assert "\n\n\n" not in doc.text
    for section in doc.sections:  # a heading may hold blocks: its title is on one line
        assert " ".join(doc.text[section.start :].split()).startswith(section.path[-1])
