"""Many tenants at once: SciFact questions and uploads against a running Shoal.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000   # or `make load`

Tenants, one of:

- ``SHOAL_LOAD_KEYS``: comma-separated tenant keys with the ``admin`` scope (one tenant each;
  each creates its namespace if it is missing);
- ``SHOAL_LOAD_PLATFORM_KEY``: a platform key; ``SHOAL_LOAD_TENANTS`` tenants (default 8) are
  created, each with an admin/write/query key, and ``SHOAL_LOAD_QUOTA_RPM``, when set, gives
  each one a requests-per-minute quota (to see ``429`` under load).

Before any user starts, each tenant's namespace (``SHOAL_LOAD_NAMESPACE``, default ``load``) is
seeded with ``SHOAL_LOAD_SEED`` abstracts (default 40) and the upload is followed until indexed.
The seeds are the abstracts relevant to the tenant's own SciFact claims, so most questions have
an answer in their namespace, as they would for a real tenant.

Users: each belongs to one tenant (round-robin) and sends ``SHOAL_LOAD_USER_RPS`` requests a
second at most (default 1.0): ``/query`` 15, ``/search`` 5, an upload of one abstract 1 (20
questions to an upload). A question is one of the tenant's claims in a natural phrasing; with
probability ``SHOAL_LOAD_REPEAT`` (default 0.5) it is a popular question asked before (the
earliest asked are the most popular), which the embedding cache answers without the model.
Every other question is a text no tenant has asked in this run, so it costs an embedding.

``429`` (a quota, deliberately) counts as a success under the request's name plus `` [429]``, so
the error count holds only real failures. ``SHOAL_LOAD_WARMUP_S`` (default 0) resets the
statistics that many seconds after the users start, so the figures leave out the warm-up.

Locust patches the standard library with gevent on import: run it as its own process only.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

DATA = Path(os.environ.get("SHOAL_LOAD_DATA", Path(__file__).parents[2] / "shared/data/scifact"))
NAMESPACE = os.environ.get("SHOAL_LOAD_NAMESPACE", "load")
TENANTS = int(os.environ.get("SHOAL_LOAD_TENANTS", "8"))
SEED = int(os.environ.get("SHOAL_LOAD_SEED", "40"))
REPEAT = float(os.environ.get("SHOAL_LOAD_REPEAT", "0.5"))
USER_RPS = float(os.environ.get("SHOAL_LOAD_USER_RPS", "1.0"))
WARMUP_S = float(os.environ.get("SHOAL_LOAD_WARMUP_S", "0"))
QUOTA_RPM = os.environ.get("SHOAL_LOAD_QUOTA_RPM")
SEED_TIMEOUT_S = 600.0

# Natural phrasings of a claim: each (phrasing, claim) pair is a text new to the embedding cache.
PHRASINGS = (
    "{claim}",
    "Is it true that {lower}?",
    "What is the evidence that {lower}?",
    "Do studies show that {lower}?",
    "Is there research supporting the claim that {lower}?",
    "Can you confirm that {lower}?",
    "What do the papers say about whether {lower}?",
    "Summarise the findings on this: {claim}",
    "I read that {lower}. Is that right?",
    "Has anyone shown that {lower}?",
    "What is known about the claim that {lower}?",
    "Find papers on whether {lower}.",
    "Is there a consensus that {lower}?",
    "Which results support or refute that {lower}?",
    "Explain whether {lower}.",
    "My doctor says {lower}. What does the literature say?",
)

log = logging.getLogger("shoal.load")


@dataclass
class Tenant:
    """One tenant's key, namespace and traffic: its questions and the abstracts it uploads."""

    key: str
    claims: list[str]
    seeds: list[dict[str, str]]
    uploads: Iterator[dict[str, str]]
    asked: list[str] = field(default_factory=list)
    fresh: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self.fresh = _phrasings(self.claims)

    def question(self) -> str:
        """A popular question asked before (``REPEAT`` of the time), else one never asked."""
        if self.asked and random.random() < REPEAT:  # noqa: S311 (load mix, not security)
            # Skewed towards the first questions asked: a few are very popular, most rarely.
            return self.asked[int(len(self.asked) * random.random() ** 3)]  # noqa: S311
        text = next(self.fresh)
        self.asked.append(text)
        return text


def _phrasings(claims: list[str]) -> Iterator[str]:
    pairs = [(p, c) for p in PHRASINGS for c in claims]
    random.shuffle(pairs)
    for phrasing, claim in pairs:
        yield _phrase(phrasing, claim)
    # Every pair asked: number the rest so that they still miss the cache.
    for n in itertools.count(1):
        for phrasing, claim in pairs:
            yield f"{_phrase(phrasing, claim)} ({n})"


def _phrase(phrasing: str, claim: str) -> str:
    claim = claim.strip().rstrip(".")
    # Lower-case the first letter unless it starts an acronym or a gene name ("ALDH1", "IgA").
    first = claim.split(maxsplit=1)[0]
    lower = claim[:1].lower() + claim[1:] if len(first) == 1 or first[1:].islower() else claim
    return phrasing.format(claim=claim + ".", lower=lower)


def _records(path: Path) -> list[dict[str, Any]]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _document(record: dict[str, Any]) -> dict[str, str]:
    text = f"{record.get('title', '')}\n\n{record['text']}".strip()
    return {"text": text, "filename": f"scifact-{record['_id']}.txt", "external_id": record["_id"]}


def _cycle_shuffled(items: list[dict[str, str]]) -> Iterator[dict[str, str]]:
    items = list(items)
    random.shuffle(items)
    return itertools.cycle(items)


