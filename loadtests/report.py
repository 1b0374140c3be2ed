"""Read what a locust run left (``--json-file``, ``--csv``, ``--csv-full-history``) and write the
load report (markdown) and the latency plot (PNG).

Figures over the measured window come from locust's JSON: it holds each endpoint's whole
response-time histogram, so ``/query`` and ``/search`` can be merged into one "questions" row
with exact percentiles. The plot comes from the per-second stats history CSV, whose percentiles
are locust's 10-second sliding window.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

QUESTIONS = ("/v1/namespaces/[ns]/query", "/v1/namespaces/[ns]/search")
UPLOADS = "/v1/namespaces/[ns]/documents"
RATE_LIMITED = " [429]"
GOAL_QPS = 50.0
GOAL_P99_MS = 250.0
METRIC = re.compile(r"^(?P<name>\w+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$", re.MULTILINE)
STAGES = ("embed", "search", "generate")


@dataclass
class Row:
    """One endpoint (or a merge of several) over the measured window."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class Step:
    """One run of locust at one user count."""

    users: int
    window_s: float
    rows: list[Row]
    questions: Row
    rate_limited: int
    errors: Counter[str] = field(default_factory=Counter)
    warmup_failures: int = 0
    server: ServerMetrics | None = None
    load_before: float = 0.0

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.rows)

    @property
    def meets_goal(self) -> bool:
        return (
            self.questions.rps >= GOAL_QPS
            and self.questions.p99_ms < GOAL_P99_MS
            and self.failures == 0
            and self.warmup_failures == 0
        )


def percentile(histogram: Counter[int], q: float) -> float:
    """The q-quantile (0-1) of a {response time ms: count} histogram, as locust computes it."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    above = 0
    for value in sorted(histogram, reverse=True):
        above += histogram[value]
        if total - above <= int(total * q):
            return float(value)
    return float(min(histogram))


def read_step(prefix: Path, users: int) -> Step:
    """The figures of one run whose locust files start with ``prefix``."""
    entries = json.loads(Path(f"{prefix}.json").read_text())
    start = min(e["start_time"] for e in entries) if entries else 0.0
    end = max((e["last_request_timestamp"] or start) for e in entries) if entries else 0.0
    window_s = max(end - start, 1e-9)

    # Any: locust's JSON (its StatsEntryDict, with the histogram's keys turned into strings).
    def row(name: str, chosen: list[dict[str, Any]]) -> Row:
        histogram: Counter[int] = Counter()
        for entry in chosen:
            histogram.update({int(ms): int(n) for ms, n in entry["response_times"].items()})
        requests = sum(int(e["num_requests"]) for e in chosen)
        return Row(
            name=name,
            requests=requests,
            failures=sum(int(e["num_failures"]) for e in chosen),
            rps=requests / window_s,
            p50_ms=percentile(histogram, 0.50),
            p95_ms=percentile(histogram, 0.95),
            p99_ms=percentile(histogram, 0.99),
            max_ms=max(histogram, default=0),
        )

    rows = [row(e["name"], [e]) for e in sorted(entries, key=lambda e: e["name"])]
    served = [e for e in entries if e["name"] in QUESTIONS]
    errors: Counter[str] = Counter()
    with open(f"{prefix}_failures.csv") as failures:
        for failure in csv.DictReader(failures):
            errors[f"{failure['Name']}: {failure['Error']}"] += int(failure["Occurrences"])
    return Step(
        users=users,
        window_s=window_s,
        rows=rows,
        questions=row("questions (/query + /search)", served),
        rate_limited=sum(r.requests for r in rows if r.name.endswith(RATE_LIMITED)),
        errors=errors,
        warmup_failures=_warmup_failures(Path(f"{prefix}_stats_history.csv")),
    )


def _history(path: Path) -> list[dict[str, str]]:
    with path.open() as rows:
        return list(csv.DictReader(rows))


def _warmup_failures(path: Path) -> int:
    """Failures counted before the warm-up reset (the JSON no longer has them): the aggregated
    failure count just before the request count first drops."""
    previous = (0, 0)
    for row in _history(path):
        if row["Name"] != "Aggregated":
            continue
        total = (int(row["Total Request Count"]), int(row["Total Failure Count"]))
        if total[0] < previous[0]:
            return previous[1]
        previous = total
    return 0


@dataclass
class ServerMetrics:
    """What the server's ``/metrics`` said at the end of a run (warm-up included)."""

    query_hit_rate: float | None
    stage_ms: dict[str, float]  # mean wall time of each query stage


