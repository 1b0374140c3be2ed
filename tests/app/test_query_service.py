"""The query service called directly, on a real embedded platform (SQLite, Qdrant Edge, the real
model): one answer flow for streamed and whole answers, the route planned once and its budget
reserved, the reservation always settled, hidden documents never found."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.db.models import Document, DocumentState, Namespace
from app.errors import RateLimitedError
from app.platform import Platform, build_platform
from app.services import documents, namespaces, tenants
from app.services.keys import TenantAccess
from app.services.limits import Quotas
from app.services.query import answer_question, search_namespace, stream_answer
from app.services.questions import QueryDeps, StreamEnd, StreamStart
from app.services.uploads import UploadItem
from app.settings import Settings
from ingestion.embedder import SentenceTransformerEmbedder
from retrieval.generation.base import (
    DEFAULT_OPTIONS,
    Answer,
    Delta,
    GenerationBackend,
    GenerationOptions,
    Passage,
    StreamEvent,
)
from retrieval.generation.catalog import RouteCatalog
from retrieval.generation.extractive import ExtractiveGenerator
from tests.conftest import free_port

pytestmark = pytest.mark.slow

OTTERS = (
    "Sea otters hold hands while they sleep so that they do not drift apart. "
    "A group of resting otters is called a raft."
)
EELS = "Electric eels can produce shocks of up to 860 volts to stun their prey."
QUESTION = "Why do sea otters hold hands while they sleep?"


def dead_endpoint(**extra: Any) -> dict[str, Any]:
    """An OpenAI route nobody serves: generating on it fails over to the extractive answer."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    return {"backend": "openai", "endpoints": [{"url": url, "model": "m"}], "timeout_s": 2, **extra}


@pytest.fixture
def platform(
    tmp_path: Path, sqlite_url: str, embedder: SentenceTransformerEmbedder
) -> Iterator[Platform]:
    generators = {
        "fast": dead_endpoint(max_output_tokens=64),
        "big": dead_endpoint(max_output_tokens=512),
    }
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, generators=generators)
    built = build_platform(settings, embedder=embedder)
    yield built
    built.close()


@dataclasses.dataclass
class Corpus:
    tenant_id: str
    namespace: Namespace
    documents: dict[str, str]  # text's first word → document id

    @property
    def access(self) -> TenantAccess:
        return TenantAccess(self.tenant_id)


@pytest.fixture
def corpus(platform: Platform) -> Corpus:
    with platform.sessions() as session:
        tenant = tenants.create_tenant(session, name="acme", quotas={})
        namespace = namespaces.create_namespace(
            session,
            tenant_id=tenant.id,
            name="docs",
            embedding_model=platform.embedder.model_id,
            embedding_dimension=platform.embedder.dimension,
            indexed_fields={},
            routes={"small": "fast", "large": "big"},
            store=platform.store,
        )
        uploaded = documents.upload(
            session,
            namespace=namespace,
            items=[
                UploadItem(data=t.encode(), filename=f"{i}.txt")
                for i, t in enumerate([OTTERS, EELS])
            ],
            enqueue=platform.enqueue,
        )
        ids = {
            text.split()[0]: d.document.id
            for text, d in zip([OTTERS, EELS], uploaded.documents, strict=True)
        }
    deadline = time.monotonic() + 120
    while True:
        with platform.sessions() as session:
            states = {session.get(Document, i).state for i in ids.values()}  # type: ignore[union-attr]
        if states == {DocumentState.INDEXED}:
            return Corpus(tenant.id, namespace, ids)
        assert time.monotonic() < deadline, states
        time.sleep(0.1)


def ask(
    platform: Platform, corpus: Corpus, deps: QueryDeps | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "access": corpus.access,
        "key_id": "key-1",
        "namespace_name": "docs",
        "question": QUESTION,
        "top_k": None,
        "deps": deps or platform.query,
        **extra,
    }


def quotas(corpus: Corpus, tokens: int) -> Quotas:
    return Quotas(corpus.tenant_id, "key-1", tenant={"tokens_per_minute": tokens})


def test_stream_and_whole_answers_are_the_same_answer(platform: Platform, corpus: Corpus) -> None:
    with platform.sessions() as session:
        whole = answer_question(session, **ask(platform, corpus))
    with platform.sessions() as session:
        events = list(stream_answer(session, **ask(platform, corpus)))

    start, *deltas, end = events
    assert isinstance(start, StreamStart)
    assert isinstance(end, StreamEnd)
    streamed = end.result
    assert whole.answer.answerable
    assert "".join(d.text for d in deltas if isinstance(d, Delta)) == streamed.answer.text
    assert streamed.answer.text == whole.answer.text
    assert streamed.answer.citations == whole.answer.citations
    assert [p.chunk_id for p in streamed.passages] == [p.chunk_id for p in whole.passages]
    assert (start.route_name, streamed.route_name) == (whole.route_name, whole.route_name)
    assert streamed.route_reason == whole.route_reason
    # Only a stream has a first token to time.
    assert "first_token" in streamed.timings_ms
    assert "first_token" not in whole.timings_ms


