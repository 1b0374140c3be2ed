"""``shoal serve`` and ``shoal worker``: the processes of a deployment."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import err, fail, open_session, upgrade_db
from app.settings import Settings, get_settings


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
    upgrade_db(settings)
    bootstrap(settings)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_config=None,  # our JSON logging, configured above
        access_log=False,  # app.metrics logs each request, with its ids and route template
    )


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
        fail("set SHOAL_BROKER_URL: without a broker the server indexes in-process")
    upgrade_db(settings)
    platform = build_platform(settings)
    celery = platform.celery
    if celery is None:  # unreachable: a broker URL always builds the Celery app
        fail("no Celery app was built")
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


def bootstrap(settings: Settings) -> None:
    """Give an empty database its first platform key, printed once."""
    from sqlalchemy.exc import IntegrityError

    from app.services import keys

    with open_session(settings, migrate=False) as session:  # serve migrated just before
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
