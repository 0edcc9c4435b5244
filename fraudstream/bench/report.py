"""One benchmark report from the programs' JSON: report.md, results.json and the plots.

Pure: the header, the step verdicts and each program's JSON in; files out. Every section is always
written; when its program did not run (skipped, failed, not in the profile) the section says why
instead of vanishing. Numbers in results.json are the ones the Markdown shows; the programs' full
JSON (samples, per-round details) stays beside it in ``programs/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PER_MILLION = 1_000_000
# The other engineers' reliability programs; read from benchmarks/results when present.
RELIABILITY_FILES = ("chaos_long.json", "state_memory.json", "api_fuzz.json")


@dataclass
class Section:
    key: str
    title: str
    sources: tuple[str, ...]  # the programs it reads
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "<program>: why it is absent"
    plot: str | None = None

    @property
    def status(self) -> str:
        if not self.missing:
            return "ok"
        return "partial" if self.data else "not measured"


@dataclass
class Inputs:
    header: dict[str, Any]
    profile: str
    source: str
    steps: list[dict[str, Any]]  # StepRun.as_dict()
    programs: dict[str, dict[str, Any]]  # step name -> the program's JSON
    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> JSON
    cpu_second_usd: float = 0.0000134


def _why(inputs: Inputs, name: str) -> str:
    step = next((s for s in inputs.steps if s["name"] == name), None)
    if step is None:
        return f"{name}: not part of this run"
    if step["status"] == "ok":
        return f"{name}: ran but its JSON lacks this part"
    reason = (step.get("reason") or "").splitlines()
    first = reason[0] if reason else ""
    where = f" (log: `{step['log']}`)" if step.get("log") else ""
    return f"{name}: {step['status']}{' — ' + first if first else ''}{where}"


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _pct(p: dict[str, Any] | None) -> list[str]:
    p = p or {}
    return [_fmt(p.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")]


# ------------------------------------------------------------------------------ sections


def latency_section(inputs: Inputs) -> Section:
    s = Section(
        "latency",
        "Latency CDF: API and stream",
        ("api_load", "stream_throughput"),
        plot="latency_cdf.png",
    )
    api = inputs.programs.get("api_load")
    stream = inputs.programs.get("stream_throughput")
    rows: list[dict[str, Any]] = []
    if api:
        for run in api.get("runs", []):
            rows.append(
                {
                    "path": f"API: {run.get('label', run.get('target'))}",
                    "rate": run.get("rate_achieved"),
                    "offered": run.get("rate_offered"),
                    "latency_ms": run.get("latency_ms"),
                    "degraded_share": run.get("degraded_share"),
                    "error_rate": run.get("error_rate"),
                    "what": "scheduled send → whole HTTP answer (open loop)",
                }
            )
    else:
        s.missing.append(_why(inputs, "api_load"))
    if stream and stream.get("live"):
        for live in stream["live"]:
            warmup = (live.get("warmup") or {}).get("seconds")
            for key, what in (
                ("computed_ms", "Kafka timestamp → decision computed"),
                ("visible_ms", "Kafka timestamp → decision committed and read"),
            ):
                rows.append(
                    {
                        "path": f"stream, live ({live.get('reasons')} reasons)",
                        "rate": live.get("rate_achieved"),
                        "offered": live.get("rate_target"),
                        "latency_ms": live.get(key),
                        "what": what + (f", after a {warmup:g} s warm-up" if warmup else ""),
                    }
                )
    else:
        s.missing.append(_why(inputs, "stream_throughput"))
    if rows:
        s.data["runs"] = rows
        s.lines += [
            "| path | measured | offered/s | achieved/s | p50 ms | p90 | p99 | p99.9 | max | "
            "degraded | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            degraded = r.get("degraded_share")
            errors = r.get("error_rate")
            s.lines.append(
                f"| {r['path']} | {r['what']} | {_fmt(r['offered'], ',.0f')} | "
                f"{_fmt(r['rate'], ',.0f')} | " + " | ".join(_pct(r["latency_ms"])) + " | "
                f"{'–' if degraded is None else f'{degraded:.1%}'} | "
                f"{'–' if errors is None else f'{errors:.1%}'} |"
            )
    return s


def _rate_over_time(curve: list[list[float]], bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Decisions per second in ``bin_s`` bins from a cumulative (seconds, count) curve."""
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 2 or len(c) < 2:
        return np.zeros(0), np.zeros(0)
    c = c[c[:, 0] >= 0] if (c[:, 0] >= 0).sum() >= 2 else c
    edges = np.arange(c[0, 0], c[-1, 0] + bin_s, bin_s)
    counts = np.interp(edges, c[:, 0], c[:, 1])
    return edges[1:], np.diff(counts) / bin_s


