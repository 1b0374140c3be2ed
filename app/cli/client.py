"""``shoal ingest`` and ``shoal query``: client commands, over HTTP to ``SHOAL_URL`` with
``SHOAL_API_KEY``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import JsonOpt, KeyOpt, UrlOpt, err, need_key, out


def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
    batch_size: Annotated[int, typer.Option(min=1, max=1000)] = 32,
    wait: Annotated[bool, typer.Option(help="Follow the jobs until they finish.")] = True,
) -> None:
    """Upload files (folders are walked) and follow their jobs; exit 1 if any document failed."""
    from app.client import ingest_paths

    code = ingest_paths(
        paths,
        namespace=namespace,
        url=url,
        api_key=need_key(api_key),
        batch_size=batch_size,
        wait=wait,
        console=err,
    )
    raise typer.Exit(code)


def query(
    question: str,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
    top_k: Annotated[int | None, typer.Option(min=1, max=50)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a question; prints the answer and its citations."""
    from app.client import ask

    answer = ask(question, namespace=namespace, url=url, api_key=need_key(api_key), top_k=top_k)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out.print(answer["answer"])
    for i, c in enumerate(answer["citations"], start=1):
        source = c.get("filename") or c["document_id"]
        out.print(f"[{i}] {source} (chunk {c['chunk_id']}, score {c['score']:.3f})")