def read_metrics(text: str) -> ServerMetrics:
    """The question-embedding cache's hit rate and the mean time of each query stage (embed,
    search, generate: the extractive answer, which embeds sentences) from ``/metrics`` text."""
    series: dict[tuple[str, str, str], float] = {}
    for match in METRIC.finditer(text):
        labels: dict[str, str] = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (match["name"], labels.get("use", labels.get("stage", "")), labels.get("result", ""))
        series[key] = series.get(key, 0.0) + float(match["value"])
    cache = "shoal_embedding_cache_requests_total"
    hits, misses = (
        series.get((cache, "query", "hit"), 0.0),
        series.get((cache, "query", "miss"), 0.0),
    )
    stage_ms = {}
    for stage in STAGES:
        count = series.get(("shoal_stage_duration_seconds_count", stage, ""), 0.0)
        total_s = series.get(("shoal_stage_duration_seconds_sum", stage, ""), 0.0)
        if count:
            stage_ms[stage] = total_s / count * 1000
    return ServerMetrics(hits / (hits + misses) if hits + misses else None, stage_ms)


def best(steps: list[Step]) -> Step:
    """The step with the most questions a second among those meeting the goal's latency and
    error bounds; failing that, the one with the most questions a second."""
    within = [
        s
        for s in steps
        if s.questions.requests  # none answered at all is a stall, not a fast server
        and s.questions.p99_ms < GOAL_P99_MS
        and not (s.failures or s.warmup_failures)
    ]
    return max(within or steps, key=lambda s: s.questions.rps)


