"""``fraudstream models …``: the model registry."""

from __future__ import annotations

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
    from scoring.registry import ModelRegistry

app = typer.Typer(
    help="List, promote and roll back model versions; compare the shadow model.",
    no_args_is_help=True,
)


@app.command("list")
def list_models(registry: RegistryOption = None) -> None:
    """Every version, newest last, with its aliases and headline metrics."""
    from rich.console import Console
    from rich.table import Table

    models = open_models(registry)
    aliases: dict[str, list[str]] = {}
    for alias, state in models.aliases().items():
        aliases.setdefault(state.version, []).append(alias)
    table = Table(title=f"models in {models.storage.describe()}", title_justify="left")
    for column in ("version", "aliases", "parent"):
        table.add_column(column, no_wrap=True)
    for column in ("window", "validation AP", "created"):
        table.add_column(column, overflow="fold")
    for manifest in models.list():
        window = manifest.window
        table.add_row(
            manifest.version,
            ", ".join(aliases.get(manifest.version, [])),
            manifest.parent or "",
            f"{window.from_ or '…'} → {window.until or '…'}",
            f"{manifest.metrics.get('validation_average_precision', float('nan')):.4f}",
            manifest.created_at.isoformat(timespec="seconds"),
        )
    Console(width=max(Console().width, 140)).print(table)  # a listing is the result: stdout


AnnounceOption = Annotated[
    bool,
    typer.Option(
        "--announce/--no-announce",
        help="Publish the change on model-updates so running services hot-swap.",
    ),
]

#: How long the broker has to acknowledge an announcement.
ANNOUNCE_TIMEOUT_S = 10.0


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version (or alias) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    registry: RegistryOption = None,
    announce: AnnounceOption = True,
) -> None:
    """Point an alias (default: champion) at VERSION and announce it."""
    from scoring.registry import RegistryError

    models = open_models(registry)
    try:
        state = models.promote(version, alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    _announce_move(models, alias, state.version, state.log[-1].previous, announce)


@app.command()
def rollback(
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = "champion",
    registry: RegistryOption = None,
    announce: AnnounceOption = True,
) -> None:
    """Point an alias back at the version it held before, and announce it."""
    from scoring.registry import RegistryError

    models = open_models(registry)
    try:
        before = models.aliases().get(alias)
        version = models.rollback(alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    _announce_move(models, alias, version, before.version if before else None, announce)


def _announce_move(
    models: ModelRegistry, alias: str, version: str, previous: str | None, announce: bool
) -> None:
    """Report an alias move that is done in the registry, announcing it first if asked.

    A failed announcement does not undo the move: exit 1 and say what the services will see.
    """
    if not announce:
        console.print(f"{alias} → {version} (not announced)")
        return
    from rich.markup import escape

    from scoring.announcements import announcement_for
    from scoring.registry import RegistryError
    from scoring.settings import get_settings
    from stream.announce import AnnouncementError, publish_announcement
    from stream.topics import TopicNames

    kafka = get_settings().kafka
    topic = TopicNames.from_settings(kafka).model_updates
    try:
        announcement = announcement_for(models, alias, previous)
        publish_announcement(kafka, announcement, timeout_s=ANNOUNCE_TIMEOUT_S)
    except (AnnouncementError, RegistryError) as exc:
        raise fail(
            escape(
                f"{alias} → {version} in the registry, but the announcement on {topic} failed: "
                f"{exc}; running services will pick it up when they restart"
            )
        ) from None
    console.print(f"{alias} → {version} (announced on {escape(topic)})")


@app.command()
def compare(
    since: Annotated[
        str | None,
        typer.Option(help="Only transactions at or after this time (ISO 8601; default: all)."),
    ] = None,
    maturity_days: Annotated[
        float | None,
        typer.Option(
            help="Unlabelled transactions count as genuine once this old (default: "
            "FRAUD_TRAINING__LABEL_MATURITY_DAYS); younger ones are left out.",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The clock maturity is measured on (ISO 8601; default: event time, the "
            "newest transaction of the shadow records).",
        ),
    ] = None,
    shadow_version: Annotated[
        str | None,
        typer.Option(help="Only rows scored in shadow by this version (default: every one)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up reading after this many seconds.")] = 600,
) -> None:
    """Shadow mode: the served model against the shadow model on the same matured transactions.

    Reads feature-log (the records with a shadow score: workers run with
    FRAUD_STREAM__SHADOW_REF), transactions and labels; prints a table and, as the last line of
    standard output, the same numbers as JSON.
    """
    import orjson
    from confluent_kafka import KafkaException
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from scoring.decision import policy_from
    from scoring.settings import get_settings
    from training.compare import compare as compare_models
    from training.compare import select_rows, summary_lines
    from training.compare_kafka import read_topics

    settings = get_settings()
    start = parse_time(since, "--since")
    clock = parse_time(as_of, "--as-of")
    since_ms = None if start is None else round(start.timestamp() * 1000)
    maturity = settings.training.label_maturity_days if maturity_days is None else maturity_days
    if maturity < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--maturity-days")
    with steps() as progress:
        task = progress.add_task(f"reading {settings.kafka.topic('feature-log')} and labels")
        try:
            data = read_topics(
                settings.kafka,
                since_ms=since_ms,
                timeout_s=timeout,
                on_progress=lambda n: progress.advance(task, n),
            )
        except (KafkaException, RuntimeError, TimeoutError) as exc:
            raise fail(
                escape(f"reading Kafka at {settings.kafka.effective_bootstrap()}: {exc}")
            ) from None
    log = data.log
    if len(log) == 0:
        raise fail(
            f"none of the {log.records:,} feature-log records has a shadow score: run the workers "
            "with FRAUD_STREAM__SHADOW_REF (e.g. challenger)"
        )
    selection = select_rows(
        log, data.transactions, data.labels, maturity_days=maturity, since_ms=since_ms,
        clock_ms=None if clock is None else round(clock.timestamp() * 1000),
        shadow_version=shadow_version,
    )  # fmt: skip
    if len(selection.rows) == 0:
        raise fail(f"no row to compare: {selection.excluded}")
    k = settings.training.card_precision_k
    result = compare_models(selection, policy_from(settings), k)
    for line in summary_lines(result):
        console.print(escape(line))
    if len(selection.shadow_versions) > 1:
        console.print("[yellow]several shadow versions: choose one with --shadow-version[/yellow]")
    table = Table(title="served (champion) vs shadow", title_justify="left")
    for column in ("", "champion", "shadow", "shadow − champion"):
        table.add_column(column, justify="left" if not column else "right")
    for row in result.table_rows():
        table.add_row(*row)
    out = Console(width=max(Console().width, 100))
    out.print(table)
    print(orjson.dumps(result.as_dict()).decode(), flush=True)
