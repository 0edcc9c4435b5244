"""The long chaos profile (issue 9): a month of simulated traffic through broker, workers and API
for half an hour while faults keep coming, then every decision checked against the input.

The harness is the CI profile's (``tests/chaos/harness.py``, see docs/reliability.md): a broker
of the run's own, one worker, one API replica; the log (the cached simulated month of
stream_throughput.py, ~1M transactions and their labels) is replayed at the rate that spreads it
over ``--minutes``; a client calls the API a few times per second. Faults, one about every
``--every`` seconds at seeded random moments: every kind at least once (SIGKILL, SIGTERM, broker
restart, 1 -> 3 -> 1 workers, API restart), then a random mix weighted towards worker kills.

Verdict: transactions checked, lost, duplicated, decisions that differ from the offline scoring of
the same log, feature vectors that differ from the state rebuilt offline, and the API calls'
outcome. Writes results/chaos_long.{json,md,png} (throughput and lag over time, fault markers).

    .venv/bin/python benchmarks/chaos.py                                   # 30 min, ~1M
    .venv/bin/python benchmarks/chaos.py --minutes 5 --transactions 200000 # a quick look
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
for path in (str(REPO), str(ROOT)):  # run as a script: `tests.chaos` and stream_throughput
    if path not in sys.path:
        sys.path.insert(0, path)

from stream_throughput import free_ports, prepare  # noqa: E402

from tests.chaos.harness import (  # noqa: E402
    FAULT_KINDS,
    ChaosReport,
    ChaosRun,
    Sample,
    long_schedule,
)

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    minutes: float = typer.Option(30.0, help="How long the log takes to replay."),
    transactions: int = typer.Option(1_000_000, help="Size of the simulated month (about)."),
    every: float = typer.Option(75.0, help="Seconds between faults, on average."),
    seed: int = typer.Option(7, help="Seeds the fault kinds and moments."),
    api_rate: float = typer.Option(4.0, help="API calls per second."),
    name: str = typer.Option("chaos_long", help="Results file name (results/<name>.*)."),
    keep: bool = typer.Option(False, help="Keep the run's directory (broker data: GBs, logs)."),
) -> None:
    """Run the long chaos profile and write results/<name>.{json,md,png}."""
    import random

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    log, labels, registry = prepare(transactions, seed=4)
    count = max(len(FAULT_KINDS), round(minutes * 60 / every))
    schedule = long_schedule(count, random.Random(seed))
    rate = log.num_rows / (minutes * 60)
    print(f"{log.num_rows:,} transactions, {labels.num_rows:,} labels at {rate:,.0f}/s; "
          f"{count} faults: {dict(sorted(_count(schedule).items()))}", flush=True)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="chaos-", dir=ROOT / ".cache"))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} produced · {task.fields[decided]:,} decided"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("chaos", total=log.num_rows, decided=0)

        def on_sample(sample: Sample) -> None:
            progress.update(task, completed=sample.produced, decided=sample.decision_records)

        run = ChaosRun(
            log, labels, registry, root, free_ports, schedule=schedule, seed=seed, rate=rate,
            api_rate=api_rate, log=progress.console.print, on_sample=on_sample,
        )  # fmt: skip
        try:
            report = run.run()
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    write_results(report, name, minutes=minutes, requested=transactions)
    verdict = report.lost == report.duplicated == report.mismatched == 0
    print(f"{'PASS' if verdict else 'FAIL'}: {report.checked:,} checked, {report.lost} lost, "
          f"{report.duplicated} duplicated, {report.mismatched} mismatched, "
          f"{report.feature_mismatched} feature vectors differ")  # fmt: skip
    raise typer.Exit(0 if verdict else 1)


def _count(kinds: list[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for kind in kinds:
        out[kind] += 1
    return out


def write_results(report: ChaosReport, name: str, *, minutes: float, requested: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "benchmark": "chaos",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/chaos.py", *sys.argv[1:]]),
        "minutes": minutes,
        "transactions_requested": requested,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **report.to_json(),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(report, data))
    plot(report, RESULTS / f"{name}.png")
    print(f"wrote results/{name}.json, .md, .png")


def markdown(report: ChaosReport, data: dict[str, Any]) -> str:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for fault in report.faults:
        by_kind[fault.kind].append(fault.recovered_s)
    api = report.api
    lines = [
        f"# Chaos, long profile ({data['when']})",
        "",
        f"`{data['command']}` — {report.transactions:,} transactions and {report.labels:,} "
        f"labels replayed at {report.rate:,.0f}/s through a broker, worker(s) and the API while "
        f"{len(report.faults)} faults ran (seed {report.seed}); {report.seconds / 60:.1f} min in "
        f"all on {data['machine']['cpus']} shared cores.",
        "",
        "| fault | survived | recovery median (s) | recovery max (s) |",
        "|---|---:|---:|---:|",
        *(
            f"| {kind} | {len(times)} | {statistics.median(times):.1f} | {max(times):.1f} |"
            for kind, times in sorted(by_kind.items())
        ),
        "",
        "| verdict | count |",
        "|---|---:|",
        f"| transactions checked | {report.checked:,} |",
        f"| lost (no decision) | {report.lost:,} |",
        f"| duplicated (extra decisions) | {report.duplicated:,} |",
        f"| decisions differing from the offline run | {report.mismatched:,} |",
        f"| feature vectors differing from the state rebuilt offline | "
        f"{report.feature_mismatched:,} |",
        f"| feature-log rows missing / duplicated | {report.feature_rows_missing:,} / "
        f"{report.feature_rows_duplicated:,} |",
        "",
        f"API: {api['calls']:,} calls, {api['answered_2xx']:,} answered 2xx, "
        f"{api['status_5xx']} 5xx, {api['unanswered']} unanswered, "
        f"{api['retried_after_connection_errors']} retried after connection errors (API "
        f"restarts); {api['degraded']:,} degraded, {api['not_degraded']:,} not; deadline "
        f"{api['deadline_ms']:g} ms, API-side latency max {api['server_latency_ms_max']:.1f} ms, "
        f"client p50 / p99 / max {api['client_ms_p50']:.1f} / {api['client_ms_p99']:.1f} / "
        f"{api['client_ms_max']:.1f} ms; on `decisions`: {api['lost_on_topic']} lost, "
        f"{api['not_delivered_during_broker_outage']} given up by the API during a broker "
        f"restart (30 s delivery timeout, by design; "
        f"{api['not_delivered_answered_degraded']} of them answered degraded), "
        f"{api['duplicated_on_topic']} duplicated, {api['answer_differs_from_topic']} "
        f"non-degraded answers differing from the record; resent right after each API restart: "
        f"{api['resent_same_answer']} of {api['resent_after_restart']} gave the same answer. "
        f"API-side latency over deadline + 10 ms: {over_deadline(api)} calls.",
        "",
        f"Exit codes after SIGTERM: {sorted(set(report.exits.values()))}. "
        f"Examples: {report.examples[:3] or 'none'}.",
        "",
        "| t (s) | fault | recovered in (s) | detail |",
        "|---:|---|---:|---|",
        *(f"| {f.at_s:.0f} | {f.kind} | {f.recovered_s:.1f} | {f.detail} |" for f in report.faults),
        "",
    ]
    return "\n".join(lines)


def over_deadline(api: dict[str, Any]) -> int:
    return sum(1 for row in api.get("series", []) if row[1] > api["deadline_ms"] + 10)


COLORS = {
    "sigkill": "tab:red",
    "sigterm": "tab:orange",
    "broker_restart": "tab:purple",
    "scale_out_in": "tab:green",
    "api_restart": "tab:blue",
}


def plot(report: ChaosReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.array([s.t_s for s in report.samples])
    produced = np.array([s.produced for s in report.samples], dtype=float)
    decided = np.array([s.decision_records for s in report.samples], dtype=float)
    fig, (top, bottom, api) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    if len(t) > 1:
        window = 10  # seconds of smoothing: per-second counts are lumpy (batches, commits)
        kernel = np.ones(window) / window
        for values, label in ((produced, "produced /s"), (decided, "decisions visible /s")):
            rate = np.diff(values) / np.maximum(np.diff(t), 1e-9)
            top.plot(t[1:], np.convolve(rate, kernel, mode="same"), label=label, lw=1)
        bottom.plot(t, np.maximum(produced - decided, 0), color="black", lw=1)
    series = report.api.get("series", [])
    if series:
        at = np.array([row[0] for row in series])
        server = np.array([row[1] for row in series])
        degraded = np.array([row[3] for row in series], dtype=bool)
        api.scatter(at[degraded], server[degraded], s=3, color="tab:orange", label="degraded")
        api.scatter(at[~degraded], server[~degraded], s=3, color="tab:green", label="stream")
        api.axhline(report.api["deadline_ms"], color="grey", ls="--", lw=1, label="deadline")
        api.set_yscale("log")
        api.legend(loc="upper right", fontsize=7, ncol=3)
    api.set_ylabel("API latency_ms")
    seen = set()
    for fault in report.faults:
        for axis in (top, bottom, api):
            axis.axvline(
                fault.at_s,
                color=COLORS.get(fault.kind, "grey"),
                lw=1,
                alpha=0.8,
                label=fault.kind if axis is top and fault.kind not in seen else None,
            )
        seen.add(fault.kind)
    top.set_ylabel("transactions / s (10 s mean)")
    top.legend(loc="upper right", fontsize=7, ncol=2)
    bottom.set_ylabel("lag (produced − decided)")
    api.set_xlabel("seconds since the replay started")
    top.set_title(
        f"chaos: {report.checked:,} checked, {report.lost} lost, {report.duplicated} duplicated, "
        f"{report.mismatched} mismatched; {len(report.faults)} faults"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    start = time.monotonic()
    app()
