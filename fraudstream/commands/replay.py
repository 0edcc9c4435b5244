"""``fraudstream replay``: produce a transactions log (and its labels) into Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fraudstream.commands.common import console, fail


def replay(
    transactions: Annotated[Path, typer.Option(help="Transactions log (.parquet/.csv/.jsonl).")],
    labels: Annotated[
        Path | None, typer.Option(help="Labels log; each label is sent at its reported_at.")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Target transactions per second (default: flat out).")
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(help="Time compression: event time runs this many times faster than real."),
    ] = None,
    create_topics: Annotated[bool, typer.Option(help="Create missing topics first.")] = True,
) -> None:
    """Replay a log into Kafka keyed by card, keeping each card's order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from scoring.logs import LogError, read_labels, read_transactions
    from scoring.settings import get_settings
    from stream import topics
    from stream.replay import replay as run_replay

    if rate is not None and speedup is not None:
        raise fail("give --rate or --speedup, not both")
    kafka = get_settings().kafka
    try:
        tx = read_transactions(transactions)
        lb = read_labels(labels) if labels else None
    except (LogError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    if create_topics:
        topics.create_topics(kafka)
    with Progress(
        *Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("replaying", total=tx.num_rows)
        summary = run_replay(
            tx, lb, kafka=kafka, rate=rate, speedup=speedup,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    table = Table(title="replay", show_header=False, title_justify="left")
    for name, value in (
        ("transactions", f"{summary.transactions:,}"),
        ("labels", f"{summary.labels:,}"),
        ("seconds", f"{summary.seconds:.1f}"),
        ("rate", f"{summary.rate:,.0f} transactions/s"),
        ("failed deliveries", str(summary.failed)),
        ("client errors", _counts(summary.client_errors)),
    ):
        table.add_row(name, value)
    console.print(table)
    if summary.failed:
        raise typer.Exit(1)


def _counts(by_name: dict[str, int]) -> str:
    """``_TRANSPORT 12, _ALL_BROKERS_DOWN 1``, or ``none``."""
    return ", ".join(f"{name} {n:,}" for name, n in sorted(by_name.items())) or "none"
