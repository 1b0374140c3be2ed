"""Servers as users run them: a free port, ``shoal <command>`` in its own process, a wait until
it answers, and a stop. One copy for the tests, ``bench/`` and ``loadtests/``.

:func:`wait_until_ready` raises :class:`NotReadyError` with the end of the server's log; tests
turn it into a failure, the benchmarks into an exit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class NotReadyError(RuntimeError):
    """The server exited, or did not answer in time; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it; nothing holds it afterwards)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shoal_executable() -> Path:
    """The ``shoal`` command of the running interpreter's environment."""
    return Path(sys.executable).with_name("shoal")


def start_shoal(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``shoal <argv>`` in its own process, its output (both streams) in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(shoal_executable()), *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_until_ready(
    url: str,
    server: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    *,
    timeout_s: float = 300,
) -> None:
    """Wait until a GET of ``url`` answers 200 (``/readyz``: the model is warm, the stores are
    reachable).

    Raises:
        NotReadyError: ``server`` exited, or ``url`` did not answer 200 within ``timeout_s``
            (the default leaves room for the model's warm-up on a crowded machine: ~15 s on a
            quiet one, 77 s seen on two cores shared by several test runs).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise NotReadyError(f"{url}: the server exited ({server.returncode}){tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise NotReadyError(f"{url} did not answer 200 within {timeout_s:g} s{tail(log)}")


def stop(server: subprocess.Popen[bytes], *, timeout_s: float = 30) -> None:
    """Ask ``server`` to stop (SIGTERM); kill it if it is still there after ``timeout_s``."""
    server.terminate()
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def tail(log: Path | None, chars: int = 3000) -> str:
    """The end of ``log``, on lines of its own after a colon; nothing without a log."""
    if log is None or not log.exists():
        return ""
    return ":\n" + log.read_text(errors="replace")[-chars:]


def wait_or_exit(
    url: str,
    server: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    *,
    timeout_s: float = 300,
) -> None:
    """:func:`wait_until_ready` for a command-line tool: exits with the reason if the server
    never becomes ready."""
    try:
        wait_until_ready(url, server, log, timeout_s=timeout_s)
    except NotReadyError as exc:
        raise SystemExit(str(exc)) from exc
