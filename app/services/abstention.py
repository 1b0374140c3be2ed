"""The evidence gate in a query: whether the passages found hold an answer, and the answer
when they do not (no backend runs, no model token is spent)."""

from __future__ import annotations

from collections.abc import Generator

from retrieval.generation.base import Delta, StreamEvent
from retrieval.generation.evidence import EvidenceGate, Verdict
from retrieval.generation.extractive import abstain
from retrieval.generation.routing import RouteChoice
from retrieval.search import Retrieved


def judge(gate: EvidenceGate | None, tenant_id: str, question: str, found: Retrieved) -> Verdict:
    """The gate's verdict on ``found``, under the search's abstention options; without a gate
    each backend decides alone whether to answer.

    Raises:
        EmbeddingUnavailableError: the model failed to embed the candidate sentences.
    """
    if gate is None:
        return Verdict(True)
    return gate.scoped(tenant_id).judge(
        question,
        found.vector,
        found.passages,
        min_score=found.options.min_score,
        threshold=found.options.evidence_threshold,
    )


def abstention(verdict: Verdict, *, streaming: bool) -> Generator[RouteChoice | StreamEvent]:
    """The events of the answer the gate abstained on, as a route's: the route (none, and why),
    the text in one piece when streaming, then the answer."""
    answer = abstain(verdict.reason or "weak_evidence")
    why = {
        "no_passages": "the search found no passage",
        "below_min_score": "no passage reaches the namespace's min_score",
    }.get(verdict.reason or "", "the passages do not hold the answer")
    if verdict.probability is not None:
        why = f"{why} (evidence {verdict.probability:.2f})"
    yield RouteChoice("none", f"abstained before generating: {why}", "none")
    if streaming:
        yield Delta(answer.text)
    yield answer
