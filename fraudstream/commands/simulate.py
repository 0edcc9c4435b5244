"""``fraudstream simulate``: write synthetic card traffic and its delayed labels as Parquet."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from training.simulator import Summary


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Output directory (created if missing).")],
    days: Annotated[int | None, typer.Option(help="Simulated days (default: 30).")] = None,
    cards: Annotated[int | None, typer.Option(help="Number of cards (default: 10000).")] = None,
    merchants: Annotated[
        int | None, typer.Option(help="Number of merchants (default: max(200, cards/5)).")
    ] = None,
    banks: Annotated[int | None, typer.Option(help="Issuing banks (default: 3).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: 42).")] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="First day, ISO 8601 (no offset means UTC) (default: 2026-01-05T00:00:00Z)."
        ),
    ] = None,
    new_typology_day: Annotated[
        int | None,
        typer.Option(help="Day index (0-based) from which bin_attack runs (default: never)."),
    ] = None,
    fraud_rate: Annotated[
        float | None,
        typer.Option(help="Target share of fraudulent transactions on day 0 (default: 0.005)."),
    ] = None,
    fraud_rate_drift: Annotated[
        float | None,
        typer.Option(help="Relative change of the fraud rate by the last day (default: 0.25)."),
    ] = None,
    genuine_label_share: Annotated[
        float | None,
        typer.Option(help="Share of genuine transactions with an explicit label (default: 0.02)."),
    ] = None,
    amounts: Annotated[
        str | None,
        typer.Option(
            help="billing: the card's home currency (default, the issuer's view); local: the "
            "merchant country's currency."
        ),
    ] = None,
    label_all: Annotated[
        bool | None,
        typer.Option(
            "--label-all/--no-label-all",
            help="Also label every other genuine transaction at timestamp + maturity.",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="JSON file with any SimulationConfig fields (mix_start, mix_end, ...); "
            "options given on the command line override it.",
        ),
    ] = None,
) -> None:
    """Write DIR/transactions.parquet and DIR/labels.parquet of synthetic card traffic.

    Cards with their own habits shop at merchants and terminals in several countries; fraud
    typologies (card testing, account takeover, compromised terminals, stolen cards abroad,
    high-value outliers, and bin_attack from --new-typology-day) are mixed in with a drifting
    mix; labels arrive days to weeks later. Same options and seed: byte-identical files.
    See docs/simulator.md.
    """
    from pydantic import ValidationError
    from rich.console import Console

    from scoring.logs import write_log
    from training.simulator import SimulationConfig, simulate, summarize

    overrides: dict[str, Any] = {
        "days": days,
        "cards": cards,
        "merchants": merchants,
        "banks": banks,
        "seed": seed,
        "start": _parse_start(start) if start is not None else None,
        "new_typology_day": new_typology_day,
        "fraud_rate": fraud_rate,
        "fraud_rate_drift": fraud_rate_drift,
        "genuine_label_share": genuine_label_share,
        "label_all": label_all,
        "amounts": amounts,
    }
    try:
        base = (
            SimulationConfig.model_validate_json(config_file.read_bytes())
            if config_file is not None
            else SimulationConfig()
        )
        values = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        config = SimulationConfig.model_validate(values)
    except ValidationError as exc:
        raise typer.BadParameter(_first_errors(exc)) from exc

    console = Console(stderr=True)
    began = time.perf_counter()
    with _progress_bar(console) as progress:
        transactions, labels = simulate(config, progress=progress)
        progress("write", 0, 2)
        tx_path = write_log(transactions, out / "transactions.parquet")
        progress("write", 1, 2)
        labels_path = write_log(labels, out / "labels.parquet")
        progress("write", 2, 2)
    elapsed = time.perf_counter() - began
    _print_summary(
        Console(),
        summarize(transactions, labels, config.start_ms),
        [tx_path, labels_path],
        elapsed,
    )


def _parse_start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--start") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _first_errors(exc: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
        for err in exc.errors()[:5]
    )


class _StageBars:
    """Adapts simulate()'s progress(stage, done, total) callback to one rich bar per stage."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def __enter__(self) -> _StageBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _progress_bar(console: Console) -> _StageBars:
    return _StageBars(console)


def _print_summary(console: Console, summary: Summary, paths: list[Path], elapsed: float) -> None:
    from rich.table import Table

    table = Table(title="Simulated traffic", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("transactions", f"{summary.transactions:,}")
    table.add_row("cards", f"{summary.cards:,}")
    table.add_row("fraudulent transactions", f"{summary.frauds:,}")
    table.add_row("fraud rate", f"{summary.fraud_rate:.3%}")
    for name, count in summary.by_typology.items():
        share = count / summary.frauds if summary.frauds else 0.0
        first = summary.first_day_of.get(name, 0)
        table.add_row(f"  {name}", f"{count:,} ({share:.0%}, from day {first})")
    table.add_row("fraud labels", f"{summary.fraud_labels:,}")
    table.add_row("genuine labels", f"{summary.genuine_labels:,}")
    for name, value in summary.delay_days.items():
        table.add_row(f"fraud label delay {name}", f"{value:.1f} days")
    for path in paths:
        table.add_row("wrote", str(path))
    table.add_row("elapsed", f"{elapsed:.1f} s")
    console.print(table)
