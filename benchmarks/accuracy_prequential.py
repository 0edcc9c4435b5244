"""Accuracy on the handbook's simulator and protocol: the published baseline vs. our pipeline.

    .venv/bin/python benchmarks/accuracy_prequential.py                 # small default, 4 weeks
    .venv/bin/python benchmarks/accuracy_prequential.py --days 183 --train-start-day 115 \\
        --name accuracy_prequential_handbook                            # the handbook's own sizes
    .venv/bin/python benchmarks/accuracy_prequential.py --transactions T --labels L  # any log

Steps: (a) simulate a dataset with benchmarks/accuracy/handbook_simulator.py (or take a given log);
(b) run the handbook's baseline (benchmarks/accuracy/baseline.py); (c) run our pipeline through its
CLI, ``fraudstream train`` then ``fraudstream score-log``, one model per test week; (d) score both
on the same test transactions with benchmarks/accuracy/metrics.py and write
benchmarks/results/<name>.json, .md and .png.

The protocol is the handbook's (see benchmarks/accuracy/README.md): train on 7 days, a 7-day gap
while labels arrive, test on the next 7 days, cards already known compromised removed from the test
days; ``--weeks N`` repeats it N times, each fold a week later, and reports the mean.

Fairness for our pipeline: ``train`` takes its targets from every label in the file it is given, so
it gets only the labels the bank had when the gap ended (``reported_at`` before the first test day).
``score-log`` applies labels at their ``reported_at``, so it gets the full labels file.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks.accuracy` importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import typer  # noqa: E402

from benchmarks.accuracy import baseline, handbook_simulator, metrics  # noqa: E402
from scoring.logs import TIMESTAMP, read_labels, read_transactions, write_log  # noqa: E402

MS_PER_DAY = baseline.MS_PER_DAY
METRIC_KEYS = ("auc_roc", "average_precision", "card_precision")
METRIC_LABELS = {"auc_roc": "AUC ROC", "average_precision": "AP", "card_precision": "CP@{k}"}
# What the brief quotes for the handbook's gradient-boosting baseline (approximate, its data).
PUBLISHED = {"average_precision": 0.69, "card_precision": 0.30}
SYSTEMS = {"baseline": "handbook baseline", "fraudstream": "fraudstream"}
DEFAULT_EXE = str(ROOT / ".venv" / "bin" / "fraudstream")
DEFAULT_OUT = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Data:
    transactions_path: Path
    labels_path: Path
    labels: pa.Table
    log: baseline.Log
    summary: dict[str, object]


def simulate(config: handbook_simulator.SimulatorConfig, out_dir: Path) -> Path:
    dataset = handbook_simulator.generate(config)
    dataset.write(out_dir)
    return out_dir


def load(transactions_path: Path, labels_path: Path, summary: dict[str, object]) -> Data:
    labels = read_labels(labels_path)
    log = baseline.load_log(read_transactions(transactions_path), labels)
    summary = {
        **summary,
        "transactions": len(log),
        "frauds": int(log.is_fraud.sum()),
        "fraud_rate": round(float(log.is_fraud.mean()), 6) if len(log) else 0.0,
        "days": int(log.day.max(initial=-1)) + 1,
        "first_day": _iso_day(log, 0)[:10],
        "cards": int(np.unique(log.card).size),
        "terminals": int(np.unique(log.terminal).size),
    }
    return Data(transactions_path, labels_path, labels, log, summary)


def _iso_day(log: baseline.Log, day: int) -> str:
    """Midnight UTC of a day of the log, as ISO 8601 (what the CLI's --from / --until take)."""
    moment = datetime.fromtimestamp((log.origin_ms + day * MS_PER_DAY) / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------- results


@dataclass
class WeekResult:
    fold: baseline.Fold
    test_transactions: int
    test_frauds: int
    scores: metrics.Scores
    seconds: float
    detail: dict[str, object] = field(default_factory=dict)


@dataclass
class SystemRun:
    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    weeks: list[WeekResult] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        if not self.weeks:
            return {}
        return {
            key: round(statistics.fmean(_metric(w.scores, key) for w in self.weeks), 4)
            for key in METRIC_KEYS
        }


def _metric(scores: metrics.Scores, key: str) -> float:
    return {
        "auc_roc": scores.auc_roc,
        "average_precision": scores.average_precision,
        "card_precision": scores.card_precision_at_k,
    }[key]


# --------------------------------------------------------------------------------------- baseline


def run_baseline(data: Data, folds: list[baseline.Fold], k: int) -> SystemRun:
    run = SystemRun(SYSTEMS["baseline"])
    for result in baseline.run_baseline(data.log, folds, k=k):
        run.weeks.append(
            WeekResult(
                fold=result.fold,
                test_transactions=result.test_transactions,
                test_frauds=result.test_frauds,
                scores=result.scores,
                seconds=round(result.seconds, 2),
                detail={
                    "train_transactions": result.train_transactions,
                    "train_frauds": result.train_frauds,
                },
            )
        )
        _progress(run.name, run.weeks[-1], data.log)
    return run


# ------------------------------------------------------------------------------- our pipeline (c)


class PipelineError(RuntimeError):
    pass


def pipeline_missing(exe: str) -> str | None:
    """Why our CLI cannot run the benchmark yet, or None when ``train`` and ``score-log`` exist."""
    if shutil.which(exe) is None and not Path(exe).is_file():
        return f"{exe} not found"
    for verb in ("train", "score-log"):
        done = subprocess.run([exe, verb, "--help"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return (
                f"`fraudstream {verb}` is not available yet ({_gist(done.stderr or done.stdout)})"
            )
    return None


def _gist(output: str) -> str:
    """The last line of a CLI's output that says something, without rich's box drawing."""
    lines = [line.strip(" │╭╮╰╯─") for line in output.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no output"


def run_pipeline(
    data: Data,
    folds: list[baseline.Fold],
    k: int,
    *,
    exe: str,
    work_dir: Path,
    seed: int,
    timeout: float,
) -> SystemRun:
    run = SystemRun(SYSTEMS["fraudstream"])
    missing = pipeline_missing(exe)
    if missing:
        run.status, run.reason = "skipped", missing
        typer.echo(f"[fraudstream] SKIPPED: {missing}. Step (c) runs once train/score-log exist.")
        return run
    registry = work_dir / "registry"
    try:
        for i, fold in enumerate(folds):
            run.weeks.append(
                _pipeline_week(
                    data, fold, k, exe, work_dir / f"week{i + 1}", registry, seed, timeout
                )
            )
            _progress(run.name, run.weeks[-1], data.log)
    except (PipelineError, subprocess.TimeoutExpired) as exc:
        run.status, run.reason = "failed", str(exc)
        typer.echo(f"[fraudstream] FAILED: {exc}", err=True)
    return run


def _pipeline_week(
    data: Data,
    fold: baseline.Fold,
    k: int,
    exe: str,
    week_dir: Path,
    registry: Path,
    seed: int,
    timeout: float,
) -> WeekResult:
    log = data.log
    week_dir.mkdir(parents=True, exist_ok=True)
    train_from, train_until = (
        _iso_day(log, fold.train_start_day),
        _iso_day(log, fold.train_start_day + fold.train_days),
    )
    test_from, test_until = _iso_day(log, fold.test_start_day), _iso_day(log, fold.test_end_day)
    known_labels = _labels_known_at(data.labels, log.origin_ms + fold.test_start_day * MS_PER_DAY)
    known_path = write_log(known_labels, week_dir / "labels_known.parquet")

    started = time.perf_counter()
    train_out = _cli(
        [
            *(exe, "train", "--transactions", str(data.transactions_path)),
            *("--labels", str(known_path), "--from", train_from, "--until", train_until),
            *("--registry", str(registry), "--seed", str(seed)),
        ],
        timeout,
    )
    version = _last_line(train_out)
    trained = time.perf_counter()
    scores_path = week_dir / "scores.parquet"
    _cli(
        [
            *(exe, "score-log", "--transactions", str(data.transactions_path)),
            *("--labels", str(data.labels_path), "--from", test_from, "--until", test_until),
            *("--model", version, "--registry", str(registry), "--out", str(scores_path)),
        ],
        timeout,
    )
    scored = time.perf_counter()

    test = baseline.test_rows(log, fold)
    score = _scores_for(scores_path, log.transaction_id.take(pa.array(test)))
    return WeekResult(
        fold=fold,
        test_transactions=len(test),
        test_frauds=int(log.is_fraud[test].sum()),
        scores=metrics.evaluate(log.card[test], log.day[test], log.is_fraud[test], score, k),
        seconds=round(scored - started, 2),
        detail={
            "model_version": version,
            "labels_given_to_train": known_labels.num_rows,
            "train_seconds": round(trained - started, 2),
            "score_log_seconds": round(scored - trained, 2),
        },
    )


def _labels_known_at(labels: pa.Table, cutoff_ms: int) -> pa.Table:
    """The labels the bank had at ``cutoff_ms``: reported strictly before it."""
    cutoff = pa.scalar(cutoff_ms, pa.int64()).cast(TIMESTAMP)
    return labels.filter(pc.less(labels.column("reported_at"), cutoff))


def _cli(argv: list[str], timeout: float) -> str:
    typer.echo("  $ " + " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise PipelineError(f"`{' '.join(argv[:2])}` exited {done.returncode}:\n{tail}")
    return done.stdout


def _last_line(stdout: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise PipelineError("`fraudstream train` printed no model version")
    return lines[-1]


def _scores_for(scores_path: Path, transaction_ids: pa.Array) -> np.ndarray:
    """Our scores of the given transactions, in their order; every one must have been scored."""
    table = pq.read_table(scores_path, columns=["transaction_id", "score"])
    where = pc.index_in(transaction_ids, value_set=table.column("transaction_id").combine_chunks())
    if where.null_count:
        raise PipelineError(
            f"{scores_path}: no score for {where.null_count} of {len(transaction_ids)} test "
            "transactions"
        )
    score = table.column("score").combine_chunks().take(where)
    return score.to_numpy(zero_copy_only=False).astype(np.float64)


# ---------------------------------------------------------------------------------------- reports


def _progress(system: str, week: WeekResult, log: baseline.Log) -> None:
    s = week.scores
    typer.echo(
        f"[{system}] test {_iso_day(log, week.fold.test_start_day)[:10]}: "
        f"AUC {s.auc_roc:.3f}  AP {s.average_precision:.3f}  "
        f"CP@{s.k} {s.card_precision_at_k:.3f}  ({week.seconds:.1f}s)"
    )


def _week_json(week: WeekResult, log: baseline.Log) -> dict[str, object]:
    fold = week.fold
    return {
        "train": [
            _iso_day(log, fold.train_start_day),
            _iso_day(log, fold.train_start_day + fold.train_days),
        ],
        "test": [_iso_day(log, fold.test_start_day), _iso_day(log, fold.test_end_day)],
        "train_start_day": fold.train_start_day,
        "test_transactions": week.test_transactions,
        "test_frauds": week.test_frauds,
        **{k: _round(v) for k, v in week.scores.as_dict().items()},
        "seconds": week.seconds,
        **week.detail,
    }


def _round(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def report_json(
    data: Data, runs: list[SystemRun], folds: list[baseline.Fold], k: int, extra: dict[str, object]
) -> dict[str, object]:
    first = folds[0]
    return {
        "benchmark": "accuracy_prequential",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["benchmarks/accuracy_prequential.py", *sys.argv[1:]]),
        "dataset": data.summary,
        "protocol": {
            "train_days": first.train_days,
            "delay_days": first.delay_days,
            "test_days": first.test_days,
            "weeks": len(folds),
            "first_train_start_day": first.train_start_day,
            "k": k,
            "test_set": "test-week transactions minus cards with a fraud known before the day",
        },
        "published_reference": {
            **{
                ("card_precision_at_100" if m == "card_precision" else m): v
                for m, v in PUBLISHED.items()
            },
            "note": "handbook gradient-boosting baseline on the handbook's own data (approx.)",
        },
        "systems": {
            run.name: {
                "status": run.status,
                "reason": run.reason,
                "mean": run.mean(),
                "weeks": [_week_json(w, data.log) for w in run.weeks],
            }
            for run in runs
        },
        **extra,
    }


def report_markdown(report: dict[str, object], data: Data, runs: list[SystemRun], k: int) -> str:
    ds = data.summary
    labels = [METRIC_LABELS[m].format(k=k) for m in METRIC_KEYS]
    columns = [f"{label} {run.name}" for label in labels for run in runs]
    lines = [
        "# Accuracy: handbook simulator and protocol",
        "",
        f"Dataset ({ds['source']}): {ds['transactions']:,} transactions, {ds['frauds']:,} frauds "
        f"(rate {ds['fraud_rate']:.4%}), {ds['days']} days from {ds['first_day']}, "
        f"{ds['cards']:,} cards, {ds['terminals']:,} terminals.",
        "",
        "Protocol: train 7 days, 7-day label delay, test 7 days; cards known compromised removed "
        f"from the test days; card precision@{k} is the mean over test days.",
        "",
        "| test week | test tx | frauds | " + " | ".join(columns) + " |",
        "|" + "---|" * (3 + len(columns)),
    ]
    for i, week in enumerate(runs[0].weeks):
        row = [
            _iso_day(data.log, week.fold.test_start_day)[:10],
            f"{week.test_transactions:,}",
            f"{week.test_frauds}",
        ]
        for m in METRIC_KEYS:
            for run in runs:
                has = i < len(run.weeks)
                row.append(f"{_metric(run.weeks[i].scores, m):.3f}" if has else "–")
        lines.append("| " + " | ".join(row) + " |")
    mean_row = ["**mean**", "", ""]
    for m in METRIC_KEYS:
        for run in runs:
            value = run.mean().get(m)
            mean_row.append(f"**{value:.3f}**" if value is not None else "–")
    lines += [
        "| " + " | ".join(mean_row) + " |",
        "",
        f"Published handbook baseline (its own data, approx.): "
        f"AP ≈ {PUBLISHED['average_precision']:.2f}, "
        f"CP@100 ≈ {PUBLISHED['card_precision']:.2f}.",
        "",
    ]
    for run in runs:
        if run.status != "ok":
            first, _, rest = run.reason.partition("\n")
            lines.append(f"- {run.name}: **{run.status}**: {first}")
            if rest:
                lines += ["", "```", rest, "```"]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def report_chart(runs: list[SystemRun], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [run for run in runs if run.weeks]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(shown), 1)
    x = np.arange(len(METRIC_KEYS))
    for j, run in enumerate(shown):
        values = [run.mean()[m] for m in METRIC_KEYS]
        spread = [np.std([_metric(w.scores, m) for w in run.weeks]) for m in METRIC_KEYS]
        bars = ax.bar(x + j * width, values, width, yerr=spread, capsize=3, label=run.name)
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    for m, value in PUBLISHED.items():
        i = METRIC_KEYS.index(m)
        ax.hlines(value, i - width / 2, i + width * (len(shown) - 0.5), colors="k", linestyles=":")
    ax.plot([], [], "k:", label="published baseline (approx.)")
    ax.set_xticks(
        x + width * (len(shown) - 1) / 2, [METRIC_LABELS[m].format(k=k) for m in METRIC_KEYS]
    )
    ax.set_ylim(0, 1.08)
    weeks = len(shown[0].weeks) if shown else 0
    ax.set_title(f"Handbook simulator, prequential protocol: mean of {weeks} test week(s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(runs: list[SystemRun], k: int) -> None:
    labels = [METRIC_LABELS[m].format(k=k) for m in METRIC_KEYS]
    typer.echo("\n" + f"{'mean over test weeks':<22}" + "".join(f"{lab:>10}" for lab in labels))
    for run in runs:
        if not run.weeks:
            typer.echo(f"{run.name:<22}  ({run.status}: {run.reason.splitlines()[0]})")
            continue
        mean = run.mean()
        typer.echo(f"{run.name:<22}" + "".join(f"{mean[m]:>10.3f}" for m in METRIC_KEYS))
    typer.echo(
        f"{'published (approx.)':<22}{'':>10}{PUBLISHED['average_precision']:>10.2f}"
        f"{PUBLISHED['card_precision']:>10.2f}"
    )


# ------------------------------------------------------------------------------------------- main

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@app.command()
def main(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers (cards).")] = 5_000,
    terminals: Annotated[int, typer.Option(min=1, help="Simulated terminals.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="Simulated days (handbook: 183).")] = 120,
    radius: Annotated[float, typer.Option(help="Customer-to-terminal reach.")] = 5.0,
    data_seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    train_start_day: Annotated[
        int, typer.Option(help="First training day of fold 1 (handbook: 115 = 2018-07-25).")
    ] = 60,
    train_start: Annotated[
        str | None, typer.Option(help="The same as a date, YYYY-MM-DD; overrides the day.")
    ] = None,
    weeks: Annotated[int, typer.Option(min=1, help="Consecutive test weeks (folds).")] = 4,
    k: Annotated[int, typer.Option(min=1, help="k of card precision@k.")] = 100,
    transactions: Annotated[
        Path | None, typer.Option(help="Use this transactions log instead of simulating.")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels for --transactions.")] = None,
    skip_ours: Annotated[bool, typer.Option(help="Run only the baseline.")] = False,
    fraudstream: Annotated[str, typer.Option(help="Our CLI executable.")] = DEFAULT_EXE,
    model_seed: Annotated[int, typer.Option(help="--seed for `fraudstream train`.")] = 7,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per CLI call.")] = 3600.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep data, labels, registry and scores here.")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the reports go.")] = DEFAULT_OUT,
    name: Annotated[str, typer.Option(help="File stem of the reports.")] = "accuracy_prequential",
) -> None:
    """Simulate (or load), run the baseline and our pipeline, write the side-by-side report."""
    if (transactions is None) != (labels is None):
        raise typer.BadParameter("--transactions and --labels go together")
    started = time.perf_counter()
    work = work_dir or Path(tempfile.mkdtemp(prefix="fraudstream-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data, timing = _prepare(
            transactions, labels, work, customers, terminals, days, radius, data_seed
        )
        first_day = _train_start_day(data, train_start, train_start_day)
        folds = baseline.prequential_folds(baseline.Fold(first_day), weeks)
        try:
            baseline.check_fold_fits(data.log, folds[0])
            baseline.check_fold_fits(data.log, folds[-1])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--train-start-day/--weeks") from exc

        t = time.perf_counter()
        runs = [run_baseline(data, folds, k)]
        timing["baseline_seconds"] = round(time.perf_counter() - t, 2)
        if skip_ours:
            runs.append(SystemRun(SYSTEMS["fraudstream"], "skipped", "--skip-ours"))
        else:
            t = time.perf_counter()
            runs.append(
                run_pipeline(
                    data,
                    folds,
                    k,
                    exe=fraudstream,
                    work_dir=work,
                    seed=model_seed,
                    timeout=timeout,
                )
            )
            timing["fraudstream_seconds"] = round(time.perf_counter() - t, 2)
        timing["total_seconds"] = round(time.perf_counter() - started, 2)
        _write_reports(data, runs, folds, k, out_dir, name, {"runtime": timing})
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if any(run.status == "failed" for run in runs):
        raise typer.Exit(1)


def _prepare(
    transactions: Path | None,
    labels: Path | None,
    work: Path,
    customers: int,
    terminals: int,
    days: int,
    radius: float,
    seed: int,
) -> tuple[Data, dict[str, float]]:
    timing: dict[str, float] = {}
    if transactions is not None and labels is not None:
        t = time.perf_counter()
        data = load(transactions, labels, {"source": "given logs"})
        timing["load_seconds"] = round(time.perf_counter() - t, 2)
        return data, timing
    config = handbook_simulator.SimulatorConfig(
        n_customers=customers, n_terminals=terminals, n_days=days, radius=radius, seed=seed
    )
    t = time.perf_counter()
    dataset = handbook_simulator.generate(config)
    timing["generate_seconds"] = round(dataset.generation_seconds, 2)
    dataset.write(work / "data")
    timing["write_seconds"] = round(time.perf_counter() - t - dataset.generation_seconds, 2)
    summary = {"source": "handbook simulator", **dataset.summary()}
    for key in ("transactions", "frauds", "fraud_rate", "cards", "generation_seconds"):
        summary.pop(key, None)  # load() recomputes these from the written logs
    t = time.perf_counter()
    data = load(work / "data" / "transactions.parquet", work / "data" / "labels.parquet", summary)
    timing["load_seconds"] = round(time.perf_counter() - t, 2)
    typer.echo(
        f"dataset: {data.summary['transactions']:,} transactions, {data.summary['frauds']:,} "
        f"frauds ({data.summary['fraud_rate']:.3%}), generated in {timing['generate_seconds']}s"
    )
    return data, timing


def _train_start_day(data: Data, train_start: str | None, default: int) -> int:
    if train_start is None:
        return default
    moment = datetime.combine(date.fromisoformat(train_start), datetime.min.time(), UTC)
    return int((moment.timestamp() * 1000 - data.log.origin_ms) // MS_PER_DAY)


def _write_reports(
    data: Data,
    runs: list[SystemRun],
    folds: list[baseline.Fold],
    k: int,
    out_dir: Path,
    name: str,
    extra: dict[str, object],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report_json(data, runs, folds, k, extra)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(report_markdown(report, data, runs, k))
    report_chart(runs, k, out_dir / f"{name}.png")
    print_table(runs, k)
    typer.echo(f"\nwrote {out_dir / name}.json, .md, .png")


if __name__ == "__main__":
    app()
