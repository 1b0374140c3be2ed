"""HTML and XHTML: the page's main content as text, its headings as sections.

selectolax (the Lexbor engine) builds the tree a browser would, entities decoded. What a reader
never sees as prose is dropped: scripts, styles, templates, embedded SVG and frames; and what
surrounds the content on every page of a site: navigation, headers, footers, asides, forms.
When the page marks its content with ``<main>`` (or, failing that, ``<article>``), only that is
kept.
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ingestion.document import ParsedDocument
from ingestion.parsers.layout import (
    CELL,
    LINE,
    PARAGRAPH,
    TextBuilder,
    collapse_whitespace,
    nest_sections,
)

MEDIA_TYPE = "text/html"

_DROPPED = frozenset(
    {
        # never prose
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "audio",
        "video",
        # the site around the content, and controls
        "nav",
        "header",
        "footer",
        "aside",
        "form",
        "button",
        "select",
        "textarea",
        "dialog",
    }
)
# Separator before and after each block element: a blank line between what a browser spaces
# as paragraphs, a newline between lines of one block (list items, table rows, divs).
_PARAGRAPH_BLOCKS = (
    "address",
    "article",
    "blockquote",
    "body",
    "center",
    "details",
    "dl",
    "fieldset",
    "figure",
    "hgroup",
    "hr",
    "main",
    "ol",
    "p",
    "section",
    "table",
    "ul",
)
_LINE_BLOCKS = ("br", "caption", "dd", "div", "dt", "figcaption", "legend", "li", "summary", "tr")
_BLOCKS = {
    **dict.fromkeys(_PARAGRAPH_BLOCKS, PARAGRAPH),
    **dict.fromkeys(_LINE_BLOCKS, LINE),
    **dict.fromkeys(("td", "th"), CELL),
}
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


def parse_html(data: bytes) -> ParsedDocument:
    """Parse an HTML (or XHTML) page into its main content's text, title and sections.

    The encoding is the page's own (byte-order mark, ``<meta charset>``), else UTF-8, else
    windows-1252 as in browsers.
    Kept: ``<main>`` if the page has one, else its top-level ``<article>`` elements, else the
    body; in all cases without the dropped elements (script, style, noscript, template, svg,
    iframe, nav, header, footer, aside, form and a few more) and without ``hidden`` ones.
    Blocks are separated by blank lines (paragraphs, lists, tables) or newlines (list items,
    rows, divs, ``<br>``); table cells by `` | ``; inline text keeps one space where the source
    had any whitespace; ``<pre>`` keeps its lines. Headings ``h1`` to ``h6`` become sections
    nested as in Markdown. The title is ``<title>``, else the first ``h1``.

    Never raises: any bytes are some HTML, however poor; :func:`ingestion.parsers.parse`
    refuses a page without text.
    """
    tree = LexborHTMLParser(data, encoding=True)
    if tree.raw_html == data and not _is_utf8(data):
        # Lexbor found no declaration and read the bytes as UTF-8, replacing what is not.
        # Browsers fall back on windows-1252 here (the HTML Standard's default for most
        # locales); charset-normalizer, which text files use, is misled by the markup. The
        # five bytes cp1252 leaves undefined are C1 controls to WHATWG, which normalising
        # would remove anyway.
        tree = LexborHTMLParser(data.decode("cp1252", errors="ignore"))
    builder = TextBuilder()
    for root in _content_roots(tree):
        _write_tree(root, builder)
    text, headings = builder.build()
    title = _title(tree) or next((h.title for h in headings if h.level == 1), None)
    return ParsedDocument(
        text=text,
        media_type=MEDIA_TYPE,
        title=title,
        sections=nest_sections(headings, len(text)),
    )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _title(tree: LexborHTMLParser) -> str | None:
    # In the head only: an <svg> in the body has <title> elements of its own.
    title = tree.head.css_first("title") if tree.head is not None else None
    if title is None:
        return None
    return collapse_whitespace(title.text()) or None


def _content_roots(tree: LexborHTMLParser) -> list[LexborNode]:
    """``<main>``, else the top-level ``<article>`` elements, else the body.

    One inside a dropped element (an ``<article>`` in an ``<aside>`` of related links) does
    not count.
    """
    for main in tree.css("main"):
        if _is_shown(main, within=()):
            return [main]
    articles = [a for a in tree.css("article") if _is_shown(a, within=("article",))]
    if articles:
        return articles
    body = tree.body if tree.body is not None else tree.root
    return [body] if body is not None else []


def _is_shown(node: LexborNode, *, within: tuple[str, ...]) -> bool:
    """Whether neither ``node`` nor an ancestor is dropped or hidden, nor a tag in ``within``."""
    if _is_dropped(node):
        return False
    ancestor = node.parent
    while ancestor is not None:
        if ancestor.is_element_node and (_is_dropped(ancestor) or ancestor.tag in within):
            return False
        ancestor = ancestor.parent
    return True


def _is_dropped(node: LexborNode) -> bool:
    return node.tag in _DROPPED or "hidden" in node.attrs


def _write_tree(root: LexborNode, builder: TextBuilder) -> None:
    """Write the text under ``root`` in document order.

    Iterative, not recursive: a page may nest elements thousands deep.
    """
    stack: list[tuple[LexborNode, bool]] = [(root, True)]
    preformatted: list[str] | None = None  # text of the <pre> being read, if inside one
    pre_depth = 0
    while stack:
        node, entering = stack.pop()
        tag = node.tag or ""
        if not entering:
            if tag == "pre":
                pre_depth -= 1
                if pre_depth == 0 and preformatted is not None:
                    builder.write_verbatim("".join(preformatted))
                    preformatted = None
            elif preformatted is not None:
                pass  # inside <pre>, only text and line breaks count
            elif tag in _HEADINGS:
                builder.end_heading()
            elif tag in _BLOCKS:
                builder.separate(_BLOCKS[tag])
            continue
        if node.is_text_node:
            content = node.text_content or ""
            if preformatted is not None:
                preformatted.append(content)
            else:
                builder.write(content)
            continue
        if not node.is_element_node or _is_dropped(node):
            continue  # comments, doctypes; and what is no content
        if tag == "pre":
            pre_depth += 1
            preformatted = preformatted if preformatted is not None else []
        elif preformatted is not None:
            if tag == "br":
                preformatted.append("\n")
        elif tag in _HEADINGS:
            builder.start_heading(_HEADINGS[tag])
        elif tag in _BLOCKS:
            builder.separate(_BLOCKS[tag])
        stack.append((node, False))
        stack.extend((child, True) for child in reversed(list(node.iter(include_text=True))))