def throughput_section(inputs: Inputs) -> Section:
    s = Section(
        "throughput",
        "Throughput over time",
        ("stream_throughput", "api_load"),
        plot="throughput.png",
    )
    stream = inputs.programs.get("stream_throughput")
    if stream and stream.get("drain"):
        drains = []
        for run in stream["drain"]:
            drains.append(
                {
                    k: run.get(k)
                    for k in (
                        "engine",
                        "transactions",
                        "decided",
                        "finished",
                        "sustained_per_second",
                        "overall_per_second",
                        "cpu_us_per_transaction",
                        "wall_seconds",
                    )
                }
            )
        s.data["drain"] = drains
        s.lines += [
            "Draining a backlog on a real broker (one worker; decisions counted as they become "
            "visible to a read_committed reader; sustained = between 10 % and 90 % of them):",
            "",
            "| engine | transactions | sustained/s | overall/s | CPU-µs per transaction | wall s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for d in drains:
            s.lines.append(
                f"| {d['engine']} | {_fmt(d['transactions'], ',')} | "
                f"{_fmt(d['sustained_per_second'], ',.0f')} | "
                f"{_fmt(d['overall_per_second'], ',.0f')} | "
                f"{_fmt(d['cpu_us_per_transaction'])} | {_fmt(d['wall_seconds'])} |"
            )
    else:
        s.missing.append(_why(inputs, "stream_throughput"))
    api = inputs.programs.get("api_load")
    if api and api.get("runs"):
        s.data["api"] = [
            {k: r.get(k) for k in ("label", "rate_offered", "rate_achieved", "error_rate")}
            for r in api["runs"]
        ]
        s.lines += [
            "",
            "API under open-loop load (achieved = 2xx answers in the window ÷ its length):",
            "",
            "| endpoint | offered/s | achieved/s |",
            "|---|---:|---:|",
        ]
        s.lines += [
            f"| {r['label']} | {_fmt(r['rate_offered'], ',.0f')} | "
            f"{_fmt(r['rate_achieved'], ',.0f')} |"
            for r in s.data["api"]
        ]
    else:
        s.missing.append(_why(inputs, "api_load"))
    return s


def stages_section(inputs: Inputs) -> Section:
    s = Section(
        "stages",
        "Per-stage latency breakdown (stream worker)",
        ("stream_throughput",),
        plot="stages.png",
    )
    stream = inputs.programs.get("stream_throughput")
    production = [r for r in (stream or {}).get("drain", []) if r.get("production")]
    if not production or not production[0].get("stage_us_per_transaction"):
        s.missing.append(_why(inputs, "stream_throughput"))
        return s
    s.data["runs"] = [
        {
            "engine": r["engine"],
            "stage_us_per_transaction": r["stage_us_per_transaction"],
            "loop_cpu_us_per_transaction": r.get("loop_cpu_us_per_transaction"),
        }
        for r in production
    ]
    stages = list(production[0]["stage_us_per_transaction"])
    s.lines += [
        "Wall time per stage of the production worker's loop, µs per transaction, from its "
        "`fraudstream_stream_stage_duration_seconds` histograms over the drain:",
        "",
        "| stage | " + " | ".join(r["engine"] for r in production) + " |",
        "|---|" + "---:|" * len(production),
    ]
    for stage in stages:
        s.lines.append(
            f"| {stage} | "
            + " | ".join(_fmt(r["stage_us_per_transaction"].get(stage)) for r in production)
            + " |"
        )
    s.lines.append(
        "| loop CPU (all stages) | "
        + " | ".join(_fmt(r.get("loop_cpu_us_per_transaction")) for r in production)
        + " |"
    )
    return s


def engines_section(inputs: Inputs) -> Section:
    s = Section("engines", "Model engines side by side", ("model_inference",), plot="engines.png")
    mi = inputs.programs.get("model_inference")
    if not mi or not mi.get("variants"):
        s.missing.append(_why(inputs, "model_inference"))
        return s
    models = list(mi.get("settings", {}).get("models", {"small": {}}))
    rows = []
    for v in mi["variants"]:
        if not any((v.get("rows_per_s") or {}).values()) and not any(
            (v.get("single_row") or {}).values()
        ):
            continue
        rows.append(
            {
                "label": v["label"],
                "rows_per_s": v.get("rows_per_s", {}),
                "single_median_us": {
                    m: (v.get("single_row", {}).get(m) or {}).get("median_us") for m in models
                },
                "max_abs_diff_vs_lightgbm": v.get("max_abs_diff_vs_lightgbm", {}),
            }
        )
    s.data = {"models": mi.get("settings", {}).get("models"), "variants": rows}
    shapes = ", ".join(
        f"{m} = {spec.get('trees')} trees × {spec.get('leaves')} leaves"
        for m, spec in (mi.get("settings", {}).get("models") or {}).items()
    )
    s.lines += [
        f"One thread, pinned to one CPU; {shapes}; batch = "
        f"{_fmt(mi.get('settings', {}).get('batch_rows'), ',')} rows, median of "
        f"{mi.get('settings', {}).get('rounds')} interleaved rounds; single row = µs per call "
        "(median). Max |Δ| against LightGBM's own probabilities.",
        "",
        "| engine | "
        + " | ".join(f"{m} rows/s | {m} µs/row | {m} max abs Δ" for m in models)
        + " |",
        "|---|" + "---:|---:|---:|" * len(models),
    ]
    for r in rows:
        cells = []
        for m in models:
            diff = r["max_abs_diff_vs_lightgbm"].get(m)
            cells += [
                _fmt(r["rows_per_s"].get(m), ",.0f"),
                _fmt(r["single_median_us"].get(m), ".2f"),
                "–" if diff is None else f"{diff:.1e}",
            ]
        s.lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return s


def feature_section(inputs: Inputs) -> Section:
    s = Section("features", "Feature engine", ("feature_engine",))
    fe = inputs.programs.get("feature_engine")
    if not fe:
        s.missing.append(_why(inputs, "feature_engine"))
        return s
    keys = (
        "offline_replay_tx_per_s",
        "engine_process_tx_per_s",
        "numba_prefix_tx_per_s",
        "python_twin_tx_per_s",
        "numba_over_twin",
        "transactions",
        "source",
    )
    s.data = {k: fe.get(k) for k in keys}
    s.lines += [
        f"{_fmt(fe.get('transactions'), ',')} transactions ({fe.get('source', 'simulated')}), "
        "one thread:",
        "",
        "| path | transactions/s |",
        "|---|---:|",
        f"| `replay_log` (label join + numba kernel): training and score-log | "
        f"{_fmt(fe.get('offline_replay_tx_per_s'), ',.0f')} |",
        f"| `FeatureEngine.process` (key lookups + kernel): the stream's path | "
        f"{_fmt(fe.get('engine_process_tx_per_s'), ',.0f')} |",
        f"| Python twin, prefix | {_fmt(fe.get('python_twin_tx_per_s'), ',.0f')} |",
    ]
    return s


def accuracy_section(inputs: Inputs) -> Section:
    s = Section(
        "accuracy",
        "Accuracy over time: frozen vs incremental",
        ("incremental_training", "decision_cost"),
        plot="accuracy.png",
    )
    inc = inputs.programs.get("incremental_training")
    if inc and inc.get("accuracy", {}).get("days"):
        days = inc["accuracy"]["days"]
        rec = inc.get("recovery", {})
        sim = inc["accuracy"].get("simulation", {})
        s.data["incremental"] = {
            "days": [
                {
                    k: d.get(k)
                    for k in (
                        "day",
                        "date",
                        "frauds",
                        "new_typology_frauds",
                        "frozen_ap",
                        "incremental_ap",
                        "champion",
                    )
                }
                for d in days
            ],
            "typology_day": sim.get("new_typology_day"),
            "recovery_days": rec.get("recovery_days"),
            "frozen": rec.get("frozen"),
            "incremental": rec.get("incremental"),
            "round_timing": inc.get("round_timing"),
        }
        fz, ic = rec.get("frozen") or {}, rec.get("incremental") or {}
        recovery = rec.get("recovery_days")
        if sim.get("new_typology_day") is None:  # the given log: no typology, no recovery
            s.lines += [
                f"On {sim.get('source')}: its first {sim.get('days')} days, "
                f"{_fmt(sim.get('cards'), ',')} cards; frozen = the first champion throughout; "
                "incremental = the trainer's own rounds (docs/training.md), one per day. No "
                "typology start is known in a log, so no recovery is measured. Mean daily "
                f"average precision over the served days: frozen "
                f"{_fmt(fz.get('ap_all_days_after'), '.3f')}, incremental "
                f"{_fmt(ic.get('ap_all_days_after'), '.3f')}.",
            ]
        else:
            s.lines += [
                f"Simulated {sim.get('days')} days, {_fmt(sim.get('cards'), ',')} cards, "
                f"`{sim.get('new_typology')}` from day {sim.get('new_typology_day')}; frozen = "
                "the first champion throughout; incremental = the trainer's own rounds "
                "(docs/training.md), one per simulated day. Average precision per day against "
                "the final truth.",
                "",
                "| | AP 7 days before the typology | AP on attack days | AP all days after |",
                "|---|---:|---:|---:|",
                f"| frozen | {_fmt(fz.get('ap_7_days_before'), '.3f')} | "
                f"{_fmt(fz.get('ap_attack_days'), '.3f')} | "
                f"{_fmt(fz.get('ap_all_days_after'), '.3f')} |",
                f"| incremental | {_fmt(ic.get('ap_7_days_before'), '.3f')} | "
                f"{_fmt(ic.get('ap_attack_days'), '.3f')} | "
                f"{_fmt(ic.get('ap_all_days_after'), '.3f')} |",
                "",
                "Recovery (incremental AP ahead by ≥ "
                f"{rec.get('lead')} on every later attack day): "
                + (
                    f"**{recovery} simulated days**."
                    if recovery is not None
                    else "**not within the simulated period** (a short period may end before it)."
                ),
            ]
    else:
        s.missing.append(_why(inputs, "incremental_training"))
    cost = inputs.programs.get("decision_cost")
    if cost and cost.get("per_day"):
        s.data["log"] = {
            "source": cost.get("source"),
            "split": cost.get("split"),
            "per_day": cost["per_day"],
        }
        aps = [
            d["average_precision"] for d in cost["per_day"] if d["average_precision"] is not None
        ]
        s.lines += [
            "",
            f"On {cost.get('source')}: one model trained before {cost.get('split')} (no "
            f"retraining), average precision per day over the rest: mean "
            f"{_fmt(float(np.mean(aps)) if aps else None, '.3f')}, min "
            f"{_fmt(min(aps) if aps else None, '.3f')}, max "
            f"{_fmt(max(aps) if aps else None, '.3f')} "
            f"over {len(aps)} days with both classes.",
        ]
    return s


def cost_section(inputs: Inputs) -> Section:
    s = Section(
        "cost",
        "Cost per million transactions",
        ("decision_cost", "stream_throughput", "api_load"),
        plot="cost.png",
    )
    price = inputs.cpu_second_usd
    cost = inputs.programs.get("decision_cost")
    if cost:
        price = cost.get("cpu_second_usd", price)
    compute: dict[str, dict[str, float]] = {}
    stream = inputs.programs.get("stream_throughput")
    for run in (stream or {}).get("drain", []):
        if run.get("production") and run.get("cpu_us_per_transaction"):
            compute[f"stream worker ({run['reasons']} reasons)"] = {
                "cpu_us_per_transaction": run["cpu_us_per_transaction"]
            }
    api = inputs.programs.get("api_load")
    api_runs = [r for r in (api or {}).get("runs", []) if r.get("target") != "bare"]
    if api_runs:
        run = min(api_runs, key=lambda r: r.get("rate_offered") or 0)
        cores = run.get("cpu_cores") or {}
        stack = sum(v for k, v in cores.items() if k in ("api", "worker", "broker"))
        if run.get("rate_achieved"):
            compute[
                f"API request, whole stack (API + worker + broker) at "
                f"{_fmt(run.get('rate_offered'), ',.0f')}/s"
            ] = {"cpu_us_per_transaction": stack / run["rate_achieved"] * 1e6}
    if cost:
        compute["offline score-log (features for the whole log, model, policy, reasons)"] = {
            "cpu_us_per_transaction": cost["cpu_us_per_transaction_offline"]
        }
    if not any(k.startswith("stream worker") for k in compute):
        s.missing.append(_why(inputs, "stream_throughput"))
    if not any(k.startswith("API request") for k in compute):
        s.missing.append(_why(inputs, "api_load"))
    for item in compute.values():
        item["usd_per_million"] = item["cpu_us_per_transaction"] * price  # µs × 1e6 / 1e6
    s.data = {"cpu_second_usd": price, "cpu_hour_usd": price * 3600, "compute": compute}
    s.lines += [
        f"Compute = measured CPU time per transaction × ${price * 3600:.4f} per CPU-hour "
        f"(`scoring.cpu_second_usd` = ${price:g} per CPU-second, about an on-demand cloud vCPU; "
        "set `FRAUD_SCORING__CPU_SECOND_USD` for yours). On this shared machine the CPU time "
        "includes contention, so read it as an upper bound.",
        "",
    ]
    if compute:
        s.lines += [
            "| path | CPU-µs per transaction | compute USD per million |",
            "|---|---:|---:|",
        ]
        s.lines += [
            f"| {name} | {_fmt(v['cpu_us_per_transaction'])} | {v['usd_per_million']:.4f} |"
            for name, v in compute.items()
        ]
    if cost:
        c = cost["cost_per_million"]
        e = cost.get("evaluation", {})
        s.data["decisions"] = {
            "source": cost.get("source"),
            "per_million": c,
            "policy": cost.get("policy"),
            "evaluation": e,
            "scored": cost.get("scored"),
            "frauds": cost.get("frauds"),
        }
        pol = cost.get("policy", {})
        s.lines += [
            "",
            f"Decisions on {cost.get('source')}: {_fmt(cost.get('scored'), ',')} transactions "
            f"after {cost.get('split')} decided by a model trained before it "
            f"({_fmt(cost.get('frauds'), ',')} frauds; AUC {_fmt(e.get('auc_roc'), '.3f')}, AP "
            f"{_fmt(e.get('average_precision'), '.3f')}). Realised against the labels, per million "
            f"transactions, in the log's currency (review {pol.get('review_cost')}, a review "
            f"misses {pol.get('review_miss_rate')} of fraud, friction {pol.get('friction_share')} "
            "of a declined genuine amount):",
            "",
            "| missed fraud (expected fraud loss) | reviews | friction | **total** | approve "
            "everything | the model's own ex-ante expected fraud loss |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {c['missed_fraud']:,.0f} | {c['reviews']:,.0f} | {c['friction']:,.0f} | "
            f"**{c['total']:,.0f}** | {c['approve_all']:,.0f} | "
            f"{c['expected_fraud_loss_ex_ante']:,.0f} |",
        ]
    else:
        s.missing.append(_why(inputs, "decision_cost"))
    return s


def handbook_section(inputs: Inputs) -> Section:
    s = Section(
        "handbook", "Accuracy on the handbook's simulator (prequential)", ("accuracy_prequential",)
    )
    acc = inputs.programs.get("accuracy_prequential")
    if not acc or not acc.get("systems"):
        s.missing.append(_why(inputs, "accuracy_prequential"))
        return s
    s.data = {name: sys_.get("mean") for name, sys_ in acc["systems"].items()}
    s.lines += [
        "| system | AUC ROC | average precision | card precision@100 |",
        "|---|---:|---:|---:|",
    ]
    for name, mean in s.data.items():
        mean = mean or {}
        s.lines.append(
            f"| {name} | {_fmt(mean.get('auc_roc'), '.3f')} | "
            f"{_fmt(mean.get('average_precision'), '.3f')} | "
            f"{_fmt(mean.get('card_precision'), '.3f')} |"
        )
    return s


def _scalars(obj: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 80):
            out.append((name, value))
        elif isinstance(value, dict) and depth < 1:
            out += _scalars(value, f"{name}.", depth + 1)
    return out


def reliability_section(inputs: Inputs) -> Section:
    s = Section("reliability", "Reliability", tuple(RELIABILITY_FILES))
    s.lines += [
        "Read from `benchmarks/results/` when the reliability programs have written there "
        "(they are not run by `fraudstream bench`; see benchmarks/README.md).",
        "",
    ]
    for file in RELIABILITY_FILES:
        data = inputs.reliability.get(file)
        if data is None:
            s.missing.append(f"{file}: not present in benchmarks/results/")
            s.lines.append(f"* `{file}`: not present.")
            continue
        fields = _scalars(data)[:20]
        s.data[file] = dict(fields)
        s.lines.append(f"* `{file}` (see `benchmarks/results/{file.replace('.json', '.md')}`):")
        s.lines += [
            f"  * {k}: {v:,.4g}" if isinstance(v, float) else f"  * {k}: {v}" for k, v in fields
        ]
    return s


SECTIONS: tuple[Callable[[Inputs], Section], ...] = (
    latency_section,
    throughput_section,
    stages_section,
    engines_section,
    feature_section,
    accuracy_section,
    cost_section,
    handbook_section,
    reliability_section,
)
SECTION_TITLES = (
    "Latency CDF: API and stream",
    "Throughput over time",
    "Per-stage latency breakdown (stream worker)",
    "Model engines side by side",
    "Feature engine",
    "Accuracy over time: frozen vs incremental",
    "Cost per million transactions",
    "Accuracy on the handbook's simulator (prequential)",
    "Reliability",
)


# ------------------------------------------------------------------------------- writing


def header_lines(inputs: Inputs) -> list[str]:
    h = inputs.header
    m, v, g = h["machine"], h["versions"], h["git"]
    load = m.get("load_average")
    dirty = {True: " (**dirty**: uncommitted changes in the tree)", False: " (clean)"}.get(
        g.get("dirty"), ""
    )
    return [
        f"Generated {h['generated_at']} by `fraudstream bench --profile {inputs.profile}`.",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {m['cpu']}, {m['cores']} cores, {_fmt(m.get('memory_gib'), '.1f')} GiB, "
        f"{m.get('system', '')} |",
        "| load average at start (1, 5, 15 min) | "
        + (", ".join(f"{x:.2f}" for x in load) if load else "–")
        + " |",
        f"| Python / LightGBM / treelite / tl2cgen | {v.get('python')} / {v.get('lightgbm')} / "
        f"{v.get('treelite')} / {v.get('tl2cgen')} |",
        f"| Kafka / librdkafka (confluent-kafka) | {v.get('kafka')} / {v.get('librdkafka')} "
        f"({v.get('confluent-kafka')}) |",
        f"| numba / numpy / pyarrow | {v.get('numba')} / {v.get('numpy')} / {v.get('pyarrow')} |",
        f"| commit | `{g.get('commit') or 'unknown'}`{dirty} |",
        f"| data | {inputs.source} |",
    ]


def build_sections(inputs: Inputs) -> list[Section]:
    return [make(inputs) for make in SECTIONS]


def render_markdown(inputs: Inputs, sections: list[Section]) -> str:
    lines = ["# fraudstream benchmark report", "", *header_lines(inputs), ""]
    lines += [
        "## Programs",
        "",
        "| program | status | seconds | ran on | command |",
        "|---|---|---:|---|---|",
    ]
    for step in inputs.steps:
        status = step["status"] if step["status"] == "ok" else f"**{step['status']}**"
        lines.append(
            f"| {step['name']} | {status} | {_fmt(step.get('seconds'), '.0f')} | "
            f"{step['data']} | `{step['command']}` |"
        )
    problems = [s for s in inputs.steps if s["status"] not in ("ok",) and s.get("reason")]
    if problems:
        lines += ["", "Not run or failed:", ""]
        for step in problems:
            first, *rest = step["reason"].splitlines()
            lines.append(f"* **{step['name']}** ({step['status']}): {first}")
            if rest:
                lines += ["", "  ```", *[f"  {r}" for r in rest], "  ```"]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.missing:
            label = "Partly measured" if section.data else "Not measured"
            lines += [f"*{label}:* " + "; ".join(section.missing), ""]
        lines += section.lines
        if section.plot and section.data:
            lines += ["", f"![{section.title}]({section.plot})"]
    lines += [
        "",
        "Every program's own JSON, Markdown and chart are in `programs/`, its output in `logs/`. "
        "This machine is shared with other work: read differences below ~10 % as noise.",
    ]
    return "\n".join(lines) + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def results_json(inputs: Inputs, sections: list[Section]) -> dict[str, Any]:
    return _clean(
        {
            "profile": inputs.profile,
            "source": inputs.source,
            **inputs.header,
            "steps": inputs.steps,
            "sections": {
                s.key: {
                    "title": s.title,
                    "status": s.status,
                    "missing": s.missing,
                    "plot": s.plot if s.data else None,
                    "data": s.data,
                }
                for s in sections
            },
        }
    )


def write(inputs: Inputs, out: Path) -> list[Section]:
    """report.md, results.json and one PNG per section that has data, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(inputs)
    from fraudstream.bench import plots

    for section in sections:
        if section.plot and section.data:
            plots.draw(section.key, inputs, out / section.plot)
    (out / "results.json").write_text(json.dumps(results_json(inputs, sections), indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(inputs, sections))
    return sections
