"""Concurrent questions share the model's forward passes: the question path encodes through one
batching thread of its own (:mod:`ingestion.batching`), in front of the real model.

The model here is the session's, behind a recorder whose first encode of a question is held
until every request has been sent, so the others pile up behind it as they do under load.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ingestion.embedder import ModelEmbedder
from tests.api.conftest import make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api, make_settings, start_api

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Why do sea otters hold hands?",
    "When do lanternfish rise to the surface?",
    "How fast does giant kelp grow?",
    "What do sea urchins eat?",
    "Where do hermit crabs find shells?",
    "How deep do sperm whales dive?",
]


class HeldModel:
    """The real model; records each encode call's texts. While ``hold`` is set, the first
    call that encodes a question waits until the test releases it."""

    def __init__(self, inner: ModelEmbedder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.hold = False
        self.release = threading.Event()
        self._lock = threading.Lock()

    model_id = property(lambda self: self.inner.model_id)
    dimension = property(lambda self: self.inner.dimension)
    max_seq_length = property(lambda self: self.inner.max_seq_length)
    device = property(lambda self: self.inner.device)
    batch_size = property(lambda self: self.inner.batch_size)
    warm = property(lambda self: self.inner.warm)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(
        self, texts: Sequence[str], *, token_counts: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        with self._lock:
            self.calls.append(list(texts))
            first = self.hold and any(t in QUESTIONS for t in texts)
            if first:
                self.hold = False
        if first:
            self.release.wait(timeout=60)
        return self.inner.encode(texts, token_counts=token_counts)


@pytest.fixture
def held(embedder: ModelEmbedder) -> HeldModel:
    return HeldModel(embedder)


@pytest.fixture
def held_api(tmp_path: Path, sqlite_url: str, held: HeldModel) -> Iterator[Api]:
    yield from start_api(make_settings(tmp_path, sqlite_url), held)


def test_concurrent_questions_are_encoded_together(held_api: Api, held: HeldModel) -> None:
    tenant = make_tenant(held_api, "acme")
    make_namespace(held_api, tenant, "docs")
    accepted = upload(
        held_api,
        tenant,
        "docs",
        [{"filename": "otters.txt", "text": "Sea otters hold hands while they sleep."}],
    )
    assert wait_for_job(held_api, tenant, accepted["job_id"])["state"] == "succeeded"
    held.calls.clear()
    held.hold = True

    def search(question: str) -> int:
        response = held_api.client.post(
            "/v1/namespaces/docs/search",
            json={"question": question},
            headers=held_api.headers(tenant.query_key),
        )
        return response.status_code

    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        statuses = [pool.submit(search, q) for q in QUESTIONS]
        # Hold the first question's forward pass until the others have had time to queue.
        threading.Timer(1.0, held.release.set).start()
        assert [s.result(timeout=120) for s in statuses] == [200] * len(QUESTIONS)

    question_calls = [c for c in held.calls if set(c) & set(QUESTIONS)]
    # Every question was encoded, each once, and they shared forward passes: fewer passes
    # than questions (one at a time, as before, would take six).
    assert sorted(t for c in question_calls for t in c) == sorted(QUESTIONS)
    assert len(question_calls) < len(QUESTIONS), question_calls
    assert max(len(c) for c in question_calls) > 1
