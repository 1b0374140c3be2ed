"""``shoal``: serve, migrate, administer (on the database directly), and client commands.

Admin commands act on the configured database like a migration tool, so an operator can create
the first tenant before any server runs. Client commands (``ingest``, ``query``) talk HTTP to
``SHOAL_URL`` with ``SHOAL_API_KEY``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from app.settings import Settings, get_settings

app = typer.Typer(help="Shoal: multi-tenant retrieval-augmented generation.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Tenants and keys, on the configured database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
UrlOpt = Annotated[str, typer.Option(envvar="SHOAL_URL", help="Server URL.")]
KeyOpt = Annotated[str, typer.Option(envvar="SHOAL_API_KEY", help="API key.", show_default=False)]


def main() -> None:
    app()


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default SHOAL_API__HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default SHOAL_API__PORT).")] = None,
) -> None:
    """Migrate the database, create the first platform key if there is none, and serve."""
    import uvicorn

    from app.logging import configure_logging
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level)
    _upgrade(settings)
    _bootstrap(settings)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_config=None,  # our JSON logging, configured above
        access_log=False,  # app.metrics logs each request, with its ids and route template
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Threads (default SHOAL_WORKERS__CONCURRENCY).")
    ] = None,
) -> None:
    """Run a Celery indexing worker on SHOAL_BROKER_URL (migrates the database first)."""
    import socket

    from app.logging import configure_logging
    from app.platform import build_platform

    settings = get_settings()
    configure_logging(settings.log_level)
    if not settings.broker_url:
        _fail("set SHOAL_BROKER_URL: without a broker the server indexes in-process")
    _upgrade(settings)
    platform = build_platform(settings)
    celery = platform.celery
    if celery is None:  # unreachable: a broker URL always builds the Celery app
        _fail("no Celery app was built")
        return
    platform.embedder.warm_up()  # load the model before taking the first message
    if settings.workers.metrics_port:
        from prometheus_client import start_http_server

        from app.metrics import register_gpu_metrics, track_queue_depth

        track_queue_depth(settings.workers.queue, platform.queue.depth)
        register_gpu_metrics()
        start_http_server(settings.workers.metrics_port)
    reaper = platform.reaper()
    reaper.start()
    threads = concurrency or settings.workers.concurrency
    try:
        # Threads, not prefork: one process holds one copy of the model (and of the GPU).
        celery.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={threads}",
                f"--queues={settings.workers.queue}",
                f"--hostname=shoal@{socket.gethostname()}",
                f"--loglevel={settings.log_level}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        reaper.stop()
        platform.close()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (idempotent)."""
    _upgrade(get_settings())
    err.print("database at head")


