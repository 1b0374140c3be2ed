"""``shoal eval``: BEIR metrics, and the command end to end on a small slice of SciFact."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.services.evaluation import load_beir, mrr_at, ndcg_at, recall_at

SCIFACT = Path("/work/shared/data/scifact")


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


def shoal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SHOAL_DATA_DIR": str(cwd / "unused")}
    command = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_eval_ingests_through_the_pipeline_and_prints_json_metrics(tmp_path: Path) -> None:
    folder = small_beir(tmp_path / "mini")
    kept = tmp_path / "kept"

    first = shoal("eval", str(folder), "--json", "--data-dir", str(kept), cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert "indexing" in first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["queries"] == 6
    assert report["search"]["mode"] == "hybrid"
    # Six claims among 40-odd abstracts: the relevant ones come first.
    assert report["ndcg@10"] > 0.6
    assert report["recall@100"] == 1.0
    assert 0 < report["mrr@10"] <= 1
    # A kept data directory is reused: no second ingestion, and dense search scores too.
    again = shoal("eval", str(folder), "--json", "--data-dir", str(kept), "--mode", "dense",
                  cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["search"]["mode"] == "dense"
    assert "reusing namespace eval-mini" in again.stderr


def test_eval_refuses_a_folder_that_is_not_beir(tmp_path: Path) -> None:
    result = shoal("eval", str(tmp_path), "--json", cwd=tmp_path)
    assert result.returncode != 0
    assert "corpus.jsonl" in result.stderr
