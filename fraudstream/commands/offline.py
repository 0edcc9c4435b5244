"""Offline verbs: ``train``, ``score-log``, ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudstream.commands.common import (
    RegistryOption,
    console,
    fail,
    open_models,
    parse_time,
    steps,
)

if TYPE_CHECKING:
    import pyarrow as pa

TransactionsOption = Annotated[
    Path, typer.Option(help="Transactions log (.parquet/.csv/.jsonl).", show_default=False)
]
FromOption = Annotated[
    str | None, typer.Option("--from", help="ISO 8601 start (inclusive) of the rows used.")
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="ISO 8601 end (exclusive) of the rows used.")
]


def _read_logs(transactions: Path, labels: Path | None) -> tuple[pa.Table, pa.Table | None]:
    from scoring.logs import LogError, read_labels, read_transactions

    try:
        return read_transactions(transactions), (read_labels(labels) if labels else None)
    except (LogError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None


def train(
    transactions: TransactionsOption,
    labels: Annotated[Path, typer.Option(help="Labels log: the targets (all of it).")],
    start: FromOption = None,
    until: UntilOption = None,
    registry: RegistryOption = None,
    seed: Annotated[int, typer.Option(help="Random seed (same data + seed = same model).")] = 7,
    promote: Annotated[bool, typer.Option(help="Point 'champion' at the new version.")] = False,
) -> None:
    """Train on the transactions in [--from, --until); register a new model version.

    Features are built by replaying the whole log from its start (labels applied at their
    reported_at); targets come from every label in the labels file. The new version is the last
    line of standard output."""
    from scoring.features import EngineConfig
    from scoring.settings import get_settings
    from training.train import train_and_register

    tx, lb = _read_logs(transactions, labels)
    assert lb is not None
    models = open_models(registry)
    with steps() as progress:
        task = progress.add_task("reading logs")
        try:
            manifest = train_and_register(
                tx, lb, registry=models, seed=seed,
                start=parse_time(start, "--from"), until=parse_time(until, "--until"),
                on_step=lambda text: progress.update(task, description=text),
                engine_config=EngineConfig.from_settings(get_settings()),  # = the worker's
            )  # fmt: skip
        except ValueError as exc:
            raise fail(str(exc)) from None
    if promote:
        models.promote(manifest.version)
    console.print(f"registered [bold]{manifest.version}[/] in {models.storage.describe()}")
    for name, value in manifest.metrics.items():
        console.print(f"  {name}: {value:.4g}")
    print(manifest.version)


def score_log(
    transactions: TransactionsOption,
    out: Annotated[Path, typer.Option(help="Output file (.parquet/.csv/.jsonl).")],
    labels: Annotated[
        Path | None, typer.Option(help="Labels log, applied at each label's reported_at.")
    ] = None,
    start: FromOption = None,
    until: UntilOption = None,
    model: Annotated[str, typer.Option(help="Model version or alias.")] = "champion",
    registry: RegistryOption = None,
) -> None:
    """Replay a whole log through features, model and policy; write the decisions in a window.

    Output columns: transaction_id, score, action, model_version, then rule, cost parts and the
    transaction's bank_id, card_id, timestamp and amount (which `evaluate` uses)."""
    from scoring.decision import policy_from
    from scoring.features import EngineConfig
    from scoring.logs import write_log
    from scoring.registry import RegistryError
    from scoring.settings import get_settings
    from training.offline import score_log as run_score_log

    settings = get_settings()

    tx, lb = _read_logs(transactions, labels)
    try:
        loaded = open_models(registry).load(model)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    with steps() as progress:
        progress.add_task(f"scoring with {loaded.version} ({loaded.scorer.engine})")
        scores = run_score_log(
            tx, lb, loaded, policy=policy_from(settings),
            start=parse_time(start, "--from"), until=parse_time(until, "--until"),
            cpu_second_usd=settings.scoring.cpu_second_usd,
            reasons_method=settings.scoring.reasons_method,
            engine_config=EngineConfig.from_settings(settings),  # = the worker's
        )  # fmt: skip
    write_log(scores, out)
    console.print(f"wrote {scores.num_rows:,} decisions to {out}")


def evaluate(
    scores: Annotated[Path, typer.Option(help="Output of score-log.")],
    labels: Annotated[Path, typer.Option(help="Labels log (the truth).")],
    k: Annotated[int, typer.Option(help="Cards per day for card precision@k.")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
) -> None:
    """AUC ROC, average precision, card precision@k per day, expected cost per transaction."""
    import pyarrow.parquet as pq
    from rich.table import Table

    from scoring.logs import read_labels
    from training.evaluate import evaluate as run_evaluate

    if not scores.exists():
        raise fail(f"{scores}: no such file")
    table = pq.read_table(scores) if scores.suffix == ".parquet" else None
    if table is None:
        raise fail(f"{scores}: evaluate reads the Parquet output of score-log")
    result = run_evaluate(table, read_labels(labels), k=k)
    out = Table(title="evaluation", show_header=False, title_justify="left")
    for name, value in result.as_dict().items():
        out.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(out)
    if json_out:
        json_out.write_text(json.dumps(result.as_dict(), indent=2))
    print(json.dumps(result.as_dict()))
