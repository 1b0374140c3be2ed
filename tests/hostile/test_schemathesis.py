"""Schemathesis against ``shoal serve`` over real HTTP, with the fault drills mounted.

The server runs in its own process as users run it (migrating its database, taking its platform
key from ``SHOAL_BOOTSTRAP_KEY``, ``SHOAL_ENABLE_FAULTS=true``), once on a new SQLite file and
once on a new Postgres database (which takes what SQLite forgives: a NUL in a name, a timestamp
with an offset), and every case goes out over a socket: what uvicorn makes of odd paths, headers
and bodies is under test too. Every operation, the drill endpoints included, gets schemathesis's
examples, coverage (boundary and negative values) and fuzzing phases, positive and negative
data. Each case goes out with a real key (platform on ``/v1/admin``, a tenant admin elsewhere)
so it reaches the handler, and path parameters are sometimes swapped for real ids (a namespace
with an indexed document, its job, a tenant), so cases also hit existing resources. Destructive
operations only ever reach spares: deleting the namespace every other case uses would turn the
rest of the run into 404s.

A drill posted by a case is cleared as soon as that case is checked, and its delay is cut to
:data:`DRILL_DELAY_MS` before it is sent (a valid delay stays valid): otherwise one drill would
fail or stall every later case, or open the store's breaker for the rest of the run. An indexing
job of an earlier upload may still meet a drill in that moment; what it answers then (a 503, a
failed job) is documented.

The checks (:data:`CHECKS`): no 5xx; every status, content type, header and body as the schema
declares (``response_schema_conformance``); auth not ignored; a missing required header refused;
405 with a true ``Allow``. Two of schemathesis's checks are left out, as they hold the app to
more than its schema can say:

- ``positive_data_acceptance`` wants schema-valid input accepted, but valid input may break a
  rule the schema cannot express (``invalid-request``: a route naming no configured generator,
  a filter on an undeclared field). :func:`schema_valid_input_passes_validation` keeps what
  matters: such input never fails *validation*.
- ``negative_data_rejection`` wants every off-schema value refused, but Pydantic's lax mode
  takes ``0`` for ``false`` and ``"5"`` or ``true`` for ``5``; strict mode would refuse ``5.0``,
  which JSON Schema counts as an integer. Lengths, ranges, enums and unknown fields come from
  the same Pydantic models as the schema; ``test_input.py`` checks the ones hostile input aims
  at (question length, ``top_k``, filter depth).

The run is bounded (:data:`FUZZ_EXAMPLES` per operation, whatever the Hypothesis profile) and
the last test checks, for each database, that it reached :data:`MIN_CASES` over every operation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, CheckFunction, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import Tenant, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Served, new_postgres_database, serve_shoal

pytestmark = pytest.mark.slow

# Fuzzing-phase examples per operation; the examples and coverage phases add their own cases.
FUZZ_EXAMPLES = 45
MIN_CASES = 2000  # per database
# Executed cases per database and operation label ("POST /v1/namespaces"), filled by the fuzz test.
EXECUTED: defaultdict[str, Counter[str]] = defaultdict(Counter)
FAULTS = "/v1/admin/faults"
DRILL_DELAY_MS = 20


@dataclass
class World:
    """The served app, and real resources for path parameters: ``main`` answers every non-admin
    call; ``spare_*`` and ``victim`` are there to be deleted or changed."""

    database: str
    served: Served
    session: requests.Session  # schemathesis's transport, one keep-alive connection
    main: Tenant
    victim: Tenant
    namespace: str
    spare_namespace: str
    document_id: str
    spare_document_id: str
    job_id: str
    spare_key_id: str

    def headers(self, path: str) -> dict[str, str]:
        key = None if path.startswith("/v1/admin") else self.main.admin_key
        return self.served.headers(key)

    def real_path_parameters(self, method: str, path: str) -> dict[str, str]:
        destructive = method.upper() in ("DELETE", "PATCH")
        tenant = self.victim if destructive and path.startswith("/v1/admin/tenants/") else self.main
        deletes = method.upper() == "DELETE"
        deletes_namespace = deletes and path == "/v1/namespaces/{ns}"
        return {
            "tenant_id": tenant.id,
            "key_id": self.spare_key_id,
            "ns": self.spare_namespace if deletes_namespace else self.namespace,
            "document_id": self.spare_document_id if deletes else self.document_id,
            "job_id": self.job_id,
            "model": self.namespace,  # the OpenAI door's name for a namespace
        }

    def clear_drills(self) -> None:
        cleared = self.served.client.delete(FAULTS, headers=self.served.headers())
        assert cleared.status_code == 204, cleared.text


DOCUMENT = (
    "Shoal indexes documents per namespace. The harbour seal rests on sandbanks at low tide. "
    "Herring gather in shoals near the coast in spring."
)


# The schema the cases come from: the app's own, built as `shoal serve` builds it with the drills
# mounted, at import (pytest makes one test per operation while collecting, before any server
# runs); `world` checks that the server serves the same one. (schemathesis's `from_fixture` would
# load it lazily, but it writes `Node._nodeid`, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_dict(create_app(Settings(enable_faults=True)).openapi())
# schemathesis gives a response 10 s; on a busy CI machine a namespace's first collection can
# take longer. No test gates on wall-clock time: a hang is still caught, by pytest-timeout.
schema.config.update(request_timeout=240)
# The world the running test sees, for the hook below (hooks run while cases are generated).
CURRENT: list[World] = []


@schema.hook
def flatmap_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """Half the time the generated path parameters, else real ids where the path has them."""
    operation = context.operation
    if not CURRENT or operation is None or not path_parameters:
        return st.just(path_parameters)
    real = CURRENT[-1].real_path_parameters(operation.method, operation.path)
    chosen = {name: real.get(name, value) for name, value in path_parameters.items()}
    return st.sampled_from([path_parameters, chosen])


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """``shoal serve`` on a new SQLite file, then on a new Postgres database, with a tenant, its
    namespace and an indexed document to aim at."""
    data_dir: Path = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{data_dir / 'shoal.db'}"
        else:
            url = stack.enter_context(new_postgres_database())
        served = stack.enter_context(serve_shoal(data_dir, url, SHOAL_ENABLE_FAULTS="true"))
        assert served.client.get("/openapi.json").json() == schema.raw_schema
        main, victim = make_tenant(served, "main"), make_tenant(served, "victim")
        make_namespace(served, main, "docs", indexed_fields={"lang": "keyword", "year": "integer"})
        make_namespace(served, main, "spare")
        accepted = upload(
            served,
            main,
            "docs",
            [
                {
                    "text": DOCUMENT,
                    "filename": "seals.txt",
                    "metadata": {"lang": "en", "year": 2024},
                },
                {"text": "A document to delete.", "filename": "spare.txt"},
            ],
        )
        assert wait_for_job(served, main, accepted["job_id"])["state"] == "succeeded"
        spare_key = served.client.post(
            f"/v1/admin/tenants/{main.id}/keys",
            json={"name": "spare", "scopes": ["query"]},
            headers=served.headers(),
        )
        assert spare_key.status_code == 201, spare_key.text
        made = World(
            database=request.param,
            served=served,
            session=stack.enter_context(requests.Session()),
            main=main,
            victim=victim,
            namespace="docs",
            spare_namespace="spare",
            document_id=accepted["documents"][0]["id"],
            spare_document_id=accepted["documents"][1]["id"],
            job_id=accepted["job_id"],
            spare_key_id=spare_key.json()["id"],
        )
        CURRENT.append(made)
        yield made
        CURRENT.remove(made)


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    # Real ids make some generated values repeat; that is the point, not a problem.
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_generated_input_as_declared(case: Case[Any], world: World) -> None:
    EXECUTED[world.database][case.operation.label] += 1
    drill = case.operation.path == FAULTS
    if drill:
        shorten_drill_delay(case)
    try:
        case.call_and_validate(
            base_url=world.served.url,
            session=world.session,
            headers=world.headers(case.operation.path),
            checks=CHECKS,
        )
    finally:
        if drill:
            world.clear_drills()


def shorten_drill_delay(case: Case[Any]) -> None:
    """Cut a valid ``delay_ms`` to :data:`DRILL_DELAY_MS`: still valid, and a call that meets
    the drill before it is cleared waits milliseconds, not up to ten minutes."""
    body = case.body
    if case.method.upper() == "POST" and isinstance(body, dict):
        delay = body.get("delay_ms")
        if type(delay) is int and 1 <= delay <= 600_000:
            body["delay_ms"] = min(delay, DRILL_DELAY_MS)


def schema_valid_input_passes_validation(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """Schema-valid input is never a ``validation-error``: the app validates what it declares.

    In place of schemathesis's ``positive_data_acceptance``, which wants such input accepted:
    valid input may still break a rule the schema cannot express (``invalid-request``: a route
    naming no configured generator, a filter on an undeclared field) or name nothing (404).
    One validation the schema cannot state is allowed: names and questions are stripped, so a
    blank one is too short (Python strips more characters than a JSON Schema ``\\S`` matches).
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    problem = response.json()
    if problem.get("type") != "/problems/validation-error":
        return None
    if not all(_blank_after_strip(error, case.body) for error in problem["errors"]):
        raise AssertionError(f"schema-valid input failed validation: {response.text}")
    return None


def _blank_after_strip(error: dict[str, Any], body: object) -> bool:
    if error["type"] != "string_too_short" or error["loc"][:1] != ["body"]:
        return False
    value = body
    try:
        for part in error["loc"][1:]:
            value = value[part]  # type: ignore[index]  # a JSON body, walked by the error's loc
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(value, str) and not value.strip()


# Every response check schemathesis has for a single call but the two the module docstring
# leaves out, and the one that takes their place.
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    schema_valid_input_passes_validation,
]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_schemathesis_run_was_large_enough(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    executed = EXECUTED[database]
    if not executed:
        pytest.skip("the schemathesis test did not run (deselected)")
    total = sum(executed.values())
    with capsys.disabled():  # the figures belong in every run's log
        print(f"\nschemathesis on {database}: {total} cases over {len(executed)} operations")  # noqa: T201
        for label, count in sorted(executed.items()):
            print(f"  {count:5d}  {label}")  # noqa: T201
    operations = [r.ok().label for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert f"POST {FAULTS}" in operations
    assert sorted(executed) == sorted(operations)
    assert total >= MIN_CASES
