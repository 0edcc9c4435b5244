"""``fraudstream bench``: the benchmark programs, then one report (benchmarks/README.md)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fraudstream.commands.common import console, fail

if TYPE_CHECKING:
    from fraudstream.bench.plan import Profile, Step


def _benchmarks_dir(given: Path | None) -> Path:
    """benchmarks/ of the source checkout this package runs from (an editable install), or of
    the working directory; the programs are not part of the installed package."""
    candidates = (
        [given]
        if given
        else [
            Path(__file__).resolve().parents[2] / "benchmarks",
            Path.cwd() / "benchmarks",
        ]
    )
    for path in candidates:
        if path is not None and (path / "stream_throughput.py").exists():
            return path.resolve()
    raise fail(
        "fraudstream bench runs the programs in benchmarks/ of a source checkout; none found "
        f"(looked in {', '.join(str(c) for c in candidates)}); pass --benchmarks DIR"
    )


def bench(
    profile: Annotated[
        str, typer.Option(help="short: a few minutes, small sizes; full: the programs' own sizes.")
    ] = "short",
    transactions: Annotated[
        Path | None,
        typer.Option(help="Benchmark on this transactions log instead of simulated data."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labels for --transactions (needed for accuracy, cost and the stream)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report directory (default: benchmarks/results/<date>/, or <date>-<log folder>/ "
            "with --transactions)."
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(help="Comma-separated programs to run (the others are reported as not run)."),
    ] = None,
    render_only: Annotated[
        bool, typer.Option(help="Rewrite report.md, results.json and the plots from --out.")
    ] = False,
    benchmarks: Annotated[
        Path | None, typer.Option(help="The benchmarks/ directory (default: this checkout's).")
    ] = None,
) -> None:
    """Run the benchmark programs and write one report: report.md, results.json and plots.

    Sections: latency CDF (API and stream), throughput over time, per-stage breakdown, model
    engines, feature engine, accuracy over time (frozen vs incremental), cost per million
    transactions, reliability. A section whose program did not run says why."""
    from fraudstream.bench import machine, plan, report

    if profile not in plan.PROFILES:
        raise typer.BadParameter("short or full", param_hint="--profile")
    if labels is not None and transactions is None:
        raise typer.BadParameter("--labels goes with --transactions", param_hint="--labels")
    bench_dir = _benchmarks_dir(benchmarks)
    report_dir = (out or bench_dir / "results" / _default_name(transactions)).resolve()
    programs_out = report_dir / "programs"
    log = None
    if transactions is not None:
        log = plan.LogInput(
            _checked_log(transactions, "transactions"),
            _checked_log(labels, "labels") if labels else None,
        )
    source = (
        f"the given log: {transactions}" + (f" + {labels}" if labels else " (no labels)")
        if transactions
        else "simulated data (each program's simulator; see the Programs table)"
    )
    selected = tuple(s.strip() for s in only.split(",") if s.strip()) if only else None
    chosen: Profile = "full" if profile == "full" else "short"
    try:
        steps = plan.build(
            chosen,
            programs_out=programs_out,
            log=log,
            only=selected,
            run_id=f"bench-{report_dir.name}",
        )
    except ValueError as exc:
        raise fail(str(exc)) from None

    header = machine.describe(bench_dir.parent)
    if render_only:
        previous = json.loads((report_dir / "results.json").read_text())
        runs = previous["steps"]
        header = {k: previous[k] for k in ("generated_at", "machine", "versions", "git")}
        profile, source = previous["profile"], previous["source"]
    else:
        runs = _run_all(steps, bench_dir, report_dir, programs_out)
    inputs = report.Inputs(
        header=header,
        profile=profile,
        source=source,
        steps=runs,
        programs=_read_programs(programs_out),
        reliability=_read_reliability(bench_dir),
        cpu_second_usd=_cpu_price(),
    )
    sections = report.write(inputs, report_dir)
    console.print(f"wrote {report_dir / 'report.md'}")
    for section in sections:
        console.print(f"  {section.title}: {section.status}")
    print(report_dir / "report.md")
    if any(r["status"] in ("failed", "timeout") for r in runs):
        raise typer.Exit(1)


def _default_name(transactions: Path | None) -> str:
    """<date> for simulated data; <date>-<log folder> for a given log, so that a report on a log
    never overwrites the day's report on simulated data."""
    name = date.today().isoformat()
    if transactions is None:
        return name
    stem = transactions.resolve().parent.name or transactions.stem
    return f"{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem).strip('-') or 'log'}"


def _checked_log(path: Path, what: str) -> Path:
    if not path.exists():
        raise fail(f"--{what}: {path}: no such file")
    return path.resolve()


def _run_all(
    steps: list[Step], bench_dir: Path, report_dir: Path, programs_out: Path
) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fraudstream.bench import runner

    programs_out.mkdir(parents=True, exist_ok=True)
    runs = []
    todo = [s for s in steps if not s.skip]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("benchmarks", total=len(todo))
        for step in steps:
            if not step.skip:
                progress.update(task, description=f"{step.name} (log: logs/{step.name}.log)")
            run = runner.run(
                step, benchmarks=bench_dir, report_dir=report_dir, programs_out=programs_out
            )
            runs.append(run.as_dict())
            if not step.skip:
                progress.advance(task)
                colour = "green" if run.status == "ok" else "red"
                progress.console.print(
                    f"[{colour}]{step.name}: {run.status}[/] in {run.seconds:.0f} s"
                )
    return runs


def _read_programs(programs_out: Path) -> dict[str, dict[str, Any]]:
    from fraudstream.bench.plan import STEP_NAMES

    out: dict[str, dict[str, Any]] = {}
    for name in STEP_NAMES:
        path = programs_out / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def _read_reliability(bench_dir: Path) -> dict[str, dict[str, Any]]:
    from fraudstream.bench.report import RELIABILITY_FILES

    out: dict[str, dict[str, Any]] = {}
    for name in RELIABILITY_FILES:
        path = bench_dir / "results" / name
        if path.exists():
            try:
                out[name] = json.loads(path.read_text())
            except ValueError:
                console.print(f"[yellow]{path}: not valid JSON; left out[/]")
    return out


def _cpu_price() -> float:
    from scoring.settings import get_settings

    return get_settings().scoring.cpu_second_usd