@admin_app.command("create-tenant")
def create_tenant(
    name: str,
    as_json: JsonOpt = False,
    requests_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
    tokens_per_minute: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Create a tenant."""
    from app.services import tenants

    quotas = {
        k: v
        for k, v in {
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
        }.items()
        if v is not None
    }
    with _session() as session:
        tenant = _or_exit(lambda: tenants.create_tenant(session, name=name, quotas=quotas))
        _emit({"id": tenant.id, "name": tenant.name, "quotas": tenant.quotas}, as_json)


@admin_app.command("list-tenants")
def list_tenants(as_json: JsonOpt = False) -> None:
    """List tenants."""
    from app.services import tenants

    with _session() as session:
        rows = [
            {"id": t.id, "name": t.name, "quotas": t.quotas, "created_at": t.created_at.isoformat()}
            for t in tenants.list_tenants(session)
        ]
    _emit(rows, as_json)


@admin_app.command("create-key")
def create_key(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id.")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated: admin,write,query.")] = "",
    platform: Annotated[bool, typer.Option("--platform", help="A platform key.")] = False,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    namespaces: Annotated[
        str | None,
        typer.Option(help="Comma-separated: limit a write or query key to these namespaces."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; the whole key is printed once and never again."""
    from app.services import keys, tenants

    if platform == (tenant is not None):
        _fail("give exactly one of --tenant ID and --platform")
    with _session() as session:
        if tenant is not None:
            _or_exit(lambda: tenants.get_tenant(session, tenant_id=tenant))
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        limited = None if namespaces is None else [n.strip() for n in namespaces.split(",")]
        row, plaintext = _or_exit(
            lambda: keys.create_key(
                session, tenant_id=tenant, name=name, scopes=wanted, namespaces=limited
            )
        )
        session.commit()
        _emit(
            {
                "id": row.id,
                "tenant_id": row.tenant_id,
                "scopes": row.scopes,
                "namespaces": row.namespaces,
                "key": plaintext,
            },
            as_json,
        )


@admin_app.command("revoke-key")
def revoke_key(key_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a key; the next request with it is refused."""
    from app.services import keys

    with _session() as session:
        row = _or_exit(lambda: keys.revoke_key(session, key_id=key_id))
        session.commit()
        revoked = row.revoked_at.isoformat() if row.revoked_at else None
        _emit({"id": row.id, "revoked_at": revoked}, as_json)


@app.command()
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
        api_key=_need_key(api_key),
        batch_size=batch_size,
        wait=wait,
        console=err,
    )
    raise typer.Exit(code)


@app.command()
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

    answer = ask(question, namespace=namespace, url=url, api_key=_need_key(api_key), top_k=top_k)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out.print(answer["answer"])
    for i, c in enumerate(answer["citations"], start=1):
        source = c.get("filename") or c["document_id"]
        out.print(f"[{i}] {source} (chunk {c['chunk_id']}, score {c['score']:.3f})")


@app.command("eval")
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
        _fail(f"--mode must be one of {', '.join(SEARCH_MODES)}")
    try:
        data = evaluation.load_beir(beir_dir, split)
    except ValueError as exc:
        _fail(str(exc))
        return
    settings = get_settings()
    configure_logging("WARNING")
    scratch = None
    if data_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="shoal-eval-")
        data_dir = Path(scratch.name)
    # A scratch database and store unless the deployment names its own services.
    settings = settings.model_copy(update={"data_dir": data_dir})
    _upgrade(settings)
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


def _upgrade(settings: Settings) -> None:
    from app.db.migrate import upgrade

    upgrade(settings.resolved_database_url)


def _bootstrap(settings: Settings) -> None:
    """Give an empty database its first platform key, printed once."""
    from sqlalchemy.exc import IntegrityError

    from app.services import keys

    with _session(settings, migrate=False) as session:  # serve migrated just before
        if keys.has_any_platform_key(session):
            return
        if settings.bootstrap_key is not None:
            try:
                keys.install_key(
                    session, token=settings.bootstrap_key.get_secret_value(), name="bootstrap"
                )
                session.commit()
            except IntegrityError:
                # Replicas started together on an empty database: another one installed the
                # very same key first.
                session.rollback()
                return
            err.print("installed the platform key from SHOAL_BOOTSTRAP_KEY")
            return
        _, plaintext = keys.create_key(session, tenant_id=None, name="bootstrap", scopes=[])
        session.commit()
    # stdout, unbuffered, so `make run | tee` and supervisors keep it; it is never shown again.
    print(f"\nplatform key (shown once, store it now):\n\n    {plaintext}\n", flush=True)  # noqa: T201


def _session(settings: Settings | None = None, *, migrate: bool = True) -> Any:
    from app.db.session import make_engine, make_session_factory

    settings = settings or get_settings()
    if migrate:
        _upgrade(settings)
    return make_session_factory(make_engine(settings.resolved_database_url))()


def _or_exit(action: Any) -> Any:
    from app.errors import ShoalError

    try:
        return action()
    except ShoalError as exc:
        _fail(str(exc))


def _emit(value: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(value, indent=2, default=str))
    else:
        out.print(value)


def _need_key(api_key: str) -> str:
    if not api_key:
        _fail("set SHOAL_API_KEY or pass --api-key")
    return api_key


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
