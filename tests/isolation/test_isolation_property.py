"""Tenant isolation as a property: random tenants, keys, namespaces, uploads, deletes and reads
against ``shoal serve`` over real HTTP, on SQLite and on Postgres, checking after every request
that

- no answer to a tenant's key names another tenant's document, chunk, job, namespace, key or
  tenant id, nor the marker text of another tenant's document (ids and markers are recorded
  with their owner as they are made, and every body is scanned for them);
- every foreign resource (another tenant's namespace name, document id, job id, key id, tenant
  id), and every deleted one, answers exactly what a freshly made-up one of the same kind does:
  same status, same headers, same problem body but for the echoed identifier;
- probing never changes the owner's resource (a foreign delete deletes nothing);
- revoked keys get the 401 of a key that never existed;
- what a tenant does see is exactly what it owns: listings equal the model, searches find every
  indexed document of the namespace, so the checks above cannot pass on empty answers;
- the MCP door (``/mcp``, through the MCP SDK's own client) holds to all of the above: listings,
  searches, answers, uploads and jobs drawn on either door, foreign resources probed through its
  tools answer as missing ones, a revoked key is refused as one that never was;
- a key limited to some namespaces finds the tenant's others as missing, on both doors.

One server serves every example of a run, on a database of its own (a new SQLite file, a new
Postgres database), with no clean-up between examples: tenants and namespace names are new in
each example, so everything an earlier example made stays foreign to the later ones (more to
leak, and nothing for a replayed example to collide with). Documents are one short sentence
each, so that the real model indexes them in milliseconds; jobs are waited for only where
indexed content is checked (an example's start, ``wait_for_jobs``, and a search or query drawn
with ``settle``).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mcp_types import CallToolResult

from tests.api.conftest import PROBLEM_JSON, Response, call_tool, make_tenant
from tests.conftest import Served, new_postgres_database, serve_shoal

# Namespace names are drawn from a small pool so that tenants often share one (with a suffix
# per example).
NAMES = ("handbook", "wiki", "tickets")
# Texts several tenants upload verbatim: content dedup must stay within a namespace.
SHARED = (
    "The office opens at nine in the morning and closes at five.",
    "Visitors sign in at the front desk and wear a badge.",
)
FACTS = (
    "Sea otters hold hands while they sleep so that they do not drift apart.",
    "Mount Etna is the most active volcano in Europe.",
    "Green tea is made from leaves that are not oxidised.",
    "The lighthouse keeper winds the clock every Sunday.",
)
IDEMPOTENCY_KEYS = ("retry-1", "retry-2")  # shared by all tenants: a key belongs to its tenant
MAX_DOCS = 12  # per namespace; search asks for top 50, so it must return every indexed one
SCOPES = ("admin", "write", "query")
# Markers: letters that never occur in hex ids, so a marker cannot hide inside an id.
MARKER_LETTERS = "ghijklmnopqrstuvwxyz"
TOKEN = re.compile(
    r"zq[g-z]{8}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?<![0-9a-f])(?:[0-9a-f]{32}|[0-9a-f]{16})(?![0-9a-f])"
)
# Differ between any two requests; the request id is the same in a probe pair (we send it).
VOLATILE_HEADERS = frozenset({"content-length", "date"})
TERMINAL = frozenset({"succeeded", "partial", "failed"})
DOORS = ("http", "mcp")


def new_marker() -> str:
    return "zq" + "".join(secrets.choice(MARKER_LETTERS) for _ in range(8))


def allowed(scope: str, need: str) -> bool:
    """Whether a tenant key of ``scope`` may do what needs ``need`` (``read``: any scope)."""
    if need == "platform":
        return False
    return need == "read" or scope in (need, "admin")


@dataclass
class Key:
    id: str
    token: str
    scope: str
    revoked: bool = False
    namespaces: frozenset[str] | None = None  # None: all of the tenant's


@dataclass
class Doc:
    id: str
    text: str
    marker: str | None  # None: one of SHARED
    indexed: bool = False


@dataclass
class Namespace:
    name: str
    id: str
    docs: dict[str, Doc] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    namespace_id: str
    doc_ids: list[str]
    done: bool = False


@dataclass
class IdempotentUpload:
    namespace: str
    namespace_id: str
    texts: list[str]
    response: dict[str, Any]


@dataclass
class Tenant:
    id: str
    keys: list[Key]
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    dead_docs: list[str] = field(default_factory=list)
    dead_jobs: list[str] = field(default_factory=list)
    idempotent: dict[str, IdempotentUpload] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)  # with a marker, ever uploaded
    limited: list[Key] = field(default_factory=list)  # keys limited to some namespaces

    def live_keys(self, need: str = "read") -> list[Key]:
        return [k for k in self.keys if not k.revoked and allowed(k.scope, need)]

    def every_key(self) -> list[Key]:
        return [*self.keys, *self.limited]

    def docs(self) -> list[tuple[Namespace, Doc]]:
        return [(ns, d) for ns in self.namespaces.values() for d in ns.docs.values()]


@dataclass
class Registry:
    """Everything made in this test function, by owning tenant; and what was checked."""

    owner: dict[str, str] = field(default_factory=dict)
    checked: Counter[str] = field(default_factory=Counter)

    def add(self, token: str, tenant_id: str) -> None:
        self.owner[token] = tenant_id
        if len(token) == 36:  # a uuid: collections are named from the dashless form
            self.owner[token.replace("-", "")] = tenant_id


def masked(value: Any, idents: list[str]) -> Any:  # Any: a JSON body
    """``value`` with each identifier replaced by its position, for comparing two problems."""
    if isinstance(value, str):
        for i, ident in enumerate(idents):
            value = value.replace(ident, f"<ident {i}>")
        return value
    if isinstance(value, list):
        return [masked(v, idents) for v in value]
    if isinstance(value, dict):
        return {k: masked(v, idents) for k, v in value.items()}
    return value


def stable_headers(response: Response) -> dict[str, str]:
    return {
        k.lower(): ("*" if k.lower().startswith("ratelimit") else v)
        for k, v in response.headers.items()
        if k.lower() not in VOLATILE_HEADERS
    }


class IsolationMachine(RuleBasedStateMachine):
    def __init__(self, api: Served, registry: Registry) -> None:
        super().__init__()
        self.api = api
        self.registry = registry
        self.tenants: list[Tenant] = []
        # Namespace names are new in each example, so that a bug reached through a name (say, a
        # lookup that ignores the tenant) meets this example's tenants, the same on every replay.
        self.suffix = secrets.token_hex(3)

    # --- HTTP, with the leak check on every tenant request -----------------------------------

    def send(
        self,
        method: str,
        path: str,
        key: Key | str,
        *,
        json: Any = None,  # Any: a JSON body
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        token = key.token if isinstance(key, Key) else key
        return self.api.client.request(
            method, path, json=json, headers={**self.api.headers(token), **(headers or {})}
        )

    def call(
        self,
        tenant: Tenant,
        method: str,
        path: str,
        key: Key,
        expect: int = 200,
        *,
        json: Any = None,  # Any: a JSON body
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        response = self.send(method, path, key, json=json, headers=headers)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        self.assert_no_leak(tenant, response.text)
        return response

    def assert_no_leak(self, tenant: Tenant, text: str, echoed: list[str] | None = None) -> None:
        for ident in echoed or []:
            text = text.replace(ident, "")
        owner = self.registry.owner
        leaked = sorted({t for t in TOKEN.findall(text) if owner.get(t, tenant.id) != tenant.id})
        assert not leaked, f"tenant {tenant.id} sees {[(t, owner[t]) for t in leaked]}: {text}"

    def mcp(self, tenant: Tenant, key: Key, tool: str, **arguments: Any) -> CallToolResult:
        """A tool call through the MCP SDK's client, with the leak check."""
        result = call_tool(self.api, key.token, tool, **arguments)
        self.assert_no_leak(tenant, result.model_dump_json())
        return result

    def mcp_ok(self, tenant: Tenant, key: Key, tool: str, **arguments: Any) -> dict[str, Any]:
        result = self.mcp(tenant, key, tool, **arguments)
        assert not result.is_error, (tool, arguments, result)
        assert result.structured_content is not None
        return dict(result.structured_content)

    def draw_key(self, data: st.DataObject, tenant: Tenant, need: str = "read") -> Key:
        return data.draw(st.sampled_from(tenant.live_keys(need)))

    def draw_tenant(self, data: st.DataObject, *, with_namespace: bool = False) -> Tenant:
        tenants = [t for t in self.tenants if t.namespaces or not with_namespace]
        return data.draw(st.sampled_from(tenants))

    def draw_namespace(self, data: st.DataObject, tenant: Tenant) -> Namespace:
        return data.draw(st.sampled_from(list(tenant.namespaces.values())))

    def others(self, tenant: Tenant) -> list[Tenant]:
        return [t for t in self.tenants if t is not tenant]

    def has_namespace(self) -> bool:
        return any(t.namespaces for t in self.tenants)

    def has_doc(self) -> bool:
        return any(t.docs() for t in self.tenants)

    # --- tenants and keys ---------------------------------------------------------------------

    @initialize(data=st.data(), names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=2))
    def two_tenants_with_a_searchable_namespace(
        self, data: st.DataObject, names: list[str]
    ) -> None:
        """So that every example can cite, list and probe from its first step: each tenant has a
        namespace (often of the same name) with an indexed document, found by searching; and
        each kind of resource is probed once, whatever rules the example then runs."""
        for name in names:
            self.add_tenant()
            self.create_namespace(data, name, tenant=self.tenants[-1])
        for tenant in self.tenants:
            ns = next(iter(tenant.namespaces.values()))
            self.upload(data, fresh=1, shared=set(), idempotency_key=None, tenant=tenant, ns=ns)
            self.search(data, settle=True, tenant=tenant, ns=ns)
        for asker, victim in (self.tenants, self.tenants[::-1]):
            self.probe_each_kind(asker, victim)

    def probe_each_kind(self, asker: Tenant, victim: Tenant) -> None:
        """With the asker's admin key, one probe of each kind of the victim's resources."""
        admin = asker.keys[0]
        own, theirs = (next(iter(t.namespaces.values())) for t in (asker, victim))
        doc_id, job_id = next(iter(theirs.docs)), next(iter(victim.jobs))
        if theirs.name not in asker.namespaces:
            missing = [f"m{secrets.token_hex(6)}"]
            self.probe(asker, admin, "read", "GET", "/v1/namespaces/{0}", [theirs.name], missing)
        template = f"/v1/namespaces/{own.name}/documents/{{0}}"
        self.probe(asker, admin, "read", "GET", template, [doc_id], [str(uuid.uuid4())])
        self.probe(asker, admin, "write", "GET", "/v1/jobs/{0}", [job_id], [str(uuid.uuid4())])
        template = "/v1/admin/tenants/{0}/keys"
        self.probe(asker, admin, "admin", "GET", template, [victim.id], [str(uuid.uuid4())])
        key_id = victim.keys[-1].id
        self.probe(
            asker, admin, "admin", "DELETE", "/v1/admin/keys/{0}", [key_id], [secrets.token_hex(8)]
        )

    @precondition(lambda self: len(self.tenants) < 3)
    @rule()
    def add_tenant(self) -> None:
        made = make_tenant(self.api, f"tenant-{uuid.uuid4().hex[:12]}")
        keys = [
            Key(token.split("_")[1], token, scope)
            for token, scope in zip(
                (made.admin_key, made.write_key, made.query_key), SCOPES, strict=True
            )
        ]
        self.registry.add(made.id, made.id)
        for key in keys:
            self.registry.add(key.id, made.id)
        self.tenants.append(Tenant(made.id, keys))

    @rule(data=st.data(), scope=st.sampled_from(SCOPES))
    def create_key(self, data: st.DataObject, scope: str) -> None:
        tenant = self.draw_tenant(data)
        created = self.call(
            tenant,
            "POST",
            f"/v1/admin/tenants/{tenant.id}/keys",
            self.draw_key(data, tenant, "admin"),
            201,
            json={"name": f"{scope}-key", "scopes": [scope]},
        ).json()
        assert created["tenant_id"] == tenant.id
        self.registry.add(created["id"], tenant.id)
        tenant.keys.append(Key(created["id"], created["key"], scope))

    @rule(data=st.data())
    def revoke_key(self, data: st.DataObject) -> None:
        tenant = self.draw_tenant(data)
        admins = tenant.live_keys("admin")
        # Keep one admin key: namespaces and keys are managed with it.
        candidates = [k for k in tenant.live_keys() if k.scope != "admin" or len(admins) > 1]
        if not candidates:
            return
        key = data.draw(st.sampled_from(candidates))
        by = self.draw_key(data, tenant, "admin")
        self.call(tenant, "DELETE", f"/v1/admin/keys/{key.id}", by, 204)
        key.revoked = True
        # Revocation takes effect on the next request.
        self.call(tenant, "GET", "/v1/namespaces", key, 401)

    @precondition(lambda self: any(k.revoked for t in self.tenants for k in t.keys))
    @rule(data=st.data())
    def revoked_key_is_a_key_that_never_was(self, data: st.DataObject) -> None:
        tenant = self.draw_tenant(data)
        revoked = [k for t in self.tenants for k in t.keys if k.revoked]
        key = data.draw(st.sampled_from(revoked))
        path, method = data.draw(
            st.sampled_from(
                [
                    ("/v1/namespaces", "GET"),
                    (f"/v1/namespaces/{NAMES[0]}-{self.suffix}/documents", "GET"),
                    (f"/v1/admin/tenants/{tenant.id}/keys", "GET"),
                    (f"/v1/jobs/{uuid.uuid4()}", "GET"),
                    (f"/v1/admin/keys/{key.id}", "DELETE"),
                ]
            )
        )
        never = f"shoal_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
        request_id = {"X-Request-ID": f"revoked-{uuid.uuid4().hex}"}
        answers = [self.send(method, path, k, headers=request_id) for k in (key.token, never)]
        self.assert_same(answers[0], answers[1], [], [], 401)
        # The MCP door: the SDK's 401, the same for both.
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
        call["params"] = {"name": "list_namespaces", "arguments": {}}
        mcp_headers = {**request_id, "Accept": "application/json, text/event-stream"}
        answers = [
            self.api.client.post("/mcp", json=call, headers={**self.api.headers(k), **mcp_headers})
            for k in (key.token, never)
        ]
        assert [a.status_code for a in answers] == [401, 401], answers[0].text
        assert answers[0].text == answers[1].text
        assert stable_headers(answers[0]) == stable_headers(answers[1])
        self.registry.checked["revoked"] += 1

    @rule(data=st.data())
    def read_own_tenant_keys_and_usage(self, data: st.DataObject) -> None:
        tenant = self.draw_tenant(data)
        key = self.draw_key(data, tenant, "admin")
        base = f"/v1/admin/tenants/{tenant.id}"
        assert self.call(tenant, "GET", base, key).json()["id"] == tenant.id
        listed = self.call(tenant, "GET", f"{base}/keys", key).json()
        assert {(k["id"], k["revoked_at"] is not None) for k in listed} == {
            (k.id, k.revoked) for k in tenant.every_key()
        }
        assert {k["tenant_id"] for k in listed} == {tenant.id}
        usage = self.call(tenant, "GET", f"{base}/usage", key).json()
        assert {u["key_id"] for u in usage} <= {k.id for k in tenant.every_key()}

    # --- namespaces ---------------------------------------------------------------------------

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def create_namespace(
        self, data: st.DataObject, name: str, tenant: Tenant | None = None
    ) -> None:
        tenant = tenant or self.draw_tenant(data)
        key = self.draw_key(data, tenant, "admin")
        name = f"{name}-{self.suffix}"
        exists = name in tenant.namespaces
        response = self.call(
            tenant, "POST", "/v1/namespaces", key, 409 if exists else 201, json={"name": name}
        )
        if not exists:
            created = response.json()
            self.registry.add(created["id"], tenant.id)
            tenant.namespaces[name] = Namespace(name, created["id"])

    @precondition(has_namespace)
    @rule(data=st.data())
    def delete_namespace(self, data: st.DataObject) -> None:
        tenant = self.draw_tenant(data, with_namespace=True)
        ns = self.draw_namespace(data, tenant)
        key = self.draw_key(data, tenant, "admin")
        self.call(tenant, "DELETE", f"/v1/namespaces/{ns.name}", key, 204)
        del tenant.namespaces[ns.name]
        tenant.dead_docs += list(ns.docs)
        for job in [j for j in tenant.jobs.values() if j.namespace_id == ns.id]:
            del tenant.jobs[job.id]
            tenant.dead_jobs.append(job.id)
        tenant.idempotent = {k: v for k, v in tenant.idempotent.items() if v.namespace_id != ns.id}

    @rule(data=st.data(), door=st.sampled_from(DOORS))
    def list_namespaces(self, data: st.DataObject, door: str) -> None:
        tenant = self.draw_tenant(data)
        key = self.draw_key(data, tenant)
        if door == "mcp":
            listed = self.mcp_ok(tenant, key, "list_namespaces")["namespaces"]
        else:
            listed = self.call(tenant, "GET", "/v1/namespaces", key).json()
        assert {(n["name"], n["id"]) for n in listed} == {
            (n.name, n.id) for n in tenant.namespaces.values()
        }
        for ns in tenant.namespaces.values():
            got = self.call(tenant, "GET", f"/v1/namespaces/{ns.name}", self.draw_key(data, tenant))
            assert got.json()["id"] == ns.id

    # --- documents and jobs -------------------------------------------------------------------

    @precondition(has_namespace)
    @rule(
        data=st.data(),
        fresh=st.integers(0, 2),
        shared=st.sets(st.sampled_from(SHARED), max_size=2),
        idempotency_key=st.none() | st.sampled_from(IDEMPOTENCY_KEYS),
        door=st.sampled_from(DOORS),
    )
    def upload(
        self,
        data: st.DataObject,
        fresh: int,
        shared: set[str],
        idempotency_key: str | None,
        door: str = "http",
        tenant: Tenant | None = None,
        ns: Namespace | None = None,
    ) -> None:
        tenant = tenant or self.draw_tenant(data, with_namespace=True)
        ns = ns or self.draw_namespace(data, tenant)
        fresh = fresh or int(not shared)
        if len(ns.docs) + fresh + len(shared) > MAX_DOCS:
            return
        markers = [new_marker() for _ in range(fresh)]
        texts = [f"{m} {data.draw(st.sampled_from(FACTS))}" for m in markers]
        texts += sorted(shared)
        for marker, text in zip(markers, texts, strict=False):
            self.registry.add(marker, tenant.id)
            tenant.texts.append(text)
        if door == "mcp" and idempotency_key is None:  # MCP has no Idempotency-Key
            key = self.draw_key(data, tenant, "write")
            documents = [{"text": t} for t in texts]
            accepted = self.mcp_ok(
                tenant, key, "add_documents", namespace=ns.name, documents=documents
            )
            self.record_upload(tenant, ns, texts, markers, accepted)
            return
        self.send_upload(tenant, ns, texts, idempotency_key, markers, data)

    def send_upload(
        self,
        tenant: Tenant,
        ns: Namespace,
        texts: list[str],
        idempotency_key: str | None,
        markers: list[str],
        data: st.DataObject,
    ) -> None:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        earlier = tenant.idempotent.get(idempotency_key) if idempotency_key else None
        replay = earlier is not None and (earlier.namespace_id, earlier.texts) == (ns.id, texts)
        response = self.call(
            tenant,
            "POST",
            f"/v1/namespaces/{ns.name}/documents",
            self.draw_key(data, tenant, "write"),
            422 if earlier is not None and not replay else 202,
            json={"documents": [{"text": t} for t in texts]},
            headers=headers,
        )
        if earlier is not None:
            if replay:
                assert response.headers.get("Idempotent-Replayed") == "true"
                assert response.json() == earlier.response
            else:
                assert response.json()["type"] == "/problems/idempotency-key-reused"
            return
        assert "Idempotent-Replayed" not in response.headers
        accepted = response.json()
        self.record_upload(tenant, ns, texts, markers, accepted)
        if idempotency_key is not None:
            tenant.idempotent[idempotency_key] = IdempotentUpload(ns.name, ns.id, texts, accepted)

    def record_upload(
        self,
        tenant: Tenant,
        ns: Namespace,
        texts: list[str],
        markers: list[str],
        accepted: dict[str, Any],
    ) -> None:
        """Check an accepted upload's answer against the model, and add its job and documents."""
        assert accepted["job_id"] not in self.registry.owner, "a job id was handed out twice"
        by_text = {d.text: d for d in ns.docs.values()}
        job = Job(accepted["job_id"], ns.id, [])
        self.registry.add(job.id, tenant.id)
        marker_of = dict(zip(texts, markers, strict=False))
        assert len(accepted["documents"]) == len(texts)
        for text, answered in zip(texts, accepted["documents"], strict=True):
            known = by_text.get(text)
            # Dedup is within the namespace: another tenant's same text is not a duplicate.
            assert answered["duplicate"] is (known is not None), (text, answered)
            if known is not None:
                assert answered["id"] == known.id
            else:
                assert answered["id"] not in self.registry.owner, "a document id was reused"
                self.registry.add(answered["id"], tenant.id)
                ns.docs[answered["id"]] = Doc(answered["id"], text, marker_of.get(text))
            job.doc_ids.append(answered["id"])
        tenant.jobs[job.id] = job

    @precondition(lambda self: any(t.idempotent for t in self.tenants))
    @rule(data=st.data())
    def retry_upload(self, data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from([t for t in self.tenants if t.idempotent]))
        key, earlier = data.draw(st.sampled_from(list(tenant.idempotent.items())))
        ns = tenant.namespaces[earlier.namespace]
        self.send_upload(tenant, ns, earlier.texts, key, [], data)
        self.registry.checked["replayed"] += 1

    @precondition(has_doc)
    @rule(data=st.data())
    def delete_document(self, data: st.DataObject) -> None:
        tenant = data.draw(st.sampled_from([t for t in self.tenants if t.docs()]))
        ns, doc = data.draw(st.sampled_from(tenant.docs()))
        key = self.draw_key(data, tenant, "write")
        self.call(tenant, "DELETE", f"/v1/namespaces/{ns.name}/documents/{doc.id}", key, 204)
        del ns.docs[doc.id]
        tenant.dead_docs.append(doc.id)

    @precondition(has_namespace)
    @rule(data=st.data())
    def list_and_read_documents(self, data: st.DataObject) -> None:
        tenant = self.draw_tenant(data, with_namespace=True)
        ns = self.draw_namespace(data, tenant)
        self.assert_documents_are(tenant, ns, self.draw_key(data, tenant))
        for doc in ns.docs.values():
            path = f"/v1/namespaces/{ns.name}/documents/{doc.id}"
            assert (
                self.call(tenant, "GET", path, self.draw_key(data, tenant)).json()["id"] == doc.id
            )

    def assert_documents_are(self, tenant: Tenant, ns: Namespace, key: Key) -> None:
        path = f"/v1/namespaces/{ns.name}/documents?limit=500"
        page = self.call(tenant, "GET", path, key).json()
        assert {d["id"] for d in page["items"]} == set(ns.docs), page
        assert page["total"] == len(ns.docs)

    @precondition(lambda self: any(t.jobs for t in self.tenants))
    @rule(data=st.data(), door=st.sampled_from(DOORS))
    def read_job(self, data: st.DataObject, door: str) -> None:
        tenant = data.draw(st.sampled_from([t for t in self.tenants if t.jobs]))
        job = data.draw(st.sampled_from(list(tenant.jobs.values())))
        key = self.draw_key(data, tenant, "write")
        if door == "mcp":
            self.assert_job(tenant, job, self.mcp_ok(tenant, key, "job_status", job_id=job.id))
        else:
            self.assert_job(tenant, job, self.call(tenant, "GET", f"/v1/jobs/{job.id}", key).json())

    def assert_job(self, tenant: Tenant, job: Job, got: dict[str, Any]) -> None:
        live = {d for ns in tenant.namespaces.values() for d in ns.docs}
        assert got["namespace_id"] == job.namespace_id
        assert [d["id"] for d in got["documents"]] == [d for d in job.doc_ids if d in live]

    @precondition(lambda self: any(not j.done for t in self.tenants for j in t.jobs.values()))
    @rule(data=st.data())
    def wait_for_jobs(self, data: st.DataObject) -> None:
        self.settle(data, data.draw(st.sampled_from([t for t in self.tenants if t.jobs])))

    def settle(self, data: st.DataObject, tenant: Tenant, ns: Namespace | None = None) -> None:
        """Wait for the tenant's jobs (in ``ns`` only, if given) as a client would."""
        key = self.draw_key(data, tenant, "write")
        docs = {d.id: d for _, d in tenant.docs()}
        for job in tenant.jobs.values():
            deadline = time.monotonic() + 60
            while not job.done and (ns is None or job.namespace_id == ns.id):
                got = self.call(tenant, "GET", f"/v1/jobs/{job.id}", key).json()
                if got["state"] in TERMINAL:
                    assert got["state"] == "succeeded", got
                    self.assert_job(tenant, job, got)
                    for d in got["documents"]:
                        docs[d["id"]].indexed = True
                    job.done = True
                assert time.monotonic() < deadline, got
                time.sleep(0.02)

    # --- search and query ---------------------------------------------------------------------

    def draw_question(self, data: st.DataObject, tenant: Tenant, ns: Namespace) -> str:
        own = [d.text for d in ns.docs.values()]
        foreign = [text for t in self.others(tenant) for text in t.texts]
        pools = [p for p in (own, foreign, list(SHARED), ["Who keeps the lighthouse clock?"]) if p]
        return data.draw(st.sampled_from(pools).flatmap(st.sampled_from))

    @precondition(has_namespace)
    @rule(data=st.data(), settle=st.booleans(), door=st.sampled_from(DOORS))
    def search(
        self,
        data: st.DataObject,
        settle: bool,
        door: str = "http",
        tenant: Tenant | None = None,
        ns: Namespace | None = None,
    ) -> None:
        tenant = tenant or self.draw_tenant(data, with_namespace=True)
        ns = ns or self.draw_namespace(data, tenant)
        if settle:
            self.settle(data, tenant, ns)
        question = self.draw_question(data, tenant, ns)
        key = self.draw_key(data, tenant, "query")
        if door == "mcp":  # the namespace's own mode (hybrid): its candidates hold every doc
            found = self.mcp_ok(tenant, key, "search", namespace=ns.name, query=question, top_k=50)[
                "passages"
            ]
        else:
            found = self.call(
                tenant,
                "POST",
                f"/v1/namespaces/{ns.name}/search",
                key,
                json={"question": question, "top_k": 50, "mode": "dense"},
            ).json()["passages"]
        self.assert_passages(tenant, ns, found)
        cited = {p["document_id"] for p in found}
        # Top 50 returns every visible document of a small namespace.
        indexed = {d.id for d in ns.docs.values() if d.indexed}
        assert indexed <= cited, found
        assert indexed or not settle or not ns.docs, "settled, yet nothing is indexed"
        asked = [d for d in ns.docs.values() if d.text == question and d.indexed]
        if asked:
            assert found[0]["document_id"] == asked[0].id, found
            self.registry.checked["found exact"] += 1
        self.registry.checked["search hits"] += len(found)

    @precondition(has_namespace)
    @rule(
        data=st.data(), door=st.sampled_from(("http", "http-stream", "mcp")), settle=st.booleans()
    )
    def query(self, data: st.DataObject, door: str, settle: bool) -> None:
        tenant = self.draw_tenant(data, with_namespace=True)
        ns = self.draw_namespace(data, tenant)
        if settle:
            self.settle(data, tenant, ns)
        question = self.draw_question(data, tenant, ns)
        key = self.draw_key(data, tenant, "query")
        if door == "mcp":
            answer = self.mcp_ok(tenant, key, "answer", namespace=ns.name, question=question)
        else:
            response = self.call(
                tenant,
                "POST",
                f"/v1/namespaces/{ns.name}/query",
                key,
                json={"question": question, "stream": door == "http-stream"},
            )
            if door == "http-stream":
                return  # the leak check has read every event
            answer = response.json()
        self.assert_passages(tenant, ns, answer["citations"])
        asked = [d for d in ns.docs.values() if d.text == question and d.indexed]
        if asked:
            assert answer["answerable"], answer
            assert asked[0].id in {c["document_id"] for c in answer["citations"]}, answer
            self.registry.checked["answered"] += 1

    def assert_passages(self, tenant: Tenant, ns: Namespace, found: list[dict[str, Any]]) -> None:
        for passage in found:
            doc = ns.docs.get(passage["document_id"])
            assert doc is not None, f"cites a document not live in {ns.name}: {passage}"
            if doc.marker is not None:
                assert doc.marker in passage["text"], (doc, passage)
            self.registry.add(passage["chunk_id"], tenant.id)

    # --- probes: another tenant's resource answers as a missing one ---------------------------

    def assert_same(
        self,
        foreign: Response,
        missing: Response,
        foreign_idents: list[str],
        missing_idents: list[str],
        status: int,
    ) -> None:
        assert foreign.status_code == status, foreign.text
        assert missing.status_code == status, missing.text
        assert foreign.headers["content-type"].startswith(PROBLEM_JSON)
        assert stable_headers(foreign) == stable_headers(missing)
        assert masked(foreign.json(), foreign_idents) == masked(missing.json(), missing_idents)

    def probe(
        self,
        asker: Tenant,
        key: Key,
        need: str,
        method: str,
        template: str,
        foreign: list[str],
        missing: list[str],
        json: Any = None,  # Any: a JSON body
    ) -> None:
        """``template`` filled with ``foreign`` and with ``missing`` answers the same."""
        request_id = {"X-Request-ID": f"probe-{uuid.uuid4().hex}"}
        answers = [
            self.send(method, template.format(*idents), key, json=json, headers=request_id)
            for idents in (foreign, missing)
        ]
        status = 404 if allowed(key.scope, need) else 403
        self.assert_same(answers[0], answers[1], foreign, missing, status)
        self.assert_no_leak(asker, answers[0].text, echoed=foreign)
        self.registry.checked[f"probe {status}"] += 1

    @rule(
        data=st.data(),
        op=st.sampled_from(
            [
                ("read", "GET", "/v1/namespaces/{0}", None),
                ("admin", "PATCH", "/v1/namespaces/{0}", {}),
                ("admin", "DELETE", "/v1/namespaces/{0}", None),
                ("read", "GET", "/v1/namespaces/{0}/documents", None),
                ("write", "POST", "/v1/namespaces/{0}/documents", {"documents": [{"text": "x"}]}),
                ("read", "GET", "/v1/namespaces/{0}/documents/{1}", None),
                ("write", "DELETE", "/v1/namespaces/{0}/documents/{1}", None),
                ("query", "POST", "/v1/namespaces/{0}/search", {"question": "otters"}),
                ("query", "POST", "/v1/namespaces/{0}/query", {"question": "otters"}),
                ("query", "POST", "/v1/namespaces/{0}/query", {"question": "x", "stream": True}),
            ]
        ),
    )
    def probe_namespace(self, data: st.DataObject, op: tuple[str, str, str, Any]) -> None:
        need, method, template, body = op
        asker = self.draw_tenant(data)
        victims = [
            (t, ns) for t in self.others(asker) for ns in t.namespaces.values()
            if ns.name not in asker.namespaces
        ]  # fmt: skip
        if not victims:
            return
        victim, ns = data.draw(st.sampled_from(victims))
        doc_id = data.draw(st.sampled_from([*ns.docs, str(uuid.uuid4())]))
        key = data.draw(st.sampled_from(asker.live_keys()))
        missing = [f"m{secrets.token_hex(6)}", str(uuid.uuid4())]
        self.probe(asker, key, need, method, template, [ns.name, doc_id], missing, body)
        self.assert_intact(victim, ns, data)

    @precondition(has_namespace)
    @rule(data=st.data(), method=st.sampled_from(["GET", "DELETE"]))
    def probe_document(self, data: st.DataObject, method: str) -> None:
        asker = self.draw_tenant(data, with_namespace=True)
        ns = self.draw_namespace(data, asker)
        # Another tenant's documents, live or deleted; own deleted ones and own ones in another
        # namespace, which must look missing too.
        candidates: list[tuple[Tenant, Namespace | None, str]] = [
            (t, n, d.id) for t in self.tenants for n, d in t.docs() if n is not ns
        ]
        candidates += [(t, None, d) for t in self.tenants for d in t.dead_docs]
        if not candidates:
            return
        owner, owner_ns, doc_id = data.draw(st.sampled_from(candidates))
        key = data.draw(st.sampled_from(asker.live_keys()))
        template = f"/v1/namespaces/{ns.name}/documents/{{0}}"
        need = "read" if method == "GET" else "write"
        self.probe(asker, key, need, method, template, [doc_id], [str(uuid.uuid4())])
        if owner_ns is not None:
            self.assert_intact(owner, owner_ns, data)

    @rule(data=st.data(), with_state=st.booleans())
    def probe_job(self, data: st.DataObject, with_state: bool) -> None:
        asker = self.draw_tenant(data)
        foreign = [j for t in self.others(asker) for j in [*t.jobs, *t.dead_jobs]]
        candidates = foreign + asker.dead_jobs
        if not candidates:
            return
        job_id = data.draw(st.sampled_from(candidates))
        key = data.draw(st.sampled_from(asker.live_keys()))
        template = "/v1/jobs/{0}" + ("?state=indexed" if with_state else "")
        self.probe(asker, key, "write", "GET", template, [job_id], [str(uuid.uuid4())])

    @rule(
        data=st.data(),
        op=st.sampled_from(
            [
                ("admin", "GET", "/v1/admin/tenants/{0}", None),
                ("admin", "GET", "/v1/admin/tenants/{0}/keys", None),
                ("admin", "GET", "/v1/admin/tenants/{0}/usage", None),
                ("admin", "POST", "/v1/admin/tenants/{0}/keys", {"name": "x", "scopes": ["admin"]}),
                ("platform", "PATCH", "/v1/admin/tenants/{0}", {"quotas": {}}),
                ("platform", "DELETE", "/v1/admin/tenants/{0}", None),
            ]
        ),
    )
    def probe_tenant(self, data: st.DataObject, op: tuple[str, str, str, Any]) -> None:
        need, method, template, body = op
        asker = self.draw_tenant(data)
        victim = data.draw(st.sampled_from(self.others(asker)))
        key = data.draw(st.sampled_from(asker.live_keys()))
        self.probe(asker, key, need, method, template, [victim.id], [str(uuid.uuid4())], body)
        admin = victim.live_keys("admin")[0]
        listed = self.call(victim, "GET", f"/v1/admin/tenants/{victim.id}/keys", admin).json()
        assert {k["id"] for k in listed} == {k.id for k in victim.every_key()}, "keys changed"

    @rule(data=st.data())
    def probe_key(self, data: st.DataObject) -> None:
        asker = self.draw_tenant(data)
        victim = data.draw(st.sampled_from(self.others(asker)))
        target = data.draw(st.sampled_from(victim.keys))
        key = data.draw(st.sampled_from(asker.live_keys()))
        missing = [secrets.token_hex(8)]
        self.probe(asker, key, "admin", "DELETE", "/v1/admin/keys/{0}", [target.id], missing)
        if not target.revoked:  # a foreign revoke revoked nothing
            self.call(victim, "GET", "/v1/namespaces", target)

    # --- the MCP door: foreign resources through its tools answer as missing ones -----------

    def mcp_probe(
        self,
        asker: Tenant,
        key: Key,
        need: str,
        tool: str,
        arguments: dict[str, Any],
        foreign: list[str],
        missing: list[str],
    ) -> None:
        """The tool called with ``foreign`` (``{0}`` in ``arguments``' strings) answers the
        same tool error as with ``missing``."""

        def filled(idents: list[str]) -> dict[str, Any]:
            return {k: v.format(*idents) if isinstance(v, str) else v for k, v in arguments.items()}

        answers = [call_tool(self.api, key.token, tool, **filled(i)) for i in (foreign, missing)]
        status = 404 if allowed(key.scope, need) else 403
        for answer in answers:
            assert answer.is_error, answer
            assert answer.structured_content is not None
            assert answer.structured_content["status"] == status, answer
        assert masked(answers[0].structured_content, foreign) == masked(
            answers[1].structured_content, missing
        )
        texts = [[c.model_dump() for c in a.content] for a in answers]
        assert masked(texts[0], foreign) == masked(texts[1], missing)
        self.assert_no_leak(asker, answers[0].model_dump_json(), echoed=foreign)
        self.registry.checked[f"mcp probe {status}"] += 1

    @rule(
        data=st.data(),
        op=st.sampled_from(
            [
                ("query", "search", {"namespace": "{0}", "query": "otters"}),
                ("query", "answer", {"namespace": "{0}", "question": "Who sleeps holding hands?"}),
                ("write", "add_documents", {"namespace": "{0}", "documents": [{"text": "x"}]}),
            ]
        ),
    )
    def mcp_probe_namespace(self, data: st.DataObject, op: tuple[str, str, dict[str, Any]]) -> None:
        need, tool, arguments = op
        asker = self.draw_tenant(data)
        victims = [
            (t, ns) for t in self.others(asker) for ns in t.namespaces.values()
            if ns.name not in asker.namespaces
        ]  # fmt: skip
        if not victims:
            return
        victim, ns = data.draw(st.sampled_from(victims))
        key = data.draw(st.sampled_from(asker.live_keys()))
        missing = [f"m{secrets.token_hex(6)}"]
        self.mcp_probe(asker, key, need, tool, arguments, [ns.name], missing)
        self.assert_intact(victim, ns, data)

    @rule(data=st.data())
    def mcp_probe_job(self, data: st.DataObject) -> None:
        asker = self.draw_tenant(data)
        candidates = [j for t in self.others(asker) for j in [*t.jobs, *t.dead_jobs]]
        candidates += asker.dead_jobs
        if not candidates:
            return
        job_id = data.draw(st.sampled_from(candidates))
        key = data.draw(st.sampled_from(asker.live_keys()))
        missing = [str(uuid.uuid4())]
        self.mcp_probe(asker, key, "write", "job_status", {"job_id": "{0}"}, [job_id], missing)

    # --- keys limited to some namespaces ------------------------------------------------------

    @precondition(has_namespace)
    @rule(data=st.data(), scope=st.sampled_from(["write", "query"]), door=st.sampled_from(DOORS))
    def create_limited_key(self, data: st.DataObject, scope: str, door: str) -> None:
        tenant = self.draw_tenant(data, with_namespace=True)
        if len(tenant.namespaces) < 2:  # so that the key is kept out of one
            other = next(n for n in NAMES if f"{n}-{self.suffix}" not in tenant.namespaces)
            self.create_namespace(data, other, tenant=tenant)
        names = sorted(tenant.namespaces)
        chosen = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=len(names) - 1))
        created = self.call(
            tenant,
            "POST",
            f"/v1/admin/tenants/{tenant.id}/keys",
            self.draw_key(data, tenant, "admin"),
            201,
            json={"name": "limited", "scopes": [scope], "namespaces": sorted(chosen)},
        ).json()
        assert created["namespaces"] == sorted(chosen)
        self.registry.add(created["id"], tenant.id)
        limited = Key(created["id"], created["key"], scope, namespaces=frozenset(chosen))
        tenant.limited.append(limited)
        self.limited_key_reaches_its_namespaces_only(data, door, tenant, limited)

    @precondition(lambda self: any(t.limited for t in self.tenants))
    @rule(data=st.data(), door=st.sampled_from(DOORS))
    def limited_key_reaches_its_namespaces_only(
        self,
        data: st.DataObject,
        door: str,
        tenant: Tenant | None = None,
        key: Key | None = None,
    ) -> None:
        """It lists only its namespaces (those still there), and each other one of its own
        tenant, with its jobs, answers as a missing one, on either door."""
        tenant = tenant or data.draw(st.sampled_from([t for t in self.tenants if t.limited]))
        key = key or data.draw(st.sampled_from(tenant.limited))
        assert key.namespaces is not None
        if door == "mcp":
            listed = self.mcp_ok(tenant, key, "list_namespaces")["namespaces"]
        else:
            listed = self.call(tenant, "GET", "/v1/namespaces", key).json()
        assert {n["name"] for n in listed} == set(key.namespaces) & set(tenant.namespaces)
        self.registry.checked["limited key lists"] += 1
        hidden = [ns for name, ns in tenant.namespaces.items() if name not in key.namespaces]
        if not hidden:
            return
        ns = data.draw(st.sampled_from(hidden))
        missing = [f"m{secrets.token_hex(6)}"]
        if door == "mcp" and key.scope == "query":
            arguments: dict[str, Any] = {"namespace": "{0}", "query": "otters"}
            self.mcp_probe(tenant, key, "query", "search", arguments, [ns.name], missing)
        elif door == "mcp":
            arguments = {"namespace": "{0}", "documents": [{"text": "x"}]}
            self.mcp_probe(tenant, key, "write", "add_documents", arguments, [ns.name], missing)
        else:
            template = "/v1/namespaces/{0}/documents"
            self.probe(tenant, key, "read", "GET", template, [ns.name], missing)
        jobs = [j.id for j in tenant.jobs.values() if j.namespace_id == ns.id]
        if key.scope == "write" and jobs:
            job_id, no_job = data.draw(st.sampled_from(jobs)), [str(uuid.uuid4())]
            if door == "mcp":
                self.mcp_probe(
                    tenant, key, "write", "job_status", {"job_id": "{0}"}, [job_id], no_job
                )
            else:
                self.probe(tenant, key, "write", "GET", "/v1/jobs/{0}", [job_id], no_job)
        self.registry.checked["limited key probes"] += 1
        self.assert_intact(tenant, ns, data)

    @rule(path=st.sampled_from(["/metrics", "/healthz", "/readyz"]))
    def public_endpoints_name_no_tenant(self, path: str) -> None:
        """What answers without a key names no tenant's resources at all."""
        response = self.api.client.get(path)
        assert response.status_code == 200, response.text
        named = {t for t in TOKEN.findall(response.text) if t in self.registry.owner}
        names = {n for t in self.tenants for n in t.namespaces if n in response.text}
        assert not named | names, (named, names)

    def assert_intact(self, owner: Tenant, ns: Namespace, data: st.DataObject) -> None:
        """After a probe: the owner still has the namespace and every document in it."""
        key = self.draw_key(data, owner)
        assert self.call(owner, "GET", f"/v1/namespaces/{ns.name}", key).json()["id"] == ns.id
        self.assert_documents_are(owner, ns, key)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """``shoal serve`` on a new SQLite file, then on a new Postgres database."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'shoal.db'}"
        else:
            url = stack.enter_context(new_postgres_database())
        yield stack.enter_context(serve_shoal(tmp_path, url))


@pytest.mark.slow
def test_no_tenant_can_see_or_tell_apart_another_tenants_resources(served: Served) -> None:
    registry = Registry()

    class Machine(IsolationMachine):
        def __init__(self) -> None:
            super().__init__(served, registry)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=12,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    # Not vacuous: foreign resources were probed with and without the scope, and searches found
    # the asking tenant's own documents.
    assert registry.checked["probe 404"], registry.checked
    assert registry.checked["probe 403"], registry.checked
    assert registry.checked["search hits"], registry.checked
    assert registry.checked["mcp probe 404"], registry.checked
    assert registry.checked["limited key lists"], registry.checked
