"""Abstention: does Shoal answer when the documents hold the answer, and say so when not?

    python -m bench.abstention [--queries N] [--distractors 900] [--data-dir DIR]

A protocol that needs no extra data. Take SciFact's judged claims; namespace ``with`` holds
their relevant abstracts plus ``--distractors`` other abstracts, namespace ``without`` holds only
the distractors. Every claim is asked of both through the query service with the default
settings (hybrid search, the evidence gate, extractive answers). A claim asked of ``with``
should be answered (better: citing a relevant abstract); asked of ``without`` it should
abstain. Balanced accuracy = (answered rate in ``with`` + abstained rate in ``without``) / 2.

The claims are reported in the two halves ``bench/calibrate.py`` splits them into (even query
ids fitted the gate, odd ids did not): only the odd half is out of sample. Off-topic questions
(cooking, sport, travel, ...) are asked of ``with`` too, and must all abstain.

Distractors are the first abstracts of the corpus that are relevant to none of the chosen
claims; many are on a neighbouring biomedical topic, which is the hard, honest case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from sqlalchemy import select

from app.db.migrate import upgrade
from app.db.models import Document, Namespace, Tenant
from app.logging import configure_logging
from app.platform import Platform, build_platform
from app.services import evaluation, keys, tenants
from app.services.answers import QueryResult
from app.services.evaluation import BeirData
from app.services.keys import TenantAccess
from app.services.query import answer_question
from app.services.search import retrieve
from app.settings import Settings
from bench.ingest import describe_machine
from retrieval.generation.evidence import EvidenceGate
from retrieval.search import Retrieved

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"

# Questions no biomedical abstract answers; every one must abstain.
OFF_TOPIC = (
    "How long should I knead bread dough by hand?",
    "What is a good substitute for buttermilk in pancakes?",
    "How do I make a risotto creamy without cream?",
    "Who won the FIFA World Cup in 2014?",
    "How many players are on a rugby union team?",
    "What is the offside rule in football?",
    "What documents do I need to travel from the EU to Japan?",
    "Which is the cheapest month to fly to Lisbon?",
    "How do I reset my home Wi-Fi router?",
    "How do I undo the last git commit?",
    "What is the capital of Australia?",
    "How many vacation days do employees get by default?",
)


@dataclass
class Protocol:
    """The two namespaces, the claims, and the platform that answers them."""

    data: BeirData
    claims: list[str]
    platform: Platform
    tenant_id: str
    key_id: str
    namespaces: dict[str, Namespace]
    external: dict[str, str]  # document id → corpus id

    @property
    def gate(self) -> EvidenceGate:
        gate = self.platform.query.gate
        assert gate is not None  # noqa: S101 (the platform always builds one)
        return gate

    def retrieve(self, name: str, query_id: str) -> Retrieved:
        with self.platform.sessions() as session:
            return retrieve(
                session,
                self.platform.query.searcher,
                self.namespaces[name],
                question=self.data.queries[query_id],
                top_k=self.platform.query.default_top_k,
            )

    def answer(self, name: str, question: str) -> QueryResult:
        with self.platform.sessions() as session:
            return answer_question(
                session,
                access=TenantAccess(self.tenant_id),
                key_id=self.key_id,
                namespace_name=name,
                question=question,
                top_k=None,
                deps=self.platform.query,
            )


@contextmanager
def open_protocol(
    data_dir: Path, queries: int | None, distractors: int, keep: Path | None
) -> Iterator[Protocol]:
    """Index (or, with ``keep`` already indexed, reopen) the protocol's two namespaces."""
    data = evaluation.load_beir(data_dir)
    claims = list(data.queries)[:queries]
    relevant = {doc for q in claims for doc in data.qrels[q]}
    records = {
        str(json.loads(line)["_id"]): line
        for line in (data_dir / "corpus.jsonl").read_bytes().splitlines()
        if line.strip()
    }
    others = [r for doc, r in records.items() if doc not in relevant][:distractors]
    with tempfile.TemporaryDirectory(prefix="shoal-bench-abstain-") as tmp:
        root = keep or Path(tmp)
        fresh = not (root / "shoal.db").exists()
        settings = Settings(data_dir=root)
        configure_logging("WARNING")
        upgrade(settings.resolved_database_url)
        platform = build_platform(settings)
        try:
            if fresh:
                with platform.sessions() as session:
                    tenants.create_tenant(session, name="bench", quotas={})
                    session.commit()
            with platform.sessions() as session:
                tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == "bench")).one()
                key_id = keys.create_key(
                    session, tenant_id=tenant_id, name="bench", scopes=["query"]
                )[0].id
                session.commit()
            if fresh:
                _index(platform, tenant_id, "with", [records[d] for d in relevant] + others)
                _index(platform, tenant_id, "without", others)
            with platform.sessions() as session:
                external = {
                    doc: str(corpus_id)
                    for doc, corpus_id in session.execute(
                        select(Document.id, Document.external_id)
                    ).all()
                }
                spaces = {n.name: n for n in session.scalars(select(Namespace))}
                session.expunge_all()
            yield Protocol(data, claims, platform, tenant_id, key_id, spaces, external)
        finally:
            platform.close()


