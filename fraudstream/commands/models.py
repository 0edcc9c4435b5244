"""``fraudstream models …``: the model registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fraudstream.commands.common import RegistryOption, console, fail, open_models

if TYPE_CHECKING:
    from scoring.registry import ModelRegistry

app = typer.Typer(help="List, promote and roll back model versions.", no_args_is_help=True)


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