def plan(keys: list[str]) -> list[Tenant]:
    """Split SciFact between the tenants: each gets its own claims, their abstracts as seeds and
    a share of the other abstracts to upload during the test."""
    corpus = {str(r["_id"]): r for r in _records(DATA / "corpus.jsonl")}
    claims = {str(r["_id"]): r["text"] for r in _records(DATA / "queries.jsonl")}
    relevant: dict[str, list[str]] = {}
    for line in (DATA / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, *_ = line.split("\t")
        relevant.setdefault(query_id, []).append(doc_id)
    judged = sorted(relevant, key=int)
    cited = {d for docs in relevant.values() for d in docs}
    others = [_document(r) for i, r in corpus.items() if i not in cited]
    tenants = []
    for n, key in enumerate(keys):
        mine = judged[n :: len(keys)]
        seeds = list(dict.fromkeys(d for q in mine for d in relevant[q] if d in corpus))[:SEED]
        tenant = Tenant(
            key=key,
            claims=[claims[q] for q in mine],
            seeds=[_document(corpus[d]) for d in seeds],
            uploads=_cycle_shuffled(others[n :: len(keys)]),
        )
        tenants.append(tenant)
    return tenants


def _call(host: str, method: str, path: str, key: str, body: object | None = None) -> Any:
    """One set-up request (not measured). ``Any``: the JSON of whichever endpoint was called."""
    request = urllib.request.Request(  # noqa: S310 (the --host the operator gave)
        host.rstrip("/") + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    for _ in range(30):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code != 429:  # a quota (SHOAL_LOAD_QUOTA_RPM) also limits the set-up
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise SystemExit(f"{method} {path}: still rate limited after 30 tries")


def _tenant_keys(host: str) -> list[str]:
    if keys := [k.strip() for k in os.environ.get("SHOAL_LOAD_KEYS", "").split(",") if k.strip()]:
        return keys
    platform_key = os.environ.get("SHOAL_LOAD_PLATFORM_KEY")
    if not platform_key:
        raise SystemExit("set SHOAL_LOAD_KEYS (tenant admin keys) or SHOAL_LOAD_PLATFORM_KEY")
    quotas = {"requests_per_minute": int(QUOTA_RPM)} if QUOTA_RPM else {}
    run = time.strftime("%Y%m%d-%H%M%S")
    keys = []
    for n in range(TENANTS):
        body = {"name": f"load-{run}-{n}", "quotas": quotas}
        tenant = _call(host, "POST", "/v1/admin/tenants", platform_key, body)
        scopes = {"name": "load", "scopes": ["admin", "write", "query"]}
        created = _call(
            host, "POST", f"/v1/admin/tenants/{tenant['id']}/keys", platform_key, scopes
        )
        keys.append(created["key"])
    return keys


def _seed(host: str, tenants: list[Tenant]) -> None:
    jobs = []
    for tenant in tenants:
        try:
            _call(host, "POST", "/v1/namespaces", tenant.key, {"name": NAMESPACE})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there: a key from SHOAL_LOAD_KEYS used before
                raise
        path = f"/v1/namespaces/{NAMESPACE}/documents"
        jobs.append(_call(host, "POST", path, tenant.key, {"documents": tenant.seeds})["job_id"])
    deadline = time.monotonic() + SEED_TIMEOUT_S
    for tenant, job_id in zip(tenants, jobs, strict=True):
        while (job := _call(host, "GET", f"/v1/jobs/{job_id}", tenant.key))["state"] in (
            "queued",
            "running",
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"seeding job {job_id} not done after {SEED_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
        if job["state"] != "succeeded":
            raise SystemExit(f"seeding job {job_id} ended {job['state']}: {job['counts']}")


TENANT_LIST: list[Tenant] = []
USER_NUMBERS = itertools.count()


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook is unannotated
def _set_up(environment: Environment, **_: object) -> None:
    if environment.host is None:
        raise SystemExit("give --host, e.g. http://127.0.0.1:8000")
    started = time.monotonic()
    TENANT_LIST.extend(plan(_tenant_keys(environment.host)))
    _seed(environment.host, TENANT_LIST)
    seeded = sum(len(t.seeds) for t in TENANT_LIST)
    log.warning(
        "%d tenants, %d abstracts seeded in %.1f s",
        len(TENANT_LIST),
        seeded,
        time.monotonic() - started,
    )


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # as above
def _schedule_warmup_end(environment: Environment, **_: object) -> None:
    if WARMUP_S > 0 and environment.runner is not None:
        stats = environment.runner.stats

        def end_warmup() -> None:
            stats.reset_all()
            log.warning("warm-up over after %.0f s: statistics reset", WARMUP_S)

        # Locust has patched threading with gevent: this timer is a greenlet.
        threading.Timer(WARMUP_S, end_warmup).start()


class TenantUser(FastHttpUser):
    """A user of one tenant: mostly questions, now and then an upload."""

    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.tenant = TENANT_LIST[next(USER_NUMBERS) % len(TENANT_LIST)]
        self.headers = {"Authorization": f"Bearer {self.tenant.key}"}

    def _post(self, endpoint: str, body: dict[str, Any], expected: int) -> None:
        name = f"/v1/namespaces/[ns]/{endpoint}"
        path = f"/v1/namespaces/{NAMESPACE}/{endpoint}"
        with self.client.post(
            path, json=body, headers=self.headers, name=name, catch_response=True
        ) as response:
            if response.status_code == 429:
                response.request_meta["name"] = f"{name} [429]"
                response.success()
            elif response.status_code != expected:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(15)
    def query(self) -> None:
        self._post("query", {"question": self.tenant.question()}, 200)

    @task(5)
    def search(self) -> None:
        self._post("search", {"question": self.tenant.question()}, 200)

    @task(1)
    def upload(self) -> None:
        self._post("documents", {"documents": [next(self.tenant.uploads)]}, 202)