def markdown(steps: list[Step], *, machine: str, setup: str) -> str:
    """The report: the sweep (one line per user count), then each step's endpoints."""
    chosen = best(steps)
    lines = [
        "# Load test report (`make load`, `loadtests/run.py`)",
        "",
        f"Machine: {machine}",
        "",
        setup,
        "",
        f"Goal: at least {GOAL_QPS:.0f} questions/s (`/query` + `/search`) with p99 under "
        f"{GOAL_P99_MS:.0f} ms and no errors other than deliberate `429`s.",
        "",
        "| users | questions/s | p50 ms | p95 ms | p99 ms | uploads/s | errors | 429 | "
        "query-embedding cache hits | load avg before | goal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        uploads = next((r.rps for r in s.rows if r.name == UPLOADS), 0.0)
        rate = s.server.query_hit_rate if s.server else None
        hits = "n/a" if rate is None else f"{rate:.0%}"
        mark = "**met**" if s.meets_goal else "not met"
        best_mark = " (best)" if s is chosen and len(steps) > 1 else ""
        lines.append(
            f"| {s.users}{best_mark} | {s.questions.rps:.1f} | {s.questions.p50_ms:.0f} | "
            f"{s.questions.p95_ms:.0f} | {s.questions.p99_ms:.0f} | {uploads:.2f} | "
            f"{s.failures + s.warmup_failures} | {s.rate_limited} | {hits} | "
            f"{s.load_before:.2f} | {mark} |"
        )
    for s in steps:
        lines += [
            "",
            f"## {s.users} users ({s.window_s:.0f} s measured)",
            "",
            "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in [*s.rows, s.questions]:
            lines.append(
                f"| `{r.name}` | {r.requests} | {r.failures} | {r.rps:.2f} | {r.p50_ms:.0f} | "
                f"{r.p95_ms:.0f} | {r.p99_ms:.0f} | {r.max_ms:.0f} |"
            )
        if s.server and s.server.stage_ms:
            stages = ", ".join(f"{k} {v:.1f} ms" for k, v in s.server.stage_ms.items())
            lines.append(f"\nServer, mean time per question and stage (whole run): {stages}.")
        if not s.questions.requests:
            lines.append(
                "\nNo question was answered in the measured window: the server stalled "
                "(requests still in flight when the run ended are not counted)."
            )
        if s.warmup_failures:
            lines.append(f"\nFailures during the warm-up (not in the table): {s.warmup_failures}")
        if s.errors:
            lines += ["", "Errors:", ""]
            lines += [f"- {message} ({n} times)" for message, n in s.errors.most_common(10)]
    return "\n".join(lines) + "\n"


def plot(history_csv: Path, png: Path, *, warmup_s: float, title: str) -> None:
    """Latency percentiles of the question endpoints and requests/s over time, from locust's
    full stats history (one row per endpoint per second)."""
    rows = _history(history_csv)
    if not rows:
        return
    t0 = int(rows[0]["Timestamp"])
    fig, (latency, rate) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name, colour in zip(QUESTIONS, ("tab:blue", "tab:orange"), strict=True):
        # 0 and N/A: no request in the window yet (the start, and right after the warm-up reset).
        mine = [r for r in rows if r["Name"] == name and r["50%"] not in ("N/A", "0")]
        seconds = [int(r["Timestamp"]) - t0 for r in mine]
        for column, style in (("50%", ":"), ("95%", "--"), ("99%", "-")):
            label = f"{name.rsplit('/', 1)[1]} p{column[:-1]}"
            values = [float(r[column]) for r in mine]
            latency.plot(seconds, values, style, color=colour, label=label, marker=".")
    latency.axhline(GOAL_P99_MS, color="red", linewidth=0.8, label=f"goal p99 {GOAL_P99_MS:.0f} ms")
    latency.set_yscale("log")
    latency.set_ylabel("latency, ms (10 s window, log scale)")
    latency.set_title(title)
    latency.legend(ncol=4, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.02))
    names = sorted({r["Name"] for r in rows} - {"Aggregated"})
    for name in [*names, "Aggregated"]:
        mine = [r for r in rows if r["Name"] == name]
        label = "all requests" if name == "Aggregated" else name.replace("/v1/namespaces/[ns]/", "")
        seconds, rates = _rates(
            [(int(r["Timestamp"]) - t0, int(r["Total Request Count"])) for r in mine]
        )
        rate.plot(seconds, rates, color="black" if name == "Aggregated" else None, label=label)
    rate.set_ylabel("requests/s")
    rate.set_xlabel("seconds since the users started")
    users = rate.twinx()
    everyone = [r for r in rows if r["Name"] == "Aggregated"]
    users.plot(
        [int(r["Timestamp"]) - t0 for r in everyone],
        [int(r["User Count"]) for r in everyone],
        color="grey",
        linestyle="--",
        linewidth=0.8,
    )
    users.set_ylabel("users (dashed)")
    rate.legend(fontsize="small", loc="upper left")
    for axis in (latency, rate):
        if warmup_s:
            axis.axvspan(0, warmup_s, color="grey", alpha=0.15)
        axis.grid(alpha=0.3)
    if warmup_s:
        for axis in (latency, rate):
            top = axis.get_xaxis_transform()  # x in data, y in axis fractions
            axis.text(warmup_s / 2, 0.5, "warm-up", transform=top, ha="center", va="center")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _rates(counts: list[tuple[int, int]], window_s: int = 5) -> tuple[list[int], list[float]]:
    """Requests/s over the last ``window_s`` seconds, from (second, cumulative count) samples.

    Locust's own "Requests/s" column leaves out the last two seconds and reads 0 for a while
    after the warm-up reset; differences of the cumulative count do neither. A count that drops
    is the reset: the window starts again there.
    """
    seconds: list[int] = []
    rates: list[float] = []
    start = 0
    for i, (second, count) in enumerate(counts):
        if i and count < counts[i - 1][1]:
            start = i
        first = max(start, next(j for j in range(i + 1) if counts[j][0] >= second - window_s))
        elapsed = second - counts[first][0]
        if elapsed > 0:
            seconds.append(second)
            rates.append((count - counts[first][1]) / elapsed)
    return seconds, rates
