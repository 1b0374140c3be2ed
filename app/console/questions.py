"""The Ask page: a question against a namespace, its answer and why (route, evidence, timings),
or, with "search only", the passages alone."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from starlette.responses import Response

from app.console.web import (
    ConsoleDep,
    ConsoleRoute,
    FormDep,
    error_status,
    form_error,
    is_htmx,
    render,
)
from app.errors import ShoalError
from app.gateway.deps import PlatformDep, SessionDep, caller_quotas
from app.schemas.query import QueryRequest
from app.services import namespaces
from app.services.keys import QUERY, authorize_tenant_scope
from app.services.query import answer_question, search_namespace
from retrieval.errors import RetrievalError

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

MODES = ("hybrid", "dense", "lexical")


@router.get("/namespaces/{name}/ask")
def ask_page(request: Request, name: str, console: ConsoleDep, db: SessionDep) -> Response:
    access = authorize_tenant_scope(console.caller, QUERY)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    return render(request, "ask.html", namespace=namespace, form={}, modes=MODES, outcome=None)


@router.post("/namespaces/{name}/ask")
def ask(
    request: Request,
    name: str,
    console: FormDep,
    db: SessionDep,
    platform: PlatformDep,
    question: Annotated[str, Form()] = "",
    filter: Annotated[str, Form()] = "",
    top_k: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    search_only: Annotated[str, Form()] = "",
) -> Response:
    """Answer (or search) as ``POST /v1/namespaces/{ns}/query`` (``/search``) does, counted
    against the key's budgets; htmx gets the result panel alone."""
    caller = console.caller
    access = authorize_tenant_scope(caller, QUERY)
    namespace = namespaces.get_namespace(db, access=access, name=name)
    db.commit()
    form = {
        "question": question,
        "filter": filter,
        "top_k": top_k,
        "mode": mode,
        "search_only": bool(search_only),
    }
    status, outcome, error = 200, None, None
    try:
        body = QueryRequest.model_validate(
            {
                "question": question,
                "top_k": top_k.strip() or None,
                "filter": json.loads(filter) if filter.strip() else None,
                "mode": mode or None,
            }
        )
        quotas = caller_quotas(platform, caller)
        if quotas is not None:
            platform.limits.admit(quotas)  # the request budget, as every API request
        common: dict[str, Any] = {  # Any: keyword arguments of two service functions
            "access": access,
            "key_id": caller.key_id,
            "namespace_name": name,
            "question": body.question,
            "top_k": body.top_k,
            "deps": platform.query,
            "filter": body.filter,
            "overrides": {"mode": body.mode},
        }
        if search_only:
            found = search_namespace(db, **common)
            outcome = {"search_only": True, "passages": found.passages, "timings": found.timings_ms}
        else:
            result = answer_question(db, **common, quotas=quotas)
            payloads = {p.chunk_id: p.payload for p in result.passages}
            outcome = {
                "search_only": False,
                "result": result,
                "citations": [(c, payloads.get(c.chunk_id, {})) for c in result.answer.citations],
                "timings": result.timings_ms,
            }
    except json.JSONDecodeError as exc:
        status, error = 422, f"filter: not JSON ({exc.msg})"
    except ValidationError as exc:
        status, error = 422, form_error(exc)
    except (ShoalError, RetrievalError) as exc:
        status, error = error_status(exc)
    template = "_answer.html" if is_htmx(request) else "ask.html"
    return render(
        request,
        template,
        status_code=status,
        namespace=namespace,
        form=form,
        modes=MODES,
        outcome=outcome,
        error=error,
    )