def test_the_reservation_is_the_budget_of_the_planned_route(
    platform: Platform, corpus: Corpus
) -> None:
    """An analytical question goes to the large route: its budget is what is reserved, not the
    small route's (a reservation bigger than a 1-token budget names the tokens it needed)."""
    dispatcher = platform.query.catalog.dispatcher(corpus.namespace.routes, scope=corpus.tenant_id)
    with platform.sessions() as session:
        found = search_namespace(session, **ask(platform, corpus))
    plan = dispatcher.plan(QUESTION, found.passages, "auto")
    assert plan.route == "large"
    large = dispatcher.token_budget(plan)
    small = dispatcher.token_budget(dataclasses.replace(plan, chain=("small", "extractive")))
    assert large > small > 0

    for answer in (answer_question, stream_answer):
        with platform.sessions() as session, pytest.raises(RateLimitedError) as raised:
            answer(session, **ask(platform, corpus, quotas=quotas(corpus, 1)))
        assert f"this request needs {large} tokens" in str(raised.value)


class Broken:
    """An LLM endpoint that fails with a bug, not an outage: nothing falls back from it.
    ``after`` deltas are streamed first (0: it fails before saying anything)."""

    name = "broken"

    def __init__(self, after: int) -> None:
        self.after = after

    def generate(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Answer:
        raise RuntimeError("the backend broke")

    def stream(
        self,
        question: str,
        question_vector: Sequence[float],
        passages: Sequence[Passage],
        *,
        options: GenerationOptions = DEFAULT_OPTIONS,
    ) -> Iterator[StreamEvent]:
        for n in range(self.after):
            yield Delta(f"word{n} ")
        raise RuntimeError("the backend broke")


def with_backend(platform: Platform, backend: GenerationBackend) -> QueryDeps:
    """The platform's query deps with every LLM endpoint replaced by ``backend``."""
    catalog = RouteCatalog(
        generators=platform.settings.generators,
        default=platform.settings.routes,
        extractive=ExtractiveGenerator(platform.query.embedder, min_score=None),
        min_score=None,
        wrap=lambda _name, _index, _real: backend,
    )
    return dataclasses.replace(platform.query, catalog=catalog)


def full_budget_is_free(platform: Platform, corpus: Corpus, budget: int) -> bool:
    """Whether the whole token budget can still be reserved (then gives it back)."""
    try:
        reservation, _ = platform.limits.reserve(quotas(corpus, budget), budget)
    except RateLimitedError:
        return False
    platform.limits.settle(reservation, 0)
    return True


@pytest.mark.parametrize("streaming", [False, True])
def test_a_backend_failing_before_it_answers_settles_the_reservation_at_zero(
    platform: Platform, corpus: Corpus, streaming: bool
) -> None:
    deps, budget = with_backend(platform, Broken(after=0)), 10_000
    call = stream_answer if streaming else answer_question
    with platform.sessions() as session, pytest.raises(RuntimeError, match="broke"):
        call(session, **ask(platform, corpus, deps, quotas=quotas(corpus, budget)))
    assert full_budget_is_free(platform, corpus, budget)


def test_a_stream_failing_mid_answer_keeps_its_reservation_whole(
    platform: Platform, corpus: Corpus
) -> None:
    deps, budget = with_backend(platform, Broken(after=2)), 10_000
    with platform.sessions() as session:
        events = stream_answer(
            session, **ask(platform, corpus, deps, quotas=quotas(corpus, budget))
        )
        assert isinstance(next(events), StreamStart)
        with pytest.raises(RuntimeError, match="broke"):
            list(events)
    # Backends report usage only with the final answer: what was reserved stays spent.
    assert not full_budget_is_free(platform, corpus, budget)


def test_a_client_leaving_mid_stream_keeps_the_reservation_whole(
    platform: Platform, corpus: Corpus
) -> None:
    deps, budget = with_backend(platform, Broken(after=2)), 10_000
    with platform.sessions() as session:
        events = stream_answer(
            session, **ask(platform, corpus, deps, quotas=quotas(corpus, budget))
        )
        assert isinstance(next(events), StreamStart)
        assert isinstance(next(events), Delta)
        events.close()
    assert not full_budget_is_free(platform, corpus, budget)


def test_an_answer_settles_with_what_it_spent(platform: Platform, corpus: Corpus) -> None:
    """The dead LLM routes fall back to the extractive answer, which spends no token: the
    whole reservation comes back."""
    budget = 10_000
    with platform.sessions() as session:
        result = answer_question(session, **ask(platform, corpus, quotas=quotas(corpus, budget)))
    assert result.route_name == "extractive"
    assert result.answer.answerable
    assert full_budget_is_free(platform, corpus, budget)


def test_hidden_documents_are_never_found(platform: Platform, corpus: Corpus) -> None:
    with platform.sessions() as session:
        before = search_namespace(session, **ask(platform, corpus))
    otters = corpus.documents["Sea"]
    assert before.passages[0].document_id == otters

    with platform.sessions() as session:  # a replaced version: no longer visible to queries
        session.execute(
            update(Document).where(Document.id == otters).values(state=DocumentState.EMBEDDING)
        )
        session.commit()
    with platform.sessions() as session:
        after = search_namespace(session, **ask(platform, corpus))
        answered = answer_question(session, **ask(platform, corpus))

    assert after.passages, "the other document is still found"
    assert otters not in {p.document_id for p in after.passages}
    assert otters not in {c.document_id for c in answered.answer.citations}