def _index(platform: Platform, tenant_id: str, name: str, records: list[bytes]) -> None:
    namespace = evaluation.scratch_namespace(platform, tenant_id, name)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as corpus:
        corpus.write(b"\n".join(records) + b"\n")
        corpus.flush()
        indexed, failed = evaluation.ingest_corpus(platform, namespace, Path(corpus.name))
    print(f"# {name}: {indexed} indexed, {failed} failed", file=sys.stderr)


def main() -> None:
    from bench.calibrate import fits

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--queries", type=int, default=None, help="the first N claims (all)")
    parser.add_argument("--distractors", type=int, default=900)
    parser.add_argument("--data-dir", type=Path, help="keep (or reuse) the indexed namespaces here")
    parser.add_argument(
        "--decisions", type=Path, help="write each question's decisions here (JSON lines)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="another run's --decisions file: print how many decisions agree with it",
    )
    args = parser.parse_args()
    decisions: list[dict[str, object]] = []

    halves: dict[str, dict[str, int]] = {}
    with open_protocol(args.data, args.queries, args.distractors, args.data_dir) as protocol:
        for position, query_id in enumerate(protocol.claims):
            half = halves.setdefault(
                "fit" if fits(query_id, position) else "report",
                {"n": 0, "answered": 0, "cited": 0, "abstained": 0},
            )
            half["n"] += 1
            question = protocol.data.queries[query_id]
            present = protocol.answer("with", question).answer
            if present.answerable:
                half["answered"] += 1
                cited = {protocol.external[c.document_id] for c in present.citations}
                half["cited"] += bool(cited & set(protocol.data.qrels[query_id]))
            absent = protocol.answer("without", question).answer
            half["abstained"] += not absent.answerable
            decisions.append(
                {"id": query_id, "with": present.answerable, "without": absent.answerable}
            )
        off_topic = [protocol.answer("with", q).answer.answerable for q in OFF_TOPIC]
        decisions += [{"id": q, "with": a} for q, a in zip(OFF_TOPIC, off_topic, strict=True)]

    print(f"machine: {describe_machine()}")
    print(f"claims: {len(protocol.claims)}; distractors: {args.distractors}")
    print(
        "| half | claims | answered with evidence | ... citing a relevant abstract "
        "| abstained without | balanced accuracy |"
    )
    print("|---|---|---|---|---|---|")
    for name, label in (("fit", "fit (even ids)"), ("report", "report (odd ids)")):
        h = halves.get(name)
        if not h:
            continue
        answered, abstained = h["answered"] / h["n"], h["abstained"] / h["n"]
        print(
            f"| {label} | {h['n']} | {answered:.3f} | {h['cited'] / h['n']:.3f} "
            f"| {abstained:.3f} | {(answered + abstained) / 2:.3f} |"
        )
    print(f"off-topic questions abstained: {off_topic.count(False)} of {len(OFF_TOPIC)}")
    if args.decisions:
        args.decisions.write_text("".join(json.dumps(d) + "\n" for d in decisions))
    if args.compare:
        print(agreement(decisions, args.compare))


def agreement(decisions: list[dict[str, object]], other: Path) -> str:
    """How many answer-or-abstain decisions this run shares with ``other``'s, question by
    question and namespace by namespace (e.g. the same protocol on another embedding runtime)."""
    theirs = {
        (d["id"], where): d[where]
        for d in map(json.loads, other.read_text().splitlines())
        for where in ("with", "without")
        if where in d
    }
    ours = {(d["id"], w): d[w] for d in decisions for w in ("with", "without") if w in d}
    shared = ours.keys() & theirs.keys()
    same = sum(ours[k] == theirs[k] for k in shared)
    return f"decisions shared with {other}: {same} of {len(shared)} ({same / len(shared):.3f})"


if __name__ == "__main__":
    main()
