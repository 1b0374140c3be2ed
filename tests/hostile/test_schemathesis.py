"""Schemathesis against Shoal's own OpenAPI schema, on the real app.

Every operation gets schemathesis's examples, coverage (boundary and negative values) and
fuzzing phases, positive and negative data. Each case goes out with a real key (platform on
``/v1/admin``, a tenant admin elsewhere) so it reaches the handler, and path parameters are
sometimes swapped for real ids (a namespace with an indexed document, its job, a tenant), so
cases also hit existing resources. Destructive operations only ever reach spares: deleting the
namespace every other case uses would turn the rest of the run into 404s.

The default checks run (no 5xx; every status, content type, header and body as the schema
declares; auth not ignored; 405 with a true ``Allow``) but two, which hold the app to more than
its schema can say:

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
the last test checks it reached :data:`MIN_CASES` over every operation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.core.result import Ok
from schemathesis.hooks import HookContext
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from starlette.types import Receive, Scope, Send

from app.db.migrate import upgrade
from app.main import create_app
from app.platform import build_platform
from app.services import keys
from app.settings import Settings
from ingestion.embedder import SentenceTransformerEmbedder
from tests.api.conftest import Tenant, make_namespace, make_tenant, upload, wait_for_job
from tests.conftest import Api, make_settings
from tests.conftest import _truncate as truncate

pytestmark = pytest.mark.slow

# Fuzzing-phase examples per operation; the examples and coverage phases add their own cases.
FUZZ_EXAMPLES = 40
MIN_CASES = 2000
# Executed cases per operation label ("POST /v1/namespaces"), filled by the fuzz test.
EXECUTED: Counter[str] = Counter()


@dataclass
class World:
    """The app, and real resources for path parameters: ``main`` answers every non-admin call;
    ``spare_*`` and ``victim`` are there to be deleted or changed."""

    app: FastAPI
    api: Api
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
        return self.api.headers(key)

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
        }


DOCUMENT = (
    "Shoal indexes documents per namespace. The harbour seal rests on sandbanks at low tide. "
    "Herring gather in shoals near the coast in spring."
)


# The app under test, set by the `world` fixture. The schema below is loaded at import (pytest
# makes one test per operation while collecting), before any fixture has built an app.
APPS: list[FastAPI] = []


class CurrentApp:
    """An ASGI app passing everything to the app under test, so that schemathesis's ASGI
    transport, which every case and every re-sending check uses, reaches it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await APPS[-1](scope, receive, send)


CURRENT_APP = CurrentApp()
# The schema the cases come from: the app's own, built as `shoal serve` builds it; `world` checks
# that the app under test serves the same one. (schemathesis's `from_fixture` would load it
# lazily, but it writes `Node._nodeid`, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
schema.app = CURRENT_APP
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
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> Iterator[World]:
    """The app on a new SQLite file, then on the session's Postgres database (which takes
    what SQLite forgives: a NUL in a name, a timestamp with an offset)."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'shoal.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_database")
    settings_ = make_settings(data_dir, url)
    platform = build_platform(settings_, embedder=embedder)
    with platform.sessions() as session:
        _, platform_key = keys.create_key(session, tenant_id=None, name="test", scopes=[])
        session.commit()
    app = create_app(settings_, platform=platform)
    assert app.openapi() == schema.raw_schema
    APPS.append(app)
    # schemathesis's ASGI client runs the app's lifespan, once per app; start it now, so the
    # TestClient that sets up (no `with`: one lifespan is enough) finds the platform.
    with asgi.get_client(cast(asgi.ASGIApp, CURRENT_APP)):  # its messages are dicts, not mappings
        pass
    client = TestClient(app, raise_server_exceptions=False)
    api = Api(client=client, platform=platform, platform_key=platform_key)
    main, victim = make_tenant(api, "main"), make_tenant(api, "victim")
    make_namespace(api, main, "docs", indexed_fields={"lang": "keyword", "year": "integer"})
    make_namespace(api, main, "spare")
    accepted = upload(
        api,
        main,
        "docs",
        [
            {"text": DOCUMENT, "filename": "seals.txt", "metadata": {"lang": "en", "year": 2024}},
            {"text": "A document to delete.", "filename": "spare.txt"},
        ],
    )
    assert wait_for_job(api, main, accepted["job_id"])["state"] == "succeeded"
    spare_key = client.post(
        f"/v1/admin/tenants/{main.id}/keys",
        json={"name": "spare", "scopes": ["query"]},
        headers=api.headers(),
    )
    assert spare_key.status_code == 201, spare_key.text
    made = World(
        app=app,
        api=api,
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
    asgi.shutdown_lifespans()
    APPS.remove(app)
    client.close()
    platform.close()
    if request.param == "postgres":
        truncate(url)


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    # Real ids make some generated values repeat; that is the point, not a problem.
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_generated_input_as_declared(case: Case[Any], world: World) -> None:
    EXECUTED[case.operation.label] += 1
    case.call_and_validate(
        headers=world.headers(case.operation.path),
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
        additional_checks=[schema_valid_input_passes_validation],
    )


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


def test_the_schemathesis_run_was_large_enough(capsys: pytest.CaptureFixture[str]) -> None:
    if not EXECUTED:
        pytest.skip("the schemathesis test did not run (deselected)")
    total = sum(EXECUTED.values())
    with capsys.disabled():  # the figures belong in every run's log
        print(f"\nschemathesis: {total} cases over {len(EXECUTED)} operations")  # noqa: T201
        for label, count in sorted(EXECUTED.items()):
            print(f"  {count:5d}  {label}")  # noqa: T201
    operations = [r.ok().label for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert sorted(EXECUTED) == sorted(operations)
    assert total >= MIN_CASES
