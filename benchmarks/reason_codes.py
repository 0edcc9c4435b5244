"""Reason codes, single thread: LightGBM's TreeSHAP vs ours (scoring/tree_shap.py) vs path.

    .venv/bin/python benchmarks/reason_codes.py            # ~2 min after the cached setup
    .venv/bin/python benchmarks/reason_codes.py --quick    # fewer rounds

The model and rows are the ones the live service explains: the champion of stream_throughput.py
(a simulated month, trained on its first two weeks; cached in benchmarks/.cache) and the feature
rows of its next week's transactions, computed by the shared feature engine; of those, the
highest-scoring rows (the ones flagged for review or declined, which are the only ones explained)
and, apart, a random sample. Methods, each on the same rows, in interleaved rounds:

* ``lightgbm``: ``Booster.predict(pred_contrib=True, num_threads=1)``, LightGBM's TreeSHAP;
* ``tree_shap``: :mod:`scoring.tree_shap`, the default (``scoring.reasons_method=shap``);
* ``path``: :mod:`scoring.path_contrib`, decision-path contributions (not Shapley values).

Per batch size (1, 4, 32 rows: the worker explains the few flagged rows of each batch), the
median wall time per row over the rounds. Also: the largest difference between ours and
LightGBM's values over every row measured, and how often path's top reason is TreeSHAP's.

Writes results/reason_codes.{json,md,png}.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:  # run as a script
        sys.path.insert(0, str(path))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import typer  # noqa: E402
from rich.progress import track  # noqa: E402

from scoring.features import FeatureEngine, label_events  # noqa: E402
from scoring.path_contrib import path_contributions  # noqa: E402
from scoring.reasons import lightgbm_shap  # noqa: E402
from scoring.registry import ModelRegistry  # noqa: E402
from scoring.tree_shap import prepare as prepare_shap  # noqa: E402
from scoring.tree_shap import shap_contributions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BATCHES = (1, 4, 32)
METHODS: dict[str, Callable[[lgb.Booster, np.ndarray], np.ndarray]] = {
    "lightgbm": lightgbm_shap,
    "tree_shap": shap_contributions,
    "path": path_contributions,
}


def feature_rows(rows: int, seed: int) -> tuple[lgb.Booster, np.ndarray, np.ndarray, str]:
    """The champion, its highest-scoring feature rows of the week after its training window, a
    random sample of that week, and a description of both."""
    from stream_throughput import prepare

    transactions, labels, registry = prepare(1_000_000, 4)
    model = ModelRegistry(registry).load("champion", allow_gtil=True)
    start = transactions.column("timestamp")[0].as_py()
    week = pc.less(
        transactions["timestamp"],
        pa.scalar(start + timedelta(days=21), transactions.schema.field("timestamp").type),
    )
    history = transactions.filter(week)
    features = FeatureEngine().process(history, label_events(history, labels))
    after = pc.greater_equal(
        history["timestamp"],
        pa.scalar(start + timedelta(days=14), transactions.schema.field("timestamp").type),
    )
    candidates = features[np.asarray(after)]
    scores = model.booster.predict(candidates, num_threads=1)
    flagged = candidates[np.argsort(-scores, kind="stable")[:rows]]
    sample = candidates[np.random.default_rng(seed).choice(len(candidates), rows, replace=False)]
    where = (
        f"the champion ({model.booster.num_trees()} trees, {model.booster.num_feature()} "
        f"features; model {model.version}) on days 15-21 of the simulated month: "
        f"{len(candidates):,} feature rows from the shared engine; the {rows:,} highest-scoring "
        f"(score ≥ {float(np.sort(scores)[-rows]):.3f}) and {rows:,} at random"
    )
    return model.booster, flagged, sample, where


def time_methods(
    booster: lgb.Booster, rows: np.ndarray, rounds: int
) -> dict[str, dict[str, float]]:
    """Median µs per row, per method and batch size; methods interleaved within each round so
    that machine noise hits them alike."""
    per_row: dict[str, dict[int, list[float]]] = {m: {b: [] for b in BATCHES} for m in METHODS}
    for _ in track(range(rounds), description="timing"):
        for batch in BATCHES:
            start = np.random.default_rng().integers(0, len(rows) - batch + 1)
            X = np.ascontiguousarray(rows[start : start + batch])
            for name, method in METHODS.items():
                began = time.perf_counter()
                method(booster, X)
                per_row[name][batch].append((time.perf_counter() - began) / batch * 1e6)
    return {
        m: {str(b): float(np.median(v)) for b, v in sizes.items()} for m, sizes in per_row.items()
    }


def agreement(booster: lgb.Booster, rows: np.ndarray) -> dict[str, float]:
    ours, theirs = shap_contributions(booster, rows), lightgbm_shap(booster, rows)
    path = path_contributions(booster, rows)
    top = np.argmax(np.abs(theirs[:, :-1]), axis=1)
    return {
        "max_abs_difference": float(np.abs(ours - theirs).max()),
        "max_abs_contribution": float(np.abs(theirs).max()),
        "path_top_reason_is_shaps": float(np.mean(np.argmax(np.abs(path[:, :-1]), axis=1) == top)),
    }


def main(
    rows: int = typer.Option(2_000, help="Rows in each set (flagged, random)."),
    rounds: int = typer.Option(300, help="Timing rounds per set."),
    quick: bool = typer.Option(False, help="30 rounds."),
    seed: int = typer.Option(5),
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
) -> None:
    rounds = 30 if quick else rounds
    booster, flagged, sample, where = feature_rows(rows, seed)
    began = time.perf_counter()
    prepare_shap(booster)
    build_s = time.perf_counter() - began
    for method in METHODS.values():  # compile / load the numba caches
        method(booster, flagged[:2])
    results = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "cores": os.cpu_count(),
            "lightgbm": lgb.__version__,
        },
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": where,
        "rounds": rounds,
        "tree_shap_build_s": build_s,
        "flagged": {"us_per_row": time_methods(booster, flagged, rounds)},
        "random": {"us_per_row": time_methods(booster, sample, rounds)},
    }
    results["flagged"]["agreement"] = agreement(booster, flagged)
    results["random"]["agreement"] = agreement(booster, sample)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reason_codes.json").write_text(json.dumps(results, indent=2))
    write_reports(results, out)


def write_reports(results: dict, out: Path) -> None:  # type: ignore[type-arg]
    lines = [
        "# Reason codes: LightGBM's TreeSHAP vs ours vs decision-path contributions",
        "",
        f"Single thread, {results['machine']['cores']} cores, LightGBM "
        f"{results['machine']['lightgbm']}; run of {results['finished']}. Rows: {results['rows']}."
        f" Median wall time per row over {results['rounds']} interleaved rounds. Command: "
        "`.venv/bin/python benchmarks/reason_codes.py`.",
        "",
        "| rows | batch | LightGBM TreeSHAP µs/row | ours µs/row | speed-up | path µs/row |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("flagged", "random"):
        timing = results[kind]["us_per_row"]
        for batch in BATCHES:
            lgbm, ours, path = (timing[m][str(batch)] for m in ("lightgbm", "tree_shap", "path"))
            lines.append(
                f"| {kind} | {batch} | {lgbm:,.0f} | {ours:,.0f} | {lgbm / ours:.1f}x "
                f"| {path:,.1f} |"
            )
    lines += [""]
    for kind in ("flagged", "random"):
        a = results[kind]["agreement"]
        lines.append(
            f"* {kind} rows: ours vs LightGBM, largest difference {a['max_abs_difference']:.1e} "
            f"(largest value {a['max_abs_contribution']:.2f}); path's top reason is TreeSHAP's "
            f"for {a['path_top_reason_is_shaps']:.0%} of rows."
        )
    lines.append(
        f"* Building our TreeSHAP's tables for the model: {results['tree_shap_build_s']:.2f} s "
        "(once per model, before it serves)."
    )
    (out / "reason_codes.md").write_text("\n".join(lines) + "\n")
    _plot(results, out / "reason_codes.png")
    print("\n".join(lines))


def _plot(results: dict, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing = results["flagged"]["us_per_row"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.27
    x = np.arange(len(BATCHES))
    for i, (name, label) in enumerate(
        (("lightgbm", "LightGBM TreeSHAP"), ("tree_shap", "ours (TreeSHAP)"), ("path", "path"))
    ):
        ax.bar(x + (i - 1) * width, [timing[name][str(b)] for b in BATCHES], width, label=label)
    ax.set_xticks(x, [f"{b} rows" for b in BATCHES])
    ax.set_yscale("log")
    ax.set_ylabel("µs per explained row (log)")
    ax.set_title("Reason codes on the champion, flagged rows, one thread")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    typer.run(main)
