"""The report's charts, one per section, drawn from the programs' JSON (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fraudstream.bench.report import Inputs


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # a dev dependency: scripts/bootstrap installs it
        raise RuntimeError(
            "fraudstream bench draws its charts with matplotlib: pip install -e '.[dev]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax: Any, ncol: int = 1) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend only warns
        ax.legend(fontsize=7, ncol=ncol)


def _cdf(ax: Any, sample: list[float], label: str) -> None:
    values = np.sort(np.asarray([v for v in sample if v is not None], dtype=np.float64))
    if len(values):
        ax.plot(np.maximum(values, 1e-3), np.linspace(0, 1, len(values)), label=label)


def latency(inputs: Inputs, ax_grid: Any) -> None:
    (ax,) = ax_grid
    api = inputs.programs.get("api_load") or {}
    for run in api.get("runs", []):
        if run.get("latency_sample"):
            _cdf(ax, run["latency_sample"], f"{run.get('label')}, {run.get('rate_offered'):g}/s")
    stream = inputs.programs.get("stream_throughput") or {}
    for live in stream.get("live", []):
        if live.get("visible_sample"):
            _cdf(
                ax,
                live["visible_sample"],
                f"stream, committed and read, {live.get('rate_achieved', 0):,.0f}/s",
            )
    ax.set_xscale("log")
    ax.set(
        xlabel="ms (log)",
        ylabel="share of requests / decisions",
        title="Latency CDF: API (scheduled send → answer) and stream (Kafka timestamp → read)",
    )
    ax.grid(alpha=0.3)
    _legend(ax)


def throughput(inputs: Inputs, ax_grid: Any) -> None:
    from fraudstream.bench.report import _rate_over_time

    (ax,) = ax_grid
    stream = inputs.programs.get("stream_throughput") or {}
    total = ax.twinx()  # the worker commits in large Kafka transactions: the rate comes in bursts
    for run in stream.get("drain", []):
        t, rate = _rate_over_time(run.get("curve") or [])
        if len(t):
            line = ax.plot(t, rate, label=f"{run.get('engine')}: per second")[0]
            curve = np.asarray(run["curve"], dtype=np.float64)
            total.plot(
                curve[:, 0],
                curve[:, 1],
                ls="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{run.get('engine')}: total (right axis)",
            )
    total.set_ylabel("decisions visible so far")
    total.set_ylim(bottom=0)
    ax.set(
        xlabel="seconds since the worker was ready",
        ylabel="decisions per second (1 s bins)",
        title="Draining a backlog: decisions visible to a read_committed reader",
    )
    handles = ax.get_legend_handles_labels()[0] + total.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def stages(inputs: Inputs, ax_grid: Any) -> None:
    (ax,) = ax_grid
    stream = inputs.programs.get("stream_throughput") or {}
    runs = [r for r in stream.get("drain", []) if r.get("production")]
    names = [r["engine"] for r in runs]
    stage_names = list(runs[0]["stage_us_per_transaction"]) if runs else []
    left = np.zeros(len(runs))
    colours = _colours(len(stage_names))
    for stage, colour in zip(stage_names, colours, strict=True):
        values = np.array([r["stage_us_per_transaction"].get(stage, 0.0) for r in runs])
        ax.barh(names, values, left=left, label=stage, color=colour)
        left += values
    ax.set(xlabel="µs of wall time per transaction", title="Stream worker: time per stage")
    _legend(ax, ncol=4)


def engines(inputs: Inputs, ax_grid: Any) -> None:
    ax_batch, ax_single = ax_grid
    mi = inputs.programs.get("model_inference") or {}
    models = list((mi.get("settings") or {}).get("models") or {"small": {}})
    variants = [v for v in mi.get("variants", []) if any((v.get("rows_per_s") or {}).values())]
    y = np.arange(len(variants))
    height = 0.8 / max(len(models), 1)
    for k, m in enumerate(models):
        ax_batch.barh(
            y + k * height,
            [(v["rows_per_s"] or {}).get(m) or 0 for v in variants],
            height=height,
            label=m,
        )
        ax_single.barh(
            y + k * height,
            [((v.get("single_row") or {}).get(m) or {}).get("median_us") or 0 for v in variants],
            height=height,
            label=m,
        )
    ax_batch.set_yticks(y, [v["label"] for v in variants], fontsize=7)
    ax_single.set_yticks(y, [""] * len(variants))
    ax_batch.invert_yaxis()
    ax_single.invert_yaxis()
    ax_batch.set(xlabel="rows/s (batch)", title="Batch throughput")
    ax_single.set(xlabel="µs per call (median)", title="One row")
    ax_single.set_xscale("log")
    _legend(ax_batch)


def accuracy(inputs: Inputs, ax_grid: Any) -> None:
    ax_inc, ax_log = ax_grid
    inc = inputs.programs.get("incremental_training") or {}
    days = (inc.get("accuracy") or {}).get("days") or []
    from_log = "source" in ((inc.get("accuracy") or {}).get("simulation") or {})
    if days:
        x = [d["day"] for d in days]
        for arm in ("frozen", "incremental"):
            ax_inc.plot(
                x,
                [np.nan if d[f"{arm}_ap"] is None else d[f"{arm}_ap"] for d in days],
                marker="o",
                ms=3,
                label=arm,
            )
        typology = (inc["accuracy"].get("simulation") or {}).get("new_typology_day")
        if typology is not None:
            ax_inc.axvline(typology, color="grey", ls="--", lw=1, label="new typology starts")
        attacks = [d["day"] for d in days if d.get("new_typology_frauds")]
        if attacks:
            ax_inc.scatter(
                attacks, [0.02] * len(attacks), marker="^", color="red", label="attack days"
            )
    ax_inc.set(
        xlabel="day" if from_log else "simulated day",
        ylabel="average precision",
        ylim=(0, 1),
        title="Frozen vs incremental" + (" (the log)" if from_log else " (simulated)"),
    )
    _legend(ax_inc)
    cost = inputs.programs.get("decision_cost") or {}
    per_day = cost.get("per_day") or []
    if per_day:
        ax_log.plot(
            range(len(per_day)),
            [np.nan if d["average_precision"] is None else d["average_precision"] for d in per_day],
            marker="o",
            ms=3,
            label="model trained before the split",
        )
        _legend(ax_log)
    ax_log.set(
        xlabel="day after the split",
        ylim=(0, 1),
        title=f"AP per day on {cost.get('source', 'the log')}"[:70],
    )


def cost(inputs: Inputs, ax_grid: Any) -> None:
    ax_money, ax_compute = ax_grid
    c = (inputs.programs.get("decision_cost") or {}).get("cost_per_million")
    if c:
        parts = ["missed_fraud", "reviews", "friction", "total", "approve_all"]
        ax_money.bar(
            ["missed fraud", "reviews", "friction", "total", "approve all"],
            [c[p] for p in parts],
            color=["#c44e52", "#dd8452", "#8172b3", "#333333", "#999999"],
        )
    ax_money.set(title="Decisions: realised cost per million transactions", ylabel="currency")
    ax_money.tick_params(axis="x", labelrotation=20)
    from fraudstream.bench.report import cost_section

    compute = cost_section(inputs).data.get("compute", {})
    if compute:
        names = list(compute)
        ax_compute.barh(
            [n[:40] for n in names], [compute[n]["usd_per_million"] for n in names], color="#4c72b0"
        )
        ax_compute.tick_params(axis="y", labelsize=7)
    ax_compute.set(xlabel="USD per million transactions", title="Compute")


DRAW: dict[str, tuple[Callable[[Inputs, Any], None], int, tuple[float, float]]] = {
    "latency": (latency, 1, (9, 5)),
    "throughput": (throughput, 1, (9, 4.5)),
    "stages": (stages, 1, (9, 3.5)),
    "engines": (engines, 2, (13, 5)),
    "accuracy": (accuracy, 2, (13, 4.5)),
    "cost": (cost, 2, (13, 4.5)),
}


def draw(key: str, inputs: Inputs, path: Path) -> None:
    if key not in DRAW:
        return
    plt = _pyplot()
    function, columns, size = DRAW[key]
    fig, axes = plt.subplots(1, columns, figsize=size, squeeze=False)
    function(inputs, list(axes[0]))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _colours(n: int) -> list[Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]
