"""Fit the evidence gate (retrieval/generation/evidence.py) for an embedding model.

    python -m bench.calibrate [--data BEIR_DIR] [--distractors 900] [--data-dir DIR]

The protocol is bench/abstention.py's, over every judged claim: namespace ``with`` holds the
claims' relevant documents plus ``--distractors`` others, namespace ``without`` only those
others. Each claim asked of ``with`` should be answered, of ``without`` abstained on. The gate's
signals are measured for every (claim, namespace) pair through the real search, then

- the claims are split once, by a fixed rule: **even query ids fit, odd query ids report**
  (ids that are not integers go by the parity of their position in ``queries.jsonl``);
- a logistic model is fitted on the fitting half (Newton's method, a small L2 penalty);
- its threshold is the one that maximises balanced accuracy on the fitting half while still
  answering at least ``--answer-rate`` of its answerable claims (0.97: two points above the
  0.95 goal, so that a threshold picked at the edge of one sample holds on another);
- a floor on the best passage's cosine: the fitting half's lowest for an answerable claim, less
  0.05 (below it the passages are about something else; see ``GateModel.passage_floor``);
- both halves are reported; nothing is chosen on the reporting half.

It prints a ``GateModel(...)`` to paste into ``retrieval/generation/evidence.py`` (with the
figures beside it) and writes the signals it fitted on to ``--features`` (CSV), so a re-fit with
another rule needs no re-indexing. A new embedding model needs only this command.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt

from app.services import evaluation
from bench.abstention import SCIFACT, Protocol, open_protocol
from bench.ingest import describe_machine
from retrieval.generation.evidence import Evidence, GateModel

_NAMES = tuple(Evidence.__dataclass_fields__)
# The passage floor sits this far under the fitting half's weakest answerable best passage.
FLOOR_MARGIN = 0.05


def fits(query_id: str, position: int) -> bool:
    """The project's fixed split (:func:`app.services.evaluation.half`, which ``shoal eval``
    reports by too): even query ids fit, odd ones report (position parity for other ids)."""
    return evaluation.half(query_id, position) == "fit"


def fit_logistic(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], *, l2: float = 1e-2
) -> tuple[npt.NDArray[np.float64], float]:
    """Weights and bias of a logistic regression of ``y`` on ``x`` (Newton's method on
    standardised features, a small L2 penalty so separable data still converges)."""
    mean, spread = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / spread])
    w = np.zeros(z.shape[1])
    penalty = l2 * np.diag([0.0, *([1.0] * (z.shape[1] - 1))])
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = (z.T * (p * (1 - p))) @ z + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    weights = w[1:] / spread
    return weights, float(w[0] - np.sum(w[1:] * mean / spread))


def rates(
    p: npt.NDArray[np.float64], y: npt.NDArray[np.float64], bar: float
) -> tuple[float, float]:
    """(answered with the evidence present, abstained without it) at threshold ``bar``."""
    return float((p[y == 1] >= bar).mean()), float((p[y == 0] < bar).mean())


def choose_threshold(
    p: npt.NDArray[np.float64], y: npt.NDArray[np.float64], answer_rate: float
) -> float:
    best = (-1.0, 0.0)
    for bar in np.unique(p):
        answered, abstained = rates(p, y, bar)
        if answered >= answer_rate and (answered + abstained) / 2 > best[0]:
            best = ((answered + abstained) / 2, float(bar))
    return best[1]


def measure_all(protocol: Protocol) -> list[dict[str, object]]:
    """The gate's signals for every claim in both namespaces."""
    rows: list[dict[str, object]] = []
    for name in ("with", "without"):
        for position, query_id in enumerate(protocol.claims):
            found = protocol.retrieve(name, query_id)
            if not found.passages:
                continue
            evidence = protocol.gate.measure(
                protocol.data.queries[query_id], found.vector, found.passages
            )
            rows.append(
                {
                    "query_id": query_id,
                    "half": "fit" if fits(query_id, position) else "report",
                    "present": int(name == "with"),
                    **asdict(evidence),
                }
            )
        print(f"# measured {name}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--distractors", type=int, default=900)
    parser.add_argument("--data-dir", type=Path, help="keep (or reuse) the indexed namespaces here")
    parser.add_argument("--features", type=Path, default=Path("bench/calibration.csv"))
    parser.add_argument("--from-features", action="store_true", help="fit on --features as is")
    parser.add_argument("--answer-rate", type=float, default=0.97)
    args = parser.parse_args()

    if not args.from_features:
        with open_protocol(args.data, None, args.distractors, args.data_dir) as protocol:
            rows = measure_all(protocol)
        with args.features.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with args.features.open() as source:
        table = list(csv.DictReader(source))

    x = np.array([[float(r[n]) for n in _NAMES] for r in table])
    y = np.array([float(r["present"]) for r in table])
    fit = np.array([r["half"] == "fit" for r in table])
    weights, bias = fit_logistic(x[fit], y[fit])
    p = 1 / (1 + np.exp(-(x @ weights + bias)))
    bar = choose_threshold(p[fit], y[fit], args.answer_rate)
    passage = x[:, _NAMES.index("passage")]
    floor = round(float(passage[fit & (y == 1)].min()) - FLOOR_MARGIN, 4)
    model = GateModel(
        tuple(round(float(w), 4) for w in weights),  # type: ignore[arg-type]
        round(bias, 4),
        round(bar, 4),
        floor,
    )
    answers = np.array([model.answers(Evidence(*row)) for row in x])

    print(f"machine: {describe_machine()}")
    print(f"pairs: {len(table)} ({int(fit.sum())} fit, {int((~fit).sum())} report)")
    print(f"signals: {', '.join(_NAMES)}")
    print(f"fitted: {model!r}")
    print("| half | answered with evidence | abstained without | balanced accuracy |")
    print("|---|---|---|---|")
    for half, mask in (("fit (even ids)", fit), ("report (odd ids)", ~fit)):
        answered = float(answers[mask & (y == 1)].mean())
        abstained = float(1 - answers[mask & (y == 0)].mean())
        print(f"| {half} | {answered:.3f} | {abstained:.3f} | {(answered + abstained) / 2:.3f} |")
    print("\ncurve on the fitting half (threshold: answered / abstained / balanced):")
    for step in np.linspace(0.05, 0.95, 19):
        answered, abstained = rates(p[fit], y[fit], float(step))
        print(f"  {step:.2f}: {answered:.3f} / {abstained:.3f} / {(answered + abstained) / 2:.3f}")


if __name__ == "__main__":
    main()
