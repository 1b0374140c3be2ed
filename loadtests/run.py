"""Load test driver: an embedded ``shoal serve`` of its own, locust against it, a report.

    python -m loadtests.run [--users 56] [--duration-s 60] [--warmup-s 30]   # make load
    python -m loadtests.run --users 16,32,48,64                              # a sweep

For each user count: a fresh server in its own process (a new temporary data directory, so
SQLite, Qdrant Edge and the embedding cache start empty; ``SHOAL_BOOTSTRAP_KEY`` set to a key
made here; no rate limit unless ``--quota-rpm``), then ``locust --headless`` in its own process
(locust patches the standard library with gevent: it never shares a process with the server or
with this driver). The locustfile creates the tenants with the platform key, seeds their
namespaces, runs ``--warmup-s`` seconds, resets its statistics and runs ``--duration-s`` more.

Writes ``--report`` (markdown: the sweep and each step's endpoints) and ``--plot`` (PNG:
latency percentiles and requests/s over time, of the best step). Exits 1 when any request
failed other than with a deliberate ``429``, or a step answered no question at all.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx

from harness.servers import free_port, wait_or_exit
from loadtests import report

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", default="56", help="user count, or a comma list to sweep")
    parser.add_argument("--spawn-rate", type=float, default=8.0, help="users started a second")
    parser.add_argument("--warmup-s", type=int, default=30, help="left out of the figures")
    parser.add_argument("--duration-s", type=int, default=60, help="measured, after the warm-up")
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--seed", type=int, default=40, help="abstracts per tenant before start")
    parser.add_argument("--repeat", type=float, default=0.5, help="share of popular questions")
    parser.add_argument("--user-rps", type=float, default=1.0, help="requests a second per user")
    parser.add_argument("--quota-rpm", type=int, help="requests/minute quota of each tenant")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "load-report.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "load-latency.png")
    parser.add_argument("--csv-dir", type=Path, help="keep locust's CSV and JSON files here")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the server and locust are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    steps: list[report.Step] = []
    histories: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-load-") as tmp:
        out = args.csv_dir or Path(tmp, "locust")
        out.mkdir(parents=True, exist_ok=True)
        for users in [int(u) for u in args.users.split(",")]:
            prefix = out / f"users{users}"
            load_before = os.getloadavg()[0]
            key = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
            with serve(Path(tmp, f"data{users}"), key) as url:
                code = run_locust(url, key, users, prefix, args)
                server = report.read_metrics(httpx.get(f"{url}/metrics").text)
            if not Path(f"{prefix}.json").exists():
                raise SystemExit(f"locust exited {code} without results")
            step = report.read_step(prefix, users)
            step.server, step.load_before = server, load_before
            steps.append(step)
            histories[users] = Path(f"{prefix}_stats_history.csv")
            q = step.questions
            print(  # noqa: T201 (the driver's progress line)
                f"# {users} users: {q.rps:.1f} questions/s, p50 {q.p50_ms:.0f} ms, "
                f"p99 {q.p99_ms:.0f} ms, errors {step.failures + step.warmup_failures}, "
                f"429 {step.rate_limited}",
                flush=True,
            )
        chosen = report.best(steps)
        setup = describe_setup(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.markdown(steps, machine=describe_machine(), setup=setup))
        title = f"{chosen.users} users, {args.tenants} tenants, repeat {args.repeat:.0%}"
        report.plot(histories[chosen.users], args.plot, warmup_s=args.warmup_s, title=title)
    print(f"wrote {args.report} and {args.plot}")  # noqa: T201
    if any(s.failures or s.warmup_failures or not s.questions.requests for s in steps):
        sys.exit(1)  # an error, or a step in which the server answered nothing (a stall)


@contextmanager
def serve(data_dir: Path, platform_key: str) -> Iterator[str]:
    """``shoal serve`` on a free port in its own process, embedded, until the block ends."""
    port = free_port()
    # Only what this run sets: an operator's SHOAL_* (a Redis, a default quota) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env |= {
        "SHOAL_DATA_DIR": str(data_dir),
        "SHOAL_BOOTSTRAP_KEY": platform_key,
        "SHOAL_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = data_dir.with_suffix(".log")
    with log.open("wb") as sink:
        server = subprocess.Popen(  # noqa: S603 (our own CLI)
            [
                sys.executable,
                "-c",
                "from app.cli import main; main()",
                "serve",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_or_exit(f"{url}/readyz", server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def run_locust(
    url: str, platform_key: str, users: int, prefix: Path, args: argparse.Namespace
) -> int:
    """Locust, headless, for warm-up plus duration; its exit code (1 when a request failed)."""
    env = os.environ | {
        "SHOAL_LOAD_PLATFORM_KEY": platform_key,
        "SHOAL_LOAD_TENANTS": str(args.tenants),
        "SHOAL_LOAD_SEED": str(args.seed),
        "SHOAL_LOAD_REPEAT": str(args.repeat),
        "SHOAL_LOAD_USER_RPS": str(args.user_rps),
        "SHOAL_LOAD_WARMUP_S": str(args.warmup_s),
    }
    env.pop("SHOAL_LOAD_KEYS", None)  # this run's server has only the tenants it creates
    if args.quota_rpm:
        env["SHOAL_LOAD_QUOTA_RPM"] = str(args.quota_rpm)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{args.warmup_s + args.duration_s}s",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--json-file",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode  # noqa: S603


def describe_machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        host.processor() or "unknown CPU",
    )
    return (
        f"{host.machine()}, {os.cpu_count()} cores ({cpu}), torch {_version('torch')}, "
        f"locust {_version('locust')}, Python {sys.version.split()[0]}; "
        "server, locust and this driver on the same cores"
    )


def describe_setup(args: argparse.Namespace) -> str:
    quota = f"{args.quota_rpm} requests/min per tenant" if args.quota_rpm else "none"
    return (
        f"Set-up: embedded `shoal serve` (SQLite, Qdrant Edge, in-process indexing and embedding "
        f"cache; default settings, hybrid search, extractive answers), a fresh data directory per "
        f"step. {args.tenants} tenants, each namespace seeded with {args.seed} SciFact abstracts "
        f"(those relevant to the tenant's claims) before the users start. Each user belongs to "
        f"one tenant and sends at most {args.user_rps:g} request/s: `/query` 15, `/search` 5, "
        f"upload of one abstract 1. {args.repeat:.0%} of the questions repeat a popular earlier "
        f"one (an embedding-cache hit); the rest are new texts (a miss). Spawn rate "
        f"{args.spawn_rate:g}/s, warm-up {args.warmup_s} s (not counted), then "
        f"{args.duration_s} s measured. Rate limits: {quota}. The cache hit rate covers the "
        f"whole run, warm-up included."
    )


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    main()
