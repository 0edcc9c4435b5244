"""Feature engine throughput: the numba kernels against their plain-Python twin, one run.

Replays a simulated log of ~1M transactions (with its labels applied at their reported_at) through
the shared feature engine, single-threaded, and times (a) the whole offline replay as `train` and
`score-log` run it, (b) the kernel alone, (c) the Python twin on a prefix (it is ~100x slower, so
a prefix keeps the run short; the rate is per transaction either way). Also reports state bytes
per card. Prints a table and writes results/feature_engine.{json,md,png}.

    .venv/bin/python benchmarks/feature_engine.py [--cards 20000 --days 30 --twin-rows 20000]
    .venv/bin/python benchmarks/feature_engine.py --transactions T --labels L --out DIR  # a log
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import typer

from scoring.features import FeatureEngine, kernels, label_events, replay_log
from training.simulator import SimulationConfig, simulate

RESULTS = Path(__file__).parent / "results"


def _time(function, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main(
    cards: int = typer.Option(20_000, help="Simulated cards (20k x 30 days is about 1M rows)."),
    days: int = typer.Option(30, help="Simulated days."),
    twin_rows: int = typer.Option(20_000, help="Rows replayed through the Python twin."),
    seed: int = typer.Option(3),
    log_transactions: Annotated[
        Path | None,
        typer.Option("--transactions", help="Replay this transactions log instead of simulating."),
    ] = None,
    log_labels: Annotated[
        Path | None, typer.Option("--labels", help="Labels for --transactions (optional).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
) -> None:
    if log_transactions is not None:
        from scoring.logs import LABEL_SCHEMA, read_labels, read_transactions

        transactions = read_transactions(log_transactions)
        labels = read_labels(log_labels) if log_labels else LABEL_SCHEMA.empty_table()
        source = f"log {log_transactions.name}"
    else:
        transactions, labels = simulate(SimulationConfig(cards=cards, days=days, seed=seed))
        source = f"simulated: {cards:,} cards x {days} days"
    n = transactions.num_rows
    twin_rows = min(twin_rows, n)
    events = label_events(transactions, labels)
    replay_log(transactions.slice(0, 1000), labels)  # compile / load the numba cache

    replay_seconds = _time(lambda: replay_log(transactions, labels))
    engine_seconds = _time(lambda: FeatureEngine().process(transactions, events))
    prefix = transactions.slice(0, twin_rows)
    prefix_events = label_events(prefix, labels)
    twin_seconds = _time(
        lambda: FeatureEngine(pure_python=True).process(prefix, prefix_events), repeat=1
    )
    numba_prefix = _time(lambda: FeatureEngine().process(prefix, prefix_events))

    engine = FeatureEngine()
    engine.process(transactions, events)
    per_card = (kernels.CARD_F + kernels.CARD_I) * 8
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "cores": __import__("os").cpu_count(),
        },
        "source": source,
        "transactions": n,
        "label_events": events.num_rows,
        "offline_replay_tx_per_s": n / replay_seconds,
        "engine_process_tx_per_s": n / engine_seconds,
        "numba_prefix_tx_per_s": twin_rows / numba_prefix,
        "python_twin_tx_per_s": twin_rows / twin_seconds,
        "numba_over_twin": (twin_rows / numba_prefix) / (twin_rows / twin_seconds),
        "state_bytes_per_card_arrays": per_card,
        "cards": len(engine.cards),
        "state_bytes_total": engine.memory_bytes(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "feature_engine.json").write_text(json.dumps(results, indent=2))
    rows = [
        ("replay_log: label join + kernel, numba", results["offline_replay_tx_per_s"]),
        ("engine.process (kernel + key lookups), numba", results["engine_process_tx_per_s"]),
        (f"same, first {twin_rows:,} rows, numba", results["numba_prefix_tx_per_s"]),
        (f"same, first {twin_rows:,} rows, Python twin", results["python_twin_tx_per_s"]),
    ]  # fmt: skip
    lines = [
        "# Feature engine throughput",
        "",
        f"{n:,} transactions ({source}) + {events.num_rows:,} label events, single thread. "
        f"Command: `.venv/bin/python benchmarks/feature_engine.py {' '.join(sys.argv[1:])}`.",
        "",
        "| path | transactions/s |",
        "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in rows],
        "",
        f"numba / Python twin: **{results['numba_over_twin']:.0f}x**. State: "
        f"{per_card} bytes per card in the arrays (+ its key in the slot map).",
    ]
    (out / "feature_engine.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "feature_engine.png")
    print("\n".join(lines))


def _plot(rows: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#3b75af")
    ax.set_xscale("log")
    ax.set_xlabel("transactions per second (log)")
    ax.set_title("Feature engine: numba vs Python twin")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    np.seterr(all="ignore")
    _ = pa  # the engine works on Arrow tables
    typer.run(main)
