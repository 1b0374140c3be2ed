"""Abstention: does Shoal answer when the documents hold the answer, and say so when not?

    python -m bench.abstention [--queries 100] [--distractors 900]

A protocol that needs no extra data. Take SciFact test claims; namespace ``with`` holds their
relevant abstracts plus ``--distractors`` other abstracts, namespace ``without`` holds only the
distractors. Every claim is asked of both through the query service with the default settings
(hybrid search, extractive answers, the calibrated minimum score). A claim asked of ``with``
should be answered (better: citing a relevant abstract); asked of ``without`` it should
abstain. Balanced accuracy = (answered rate in ``with`` + abstained rate in ``without``) / 2.

Distractors are the first abstracts of the corpus that are relevant to none of the chosen
claims; some may still be on the same topic, which is the hard, honest case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from sqlalchemy import select

from app.db.migrate import upgrade
from app.db.models import Document
from app.logging import configure_logging
from app.platform import Platform, build_platform
from app.services import evaluation, keys, tenants
from app.services.query import answer_question
from app.settings import Settings
from bench.ingest import describe_machine

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def make_namespace(platform: Platform, tenant_id: str, name: str, records: list[bytes]) -> None:
    namespace = evaluation.scratch_namespace(platform, tenant_id, name)
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as corpus:
        corpus.write(b"\n".join(records) + b"\n")
        corpus.flush()
        indexed, failed = evaluation.ingest_corpus(platform, namespace, Path(corpus.name))
    print(f"# {name}: {indexed} indexed, {failed} failed", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--distractors", type=int, default=900)
    args = parser.parse_args()

    data = evaluation.load_beir(args.data)
    chosen = list(data.queries)[: args.queries]
    relevant = {doc for q in chosen for doc in data.qrels[q]}
    records = {
        str(json.loads(line)["_id"]): line
        for line in (args.data / "corpus.jsonl").read_bytes().splitlines()
        if line.strip()
    }
    distractors = [r for doc, r in records.items() if doc not in relevant][: args.distractors]
    with tempfile.TemporaryDirectory(prefix="shoal-bench-abstain-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        configure_logging("WARNING")
        upgrade(settings.resolved_database_url)
        platform = build_platform(settings)
        try:
            with platform.sessions() as session:
                tenant_id = tenants.create_tenant(session, name="bench", quotas={}).id
                key_id = keys.create_key(
                    session, tenant_id=tenant_id, name="bench", scopes=["query"]
                )[0].id
                session.commit()
            make_namespace(
                platform, tenant_id, "with", [records[d] for d in relevant] + distractors
            )
            make_namespace(platform, tenant_id, "without", distractors)
            outcome = {"with": 0, "with_relevant": 0, "without": 0}
            with platform.sessions() as session:
                external = dict(session.execute(select(Document.id, Document.external_id)).all())
            for name in ("with", "without"):
                for query_id in chosen:
                    with platform.sessions() as session:
                        result = answer_question(
                            session,
                            tenant_id=tenant_id,
                            key_id=key_id,
                            namespace_name=name,
                            question=data.queries[query_id],
                            top_k=None,
                            deps=platform.query,
                        )
                    cited = {external[c.document_id] for c in result.answer.citations}
                    if name == "with" and result.answer.answerable:
                        outcome["with"] += 1
                        outcome["with_relevant"] += bool(cited & set(data.qrels[query_id]))
                    elif name == "without" and not result.answer.answerable:
                        outcome["without"] += 1
        finally:
            platform.close()

    n = len(chosen)
    answered, abstained = outcome["with"] / n, outcome["without"] / n
    print(f"machine: {describe_machine()}")
    print(f"claims: {n}; with: {len(relevant)} relevant + {len(distractors)} distractors")
    print("| measure | value |\n|---|---|")
    print(f"| answered when the documents hold the answer | {answered:.3f} |")
    print(f"| ... citing a relevant abstract | {outcome['with_relevant'] / n:.3f} |")
    print(f"| abstained when they do not | {abstained:.3f} |")
    print(f"| balanced accuracy | {(answered + abstained) / 2:.3f} |")


if __name__ == "__main__":
    main()
