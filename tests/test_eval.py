"""``shoal eval``: BEIR metrics, and the command end to end on a small slice of SciFact."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.db.models import Namespace
from app.services.evaluation import (
    half,
    load_beir,
    mrr_at,
    ndcg_at,
    recall_at,
    references,
    score,
)
from app.settings import Settings
from ingestion.embedder import SentenceTransformerEmbedder
from tests.data import SCIFACT


def test_ndcg_uses_graded_gains_and_log2_discounts() -> None:
    relevant = {"a": 2, "b": 1}
    ranked = ["x", "a", "b"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at(["a", "b"], relevant, 10) == pytest.approx(1.0)
    assert ndcg_at(ranked, relevant, 1) == 0.0


def test_recall_and_mrr() -> None:
    relevant = {"a": 1, "b": 1}
    assert recall_at(["x", "a", "y"], relevant, 2) == 0.5
    assert recall_at(["b", "a"], relevant, 100) == 1.0
    assert mrr_at(["x", "y", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at(["x", "y", "b"], relevant, 2) == 0.0


def test_halves_split_by_id_parity_else_by_position_in_the_queries_file(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("")
    # Integer ids whose parity disagrees with their place; x is record 2, y 4 (the unjudged
    # record counts, the blank lines do not), z 5.
    ids = ["7", "4", "x", "unjudged", "y", "z", "11"]
    (tmp_path / "queries.jsonl").write_text(
        "\n\n".join(json.dumps({"_id": q, "text": f"claim {q}"}) for q in ids) + "\n"
    )
    judged = [q for q in ids if q != "unjudged"]
    rows = "".join(f"{q}\td{q}\t1\n" for q in judged)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    data = load_beir(tmp_path)

    halves = {q: half(q, data.positions[q]) for q in data.queries}
    assert halves == {"7": "report", "4": "fit", "x": "fit", "y": "fit", "z": "report",
                      "11": "report"}  # fmt: skip
    # Scores are given on all queries and on each half: here the fitting half is all hits.
    rankings = {q: [f"d{q}"] if halves[q] == "fit" else [] for q in data.queries}
    report = score(rankings, data)
    assert report["queries"] == 6
    assert report["halves"]["fit"] == {"ndcg@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0,
                                       "queries": 3}  # fmt: skip
    assert report["halves"]["report"]["ndcg@10"] == 0.0
    assert report["ndcg@10"] == 0.5


def test_references_say_plainly_they_need_the_embedded_store(tmp_path: Path) -> None:
    data = load_beir(SCIFACT)
    settings = Settings(data_dir=tmp_path, qdrant_url="http://qdrant.invalid:6333")
    namespace = Namespace(id="absent", embedding_model="all-MiniLM-L6-v2")
    # Nothing is opened or loaded: there is no shard here, and no server either.
    report = references(
        settings, namespace, data, {}, SentenceTransformerEmbedder(settings.embedding)
    )
    assert list(report) == ["unavailable"]
    assert "SHOAL_QDRANT_URL" in report["unavailable"]


def small_beir(folder: Path, queries: int = 6, distractors: int = 40) -> Path:
    """The first judged SciFact test claims, their abstracts and some others, as BEIR files."""
    data = load_beir(SCIFACT)
    chosen = list(data.queries)[:queries]
    relevant = {d for q in chosen for d in data.qrels[q]}
    lines = (SCIFACT / "corpus.jsonl").read_text().splitlines()
    corpus = [line for line in lines if json.loads(line)["_id"] in relevant]
    corpus += [line for line in lines if json.loads(line)["_id"] not in relevant][:distractors]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": data.queries[q]}) for q in chosen) + "\n"
    )
    rows = [f"{q}\t{d}\t{s}" for q in chosen for d, s in data.qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows))
    return folder


def shoal(*args: str, cwd: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SHOAL_DATA_DIR": str(cwd / "unused"), **env_vars}
    command = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a hang guard: two runs, each loading the model twice (~1 min quiet)
def test_eval_ingests_through_the_pipeline_and_prints_json_metrics(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "mini")
    kept = tmp_path / "kept"

    # Hybrid search with reciprocal rank fusion, the fusion the raw engine reference uses.
    first = shoal("eval", str(folder), "--json", "--data-dir", str(kept), cwd=tmp_path,
                  SHOAL_RETRIEVAL__FUSION="rrf")  # fmt: skip

    assert first.returncode == 0, first.stderr
    assert "indexing" in first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["queries"] == 6
    assert report["search"]["mode"] == "hybrid"
    assert (report["search"]["fusion"], report["search"]["rrf_k"]) == ("rrf", 60)
    # Six claims among 40-odd abstracts: the relevant ones come first.
    assert report["ndcg@10"] > 0.6
    assert report["recall@100"] == 1.0
    assert 0 < report["mrr@10"] <= 1
    # The halves split the six claims by id parity, and average to the whole.
    fit, rest = report["halves"]["fit"], report["halves"]["report"]
    even = sum(int(q) % 2 == 0 for q in load_beir(folder).queries)
    assert (fit["queries"], rest["queries"]) == (even, 6 - even)
    whole = (fit["ndcg@10"] * fit["queries"] + rest["ndcg@10"] * rest["queries"]) / 6
    assert whole == pytest.approx(report["ndcg@10"], abs=1e-3)
    # The raw references, same run, same chunks. Shoal's RRF ranks as the raw engine's (one
    # hybrid query, the same k, the same candidates); the raw model finds the abstracts too.
    # (Edge orders tied RRF scores differently in each process; on this slice no tie touches
    # a relevant abstract's place in the top ten, so the figures agree exactly.)
    references = report["references"]
    assert same_scores(report, references["edge_hybrid_rrf"])
    assert references["dense_exact"]["recall@100"] == 1.0
    assert references["dense_exact"]["ndcg@10"] > 0.6

    # A kept data directory is reused: no second ingestion. Shoal's dense search is exact on a
    # shard this small, so it ranks exactly as the raw model's cosine over the same vectors.
    dense = shoal("eval", str(folder), "--json", "--data-dir", str(kept), "--mode", "dense",
                  cwd=tmp_path)  # fmt: skip
    assert dense.returncode == 0, dense.stderr
    assert "reusing namespace eval-mini" in dense.stderr
    report = json.loads(dense.stdout.strip().splitlines()[-1])
    assert report["search"]["mode"] == "dense"
    assert same_scores(report, report["references"]["dense_exact"])


def same_scores(ours: dict[str, Any], raw: dict[str, Any]) -> bool:
    """Every metric equal (to rounding), on all queries and on both halves."""

    def figures(report: dict[str, Any]) -> dict[str, float]:
        parts = {"all": report, **report["halves"]}
        metrics = ("ndcg@10", "recall@100", "mrr@10", "queries")
        return {f"{part} {m}": figures[m] for part, figures in parts.items() for m in metrics}

    assert figures(ours) == pytest.approx(figures(raw), abs=1e-3)
    return True


def test_eval_refuses_a_folder_that_is_not_beir(tmp_path: Path) -> None:
    result = shoal("eval", str(tmp_path), "--json", cwd=tmp_path)
    assert result.returncode != 0
    assert "corpus.jsonl" in result.stderr
