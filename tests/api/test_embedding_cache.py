"""The embedding cache through the API: a new version re-embeds only the chunks that changed.

What was encoded is read where an operator reads it: the ingest misses on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.db.models import Document
from app.services.indexing import prepare_chunks
from app.settings import Settings
from ingestion.embedder import ModelEmbedder
from retrieval.config import CacheConfig
from tests.api.conftest import Tenant, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api, RedisScratch, start_api

pytestmark = pytest.mark.slow

TOPICS = ["tide pools", "kelp forests", "coral reefs", "salt marshes", "mangroves", "estuaries"]
NEW_OPENING = "Salt marshes flooded early this year, and the count moved."


def handbook(*, changed: bool = False) -> str:
    """Six paragraphs of about 150 tokens: each is one chunk of the default model's 256.

    ``changed`` rewrites the first sentence of one paragraph; the 32-token overlap carries
    only each paragraph's last sentence into the next chunk, so exactly one chunk changes.
    """
    paragraphs = []
    for topic in TOPICS:
        sentences = [
            f"Note {i} on {topic}: the survey team counted what lives there in season {i}."
            for i in range(8)
        ]
        if changed and topic == "salt marshes":
            sentences[0] = NEW_OPENING
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


@pytest.fixture(params=["memory", "redis"])
def cache_backend(request: pytest.FixtureRequest) -> RedisScratch | None:
    """None for the in-process cache; else the Redis (and key prefix) the platform uses."""
    if request.param == "memory":
        return None
    scratch: RedisScratch = request.getfixturevalue("redis_scratch")
    return scratch


@pytest.fixture
def cached_api(
    tmp_path: Path,
    sqlite_url: str,
    embedder: ModelEmbedder,
    cache_backend: RedisScratch | None,
) -> Iterator[Api]:
    if cache_backend is None:
        settings = Settings(data_dir=tmp_path, database_url=sqlite_url, redis_url=None)
    else:
        settings = Settings(
            data_dir=tmp_path,
            database_url=sqlite_url,
            redis_url=cache_backend.url,
            cache=CacheConfig(key_prefix=cache_backend.prefix),
        )
    yield from start_api(settings, embedder)


def ingest_lookups(api: Api) -> dict[str, float]:
    """The ingest hits and misses so far, as ``/metrics`` shows them."""
    response = api.client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "shoal_embedding_cache_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["use"] == "ingest"
    }


def since(now: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {result: now[result] - before[result] for result in ("hit", "miss")}


def put_version(api: Api, tenant: Tenant, text: str) -> dict[str, Any]:
    document = {"text": text, "filename": "handbook.txt", "external_id": "handbook"}
    accepted = upload(api, tenant, "docs", [document])
    assert wait_for_job(api, tenant, accepted["job_id"])["state"] == "succeeded"
    uploaded: dict[str, Any] = accepted["documents"][0]
    return uploaded


def chunk_texts(api: Api, document_id: str) -> list[str]:
    """The chunks indexing embedded for the document, cut again by indexing's own function."""
    with api.platform.sessions() as session:
        document = session.get(Document, document_id)
        assert document is not None
        data, media_type, filename = document.content.data, document.media_type, document.filename
    _, chunks = prepare_chunks(
        data, media_type=media_type, filename=filename, deps=api.platform.indexing
    )
    return [c.text for c in chunks]


def test_a_new_version_re_embeds_only_the_chunks_whose_text_changed(
    cached_api: Api, cache_backend: RedisScratch | None
) -> None:
    api = cached_api
    tenant = make_tenant(api, "acme")
    make_namespace(api, tenant, "docs")

    start = ingest_lookups(api)
    v1 = put_version(api, tenant, handbook())
    after_v1 = ingest_lookups(api)
    first = chunk_texts(api, v1["id"])  # before v2 replaces the row

    v2 = put_version(api, tenant, handbook(changed=True))
    after_v2 = ingest_lookups(api)
    second = chunk_texts(api, v2["id"])

    assert v2["version"] == 2
    # The premise: six chunks, of which the second version changes one.
    assert len(first) == len(second) == 6
    assert len(set(second) - set(first)) == 1
    assert since(after_v1, start) == {"hit": 0, "miss": 6}
    assert since(after_v2, after_v1) == {"hit": 5, "miss": 1}
    if cache_backend is not None:  # shared by every process: all seven vectors are in Redis
        assert len(cache_backend.keys()) == 7


def test_tenants_never_share_cache_entries(
    cached_api: Api, cache_backend: RedisScratch | None
) -> None:
    # Shared entries would let one tenant time its queries to learn whether another tenant's
    # documents hold an exact text: the second tenant's identical upload embeds everything.
    api = cached_api
    first, second = make_tenant(api, "acme"), make_tenant(api, "globex")
    make_namespace(api, first, "docs")
    make_namespace(api, second, "docs")

    start = ingest_lookups(api)
    put_version(api, first, handbook())
    after_first = ingest_lookups(api)
    put_version(api, second, handbook())
    after_second = ingest_lookups(api)

    assert since(after_first, start) == {"hit": 0, "miss": 6}
    assert since(after_second, after_first) == {"hit": 0, "miss": 6}
    if cache_backend is not None:
        assert len(cache_backend.keys()) == 12
