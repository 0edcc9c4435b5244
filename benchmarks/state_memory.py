"""Memory of the per-card feature state: how it grows with the cards, and what bounds it.

Replays a synthetic stream of always-new cards through the feature engine (``process``,
the call the stream worker makes for every released step, with the worker's configuration:
``EngineConfig.from_settings(...).reserved()``) and records the process's resident memory (VmRSS)
and the engine's own accounting (``memory_bytes``: rows of the state arrays in use) at 1M, 2M, 5M
and 10M cards, then keeps sending new cards past the cap to show the memory stays flat.

The stream is synthetic rather than simulated (the simulator would need hours for 10M cards):
each card makes two transactions a few minutes apart, at one of 50k merchants and 100k terminals,
in time order at ~60 cards per second of event time; card ids look like bank tokens
(``tok_k1_`` + 26 characters), since the key map's memory depends on their length. State per card
does not depend on how many transactions it made (fixed-size rows), so this is the worst case per
transaction. A second run uses no cap and a 2-day TTL to show the TTL alone bounds memory on a
stream of always-new cards.

    nice -n 10 .venv/bin/python benchmarks/state_memory.py [--cards 10000000] [--cap 10000000]

Writes results/state_memory.{json,md,png}. Each run is a fresh subprocess, so RSS starts clean.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import typer

RESULTS = Path(__file__).parent / "results"
BATCH_CARDS = 100_000
CARDS_PER_SECOND = 60  # of event time: 10M cards span ~2 days, well inside the 180-day TTL
T0 = 1_767_225_600_000  # 2026-01-01


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _batch(first_card: int, cards: int, cards_per_second: float) -> pa.Table:
    """Two transactions per card, the second 5 minutes later; in time order."""
    from scoring.logs import TIMESTAMP

    ids = np.arange(first_card, first_card + cards)
    start = T0 + (ids * 1000 / cards_per_second).astype(np.int64)
    ts = np.concatenate([start, start + 300_000])
    card_ids = np.concatenate([ids, ids])
    order = np.argsort(ts, kind="stable")
    ts, card_ids = ts[order], card_ids[order]
    tokens = [f"tok_k1_{i:026d}" for i in card_ids.tolist()]
    return pa.table(
        {
            "transaction_id": pa.array([f"t{i}" for i in range(len(ts))]),
            "card_id": pa.array(tokens),
            "timestamp": pa.array(ts, pa.int64()).cast(TIMESTAMP),
            "amount": pa.array(np.round(10 + (card_ids % 997) * 0.37, 2)),
            "merchant_id": pa.array([f"m{i % 50_000}" for i in card_ids.tolist()]),
            "terminal_id": pa.array([f"k{i % 100_000}" for i in card_ids.tolist()]),
            "country": pa.array(["FR"] * len(ts)),
            "channel": pa.array(["pos"] * len(ts)),
        }
    )


def run_one(cards: int, cap: int | None, ttl_days: float, cards_per_second: float) -> dict:
    """In this process: feed ``cards`` new cards, record memory at each checkpoint."""
    from scoring.features import EngineConfig, FeatureEngine

    config = EngineConfig(ttl_days=ttl_days, max_cards=cap).reserved()
    engine = FeatureEngine(config)
    engine.process(_batch(0, 10, cards_per_second).slice(0, 0))  # compile before the baseline
    base = rss_bytes()
    marks = sorted({m for m in (1, 2, 5, 10, 12, 15) if m * 1_000_000 <= cards} | {cards // 10**6})
    points = []
    started = time.perf_counter()
    peak = base
    carry: pa.Table | None = None  # second transactions that belong to the next batch's time
    for first in range(0, cards, BATCH_CARDS):
        batch = _batch(first, min(BATCH_CARDS, cards - first), cards_per_second)
        # keep time order across batches: events after the next batch's first one wait for it
        if carry is not None:
            batch = pa.concat_tables([carry, batch]).sort_by("timestamp")
        next_start = T0 + int((first + BATCH_CARDS) * 1000 / cards_per_second)
        ts = batch.column("timestamp").cast(pa.int64()).to_numpy()
        cut = int(np.searchsorted(ts, next_start)) if first + BATCH_CARDS < cards else len(ts)
        carry = batch.slice(cut) if cut < len(ts) else None
        engine.process(batch.slice(0, cut))
        peak = max(peak, rss_bytes())
        seen = first + BATCH_CARDS
        if seen % 1_000_000 == 0 and seen // 1_000_000 in marks:
            rss = rss_bytes() - base
            points.append(
                {
                    "cards_seen": seen,
                    "cards_held": len(engine.cards),
                    "rss_bytes": rss,
                    "engine_bytes": engine.memory_bytes(),
                    "rss_per_held_card": rss / max(len(engine.cards), 1),
                    "engine_per_held_card": engine.memory_bytes() / max(len(engine.cards), 1),
                    "evictions": {f"{e}/{r}": n for (e, r), n in engine.evictions.items()},
                    "seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(points[-1]), flush=True)
    return {
        "cards": cards,
        "cap": cap,
        "ttl_days": ttl_days,
        "cards_per_second": cards_per_second,
        "peak_rss_bytes": peak - base,
        "points": points,
    }


def main(
    cards: Annotated[int, typer.Option(help="New cards fed in the capped run.")] = 12_000_000,
    cap: Annotated[int, typer.Option(help="max_cards of the capped run.")] = 10_000_000,
    ttl_cards: Annotated[int, typer.Option(help="New cards of the TTL-only run.")] = 3_000_000,
    child: Annotated[str | None, typer.Option(hidden=True)] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
) -> None:
    if child is not None:  # one run, in a fresh process
        spec = json.loads(child)
        print("RESULT " + json.dumps(run_one(**spec)), flush=True)
        return
    runs = {
        # the worker's configuration: the cap reached, then 2M more new cards
        "capped": {"cards": cards, "cap": cap, "ttl_days": 180.0, "cards_per_second": 60.0},
        # no cap: 2-day TTL, 10 cards/s of event time (~864k cards a day): the TTL bounds it
        "ttl_only": {
            "cards": ttl_cards,
            "cap": None,
            "ttl_days": 2.0,
            "cards_per_second": 10.0,
        },
    }
    results = {}
    for name, spec in runs.items():
        print(f"== {name}: {spec}", flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for line in output.splitlines():
            print("  " + line[:200], flush=True)
        results[name] = json.loads(
            next(line for line in output.splitlines() if line.startswith("RESULT "))[7:]
        )
    results["machine"] = {"python": platform.python_version(), "cpus": 2}
    out.mkdir(parents=True, exist_ok=True)
    (out / "state_memory.json").write_text(json.dumps(results, indent=2))
    (out / "state_memory.md").write_text(_markdown(results))
    _plot(results, out / "state_memory.png")
    print((out / "state_memory.md").read_text())


def _markdown(results: dict) -> str:
    lines = ["# Feature state memory (benchmarks/state_memory.py)", ""]
    for name in ("capped", "ttl_only"):
        run = results[name]
        lines += [
            f"## {name}: cap {run['cap']}, TTL {run['ttl_days']} days, "
            f"{run['cards_per_second']} new cards per event-time second",
            "",
            "| cards seen | cards held | RSS growth | per held card | engine arrays | per held "
            "card | evictions |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for p in run["points"]:
            lines.append(
                f"| {p['cards_seen']:,} | {p['cards_held']:,} | {p['rss_bytes'] / 2**30:.2f} GiB "
                f"| {p['rss_per_held_card']:.0f} B | {p['engine_bytes'] / 2**30:.2f} GiB | "
                f"{p['engine_per_held_card']:.0f} B | {p['evictions']} |"
            )
        lines += ["", f"Peak RSS growth: {run['peak_rss_bytes'] / 2**30:.2f} GiB.", ""]
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("capped", "ttl_only"), strict=True):
        run = results[name]
        seen = [p["cards_seen"] / 1e6 for p in run["points"]]
        ax.plot(seen, [p["rss_bytes"] / 2**30 for p in run["points"]], "o-", label="RSS growth")
        ax.plot(
            seen, [p["engine_bytes"] / 2**30 for p in run["points"]], "s--", label="engine arrays"
        )
        ax.plot(seen, [p["cards_held"] / 1e6 for p in run["points"]], ":", label="cards held (M)")
        ax.set_xlabel("new cards seen (millions)")
        ax.set_ylabel("GiB / millions")
        ax.set_title(f"{name}: cap {run['cap']}, TTL {run['ttl_days']} d")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    typer.run(main)
