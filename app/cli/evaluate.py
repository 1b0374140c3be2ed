"""``shoal eval``: retrieval quality on a BEIR corpus, through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import JsonOpt, err, fail, out, upgrade_db
from app.settings import get_settings


def eval_beir(
    beir_dir: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="A BEIR-format folder.")
    ],
    split: Annotated[str, typer.Option(help="The qrels file to score: qrels/SPLIT.tsv.")] = "test",
    mode: Annotated[
        str | None, typer.Option(help="dense, lexical or hybrid (default: SHOAL_RETRIEVAL__MODE).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the scratch data here and reuse it (default: a temporary one)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a BEIR corpus into a scratch namespace through the real pipeline and print
    nDCG@10, recall@100 and MRR@10, on all queries and on each half (fit: even ids, report: odd
    ids), beside the raw references on the same chunks (JSON on the last line of stdout with
    --json)."""
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from app.errors import NotFoundError
    from app.logging import configure_logging
    from app.platform import build_platform
    from app.services import evaluation, tenants
    from app.services.keys import TenantAccess
    from app.services.namespaces import get_namespace
    from retrieval.config import SEARCH_MODES

    if mode is not None and mode not in SEARCH_MODES:
        fail(f"--mode must be one of {', '.join(SEARCH_MODES)}")
    try:
        data = evaluation.load_beir(beir_dir, split)
    except ValueError as exc:
        fail(str(exc))
        return
    settings = get_settings()
    configure_logging("WARNING")
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="shoal-eval-")
        data_dir = Path(scratch.name)
    # A scratch database and store unless the deployment names its own services.
    settings = settings.model_copy(update={"data_dir": data_dir})
    upgrade_db(settings)
    platform = build_platform(settings)
    name = "eval-" + "".join(c if c.isalnum() else "-" for c in beir_dir.resolve().name)[:58]
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    try:
        try:
            with platform.sessions() as session:
                tenant = next((t for t in tenants.list_tenants(session) if t.name == "eval"), None)
                if tenant is None:
                    tenant = tenants.create_tenant(session, name="eval", quotas={})
                tenant_id = tenant.id
                try:
                    namespace = get_namespace(session, access=TenantAccess(tenant_id), name=name)
                    session.expunge(namespace)
                except NotFoundError:  # the first run on this data directory
                    namespace = None
            reused = namespace is not None
            if namespace is None:
                namespace = evaluation.scratch_namespace(platform, tenant_id, name)
                err.print(f"indexing {data.corpus} into namespace {name} under {data_dir}")
            else:
                err.print(f"reusing namespace {name} under {data_dir}: nothing to index")
            with progress:
                if not reused:
                    task = progress.add_task("indexing", total=None)
                    indexed, failed = evaluation.ingest_corpus(
                        platform,
                        namespace,
                        data.corpus,
                        on_progress=lambda done, total: progress.update(
                            task, completed=done, total=total
                        ),
                    )
                    if failed:
                        err.print(
                            f"{failed} documents failed to index; scoring the {indexed} others"
                        )
                asking = progress.add_task("querying", total=len(data.queries))
                report = evaluation.evaluate(
                    platform,
                    namespace,
                    data,
                    overrides={"mode": mode},
                    on_query=lambda: progress.advance(asking),
                )
            documents_of = evaluation.corpus_ids(platform, namespace)
        finally:
            platform.close()
        # After close: the references load the shard the store held, and Edge allows one
        # handle per shard. Opening it themselves keeps Shoal's store code out of them.
        err.print("scoring the raw references on the same chunks")
        report["references"] = evaluation.references(
            settings, namespace, data, documents_of, platform.embedder
        )
        report = {"dataset": beir_dir.resolve().name, "split": split, **report}
        if as_json:
            typer.echo(json.dumps(report))
        else:
            _print_eval(report)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _print_eval(report: dict[str, Any]) -> None:
    """``shoal eval``'s report as a table: each search on all queries and on each half."""
    from rich.table import Table

    search = report.get("search") or {}
    fusion = f", {search.get('fusion')}" if search.get("mode") == "hybrid" else ""
    halves = report["halves"]
    out.print(
        f"{report['dataset']} ({report['split']}): {report['queries']} queries; "
        f"fit = {halves['fit']['queries']} even ids, report = {halves['report']['queries']} odd "
        f"ids; Shoal {report['query_ms_mean']} ms a query"
    )
    table = Table("search", "queries", "nDCG@10", "recall@100", "MRR@10")
    rows = [(f"Shoal ({search.get('mode', '?')}{fusion})", report)]
    references = report["references"]
    labels = {"dense_exact": "raw dense, exact cosine", "edge_hybrid_rrf": "raw Edge hybrid, RRF"}
    if "unavailable" not in references:
        rows += [(label, references[name]) for name, label in labels.items()]
    for label, scores in rows:
        for part, figures in (("all", scores), *scores["halves"].items()):
            table.add_row(
                label if part == "all" else "",
                f"{part} ({figures['queries']})",
                *(f"{figures[m]:.4f}" for m in ("ndcg@10", "recall@100", "mrr@10")),
            )
    out.print(table)
    if "unavailable" in references:
        out.print(f"raw references: not available: {references['unavailable']}")
        return
    for name, label in labels.items():
        out.print(f"{label}: {references[name]['method']}")
