"""What the LLM backend tests read of a real model's exchange: a recording pass-through in front
of llama.cpp's server, and what a reply's markers cite.

The model's text is the model's; what Shoal does with it is Shoal's. :class:`LlmRecorder` keeps
both sides of each chat completion (the messages Shoal sent, the text the model wrote), so a test
can recompute from the model's own reply which passages the platform must cite, whatever the
model wrote, and check the prompt the model was given.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from retrieval.generation.prompt import SENTINEL


@dataclass(frozen=True)
class Exchange:
    """One chat completion as it crossed the wire: the request body and the model's whole text
    (a stream's deltas joined)."""

    request: dict[str, Any]
    reply: str

    @property
    def system(self) -> str:
        (system,) = [m["content"] for m in self.request["messages"] if m["role"] == "system"]
        return str(system)

    @property
    def user(self) -> str:
        (user,) = [m["content"] for m in self.request["messages"] if m["role"] == "user"]
        return str(user)


class LlmRecorder:
    """An HTTP pass-through to an OpenAI-compatible server that records every chat completion.

    Point a backend at :attr:`url` instead of the server's; requests and responses go through
    unchanged (streams too, piece by piece), and :attr:`exchanges` fills in the order they end.
    """

    def __init__(self, upstream: str) -> None:
        origin = httpx.URL(upstream)
        self._origin = f"{origin.scheme}://{origin.host}:{origin.port}"
        self.exchanges: list[Exchange] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Relay, self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``/v1`` base URL to give a backend."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def only(self) -> Exchange:
        """The one exchange recorded; fails unless there is exactly one."""
        assert len(self.exchanges) == 1, f"{len(self.exchanges)} chat completions recorded"
        return self.exchanges[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Relay(BaseHTTPRequestHandler):
    # One response per connection, its end marked by closing it: streams need no length.
    protocol_version = "HTTP/1.0"

    def __init__(self, recorder: LlmRecorder, *args: Any) -> None:
        self._recorder = recorder
        super().__init__(*args)

    def do_GET(self) -> None:
        self._relay(None)

    def do_POST(self) -> None:
        self._relay(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _relay(self, body: bytes | None) -> None:
        url = self._recorder._origin + self.path
        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
        received = bytearray()
        held = b""  # the latest piece, sent once the exchange is recorded or more follows
        with (
            httpx.Client(timeout=300) as client,
            client.stream(self.command, url, content=body, headers=headers) as response,
        ):
            self.send_response(response.status_code)
            content_type = response.headers.get("content-type", "")
            self.send_header("Content-Type", content_type)
            self.end_headers()
            for piece in response.iter_bytes():
                received += piece
                if not self._send(held):
                    return  # the client went away (a stream closed early): nothing to record
                held = piece
        if body and self.path.endswith("/chat/completions") and response.status_code == 200:
            # Recorded before the end reaches the client: once its call returns, it is here.
            text = _reply_text(received.decode(), content_type)
            self._recorder.exchanges.append(Exchange(json.loads(body), text))
        self._send(held)

    def _send(self, piece: bytes) -> bool:
        try:
            self.wfile.write(piece)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows what the test asserts


def _reply_text(body: str, content_type: str) -> str:
    if not content_type.startswith("text/event-stream"):
        return str(json.loads(body)["choices"][0]["message"]["content"] or "")
    pieces = []
    for line in body.splitlines():
        data = line.removeprefix("data:").strip()
        if line.startswith("data:") and data != "[DONE]":
            for choice in json.loads(data).get("choices") or []:
                pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


# --- what a reply cites --------------------------------------------------------------------------

# A run of markers as the system prompt asks for them: "[2]", "[1][3]", "[1, 3]".
_MARKER_RUN = re.compile(r"(?:\[\s*\d+(?:\s*,\s*\d+)*\s*\])+")
_HEADER = re.compile(r"^\[(\d+)\]\n", re.MULTILINE)
_QUESTION = "\n\nQuestion: "


def named(reply: str, shown: int) -> list[int]:
    """The passage numbers ``reply``'s markers name, in order of first mention, keeping only
    those of a passage shown (``1..shown``)."""
    numbers: list[int] = []
    for run in _MARKER_RUN.findall(reply):
        for n in map(int, re.findall(r"\d+", run)):
            if 1 <= n <= shown and n not in numbers:
                numbers.append(n)
    return numbers


def markers(text: str) -> set[int]:
    """Every number in a marker of ``text``."""
    return {n for run in runs(text) for n in run}


def runs(text: str) -> list[list[int]]:
    """The numbers of each run of markers in ``text``, in order."""
    return [list(map(int, re.findall(r"\d+", run))) for run in _MARKER_RUN.findall(text)]


def shown_passages(user_message: str) -> tuple[list[str], str]:
    """The passage texts a prompt's user message shows, in order, and its question.

    Fails unless the message is passages numbered ``[1]..[n]`` on lines of their own, then the
    question: a passage whose text forged a header of its own would show up here as a gap or
    an extra passage.
    """
    blocks, _, question = user_message.rpartition(_QUESTION)
    if not blocks:
        assert user_message.startswith("Question: "), user_message
        return [], user_message.removeprefix("Question: ")
    parts = _HEADER.split(blocks + "\n\n")
    assert parts[0] == "", f"text before the first passage: {parts[0]!r}"
    numbers, texts = parts[1::2], parts[2::2]
    assert numbers == [str(n) for n in range(1, len(texts) + 1)], numbers
    assert all(t.endswith("\n\n") for t in texts), texts
    return [t.removesuffix("\n\n") for t in texts], question


def expected_citations(reply: str, shown: list[str]) -> list[str]:
    """The texts, as shown to the model, of the passages an answer to ``reply`` cites when it
    answers: those its markers name, in order of first mention, keeping those of a passage
    shown; every passage shown when it names none."""
    numbers = named(reply, len(shown))
    return [shown[n - 1] for n in numbers] if numbers else list(shown)


def assert_cites_what_the_model_named(
    reply: str, shown: list[str], *, answerable: bool, answer_text: str, cited: list[str]
) -> None:
    """The platform's side of citing, whatever the model wrote.

    ``cited`` (the citations' texts as the prompt showed them) are exactly the passages
    ``reply``'s markers name, numbered ``[1]..[k]`` in the answer; a reply that names none
    cites every passage shown, and its answer carries no marker, which is how a client tells
    the two apart. A reply that starts with the sentinel abstains; one that names a passage
    answers. (Whether a reply naming none declines in its own words is the abstention's call:
    then it cites nothing.)
    """
    numbers = named(reply, len(shown))
    if reply.lstrip().startswith(SENTINEL):
        assert not answerable, reply
    elif numbers:
        assert answerable, reply
    if not answerable:
        assert cited == [], reply
        assert markers(answer_text) == set(), answer_text
        return
    assert cited == expected_citations(reply, shown), (reply, shown)
    assert markers(answer_text) == set(range(1, len(cited) + 1) if numbers else []), answer_text
    # Marker by marker, each [k] of the answer stands where the reply named citations[k - 1].
    written = [[shown[n - 1] for n in run if 1 <= n <= len(shown)] for run in runs(reply)]
    assert [[cited[k - 1] for k in run] for run in runs(answer_text)] == [r for r in written if r]
