"""``fraudstream models …``: the model registry."""

from __future__ import annotations

from typing import Annotated

import typer

from fraudstream.commands.common import RegistryOption, console, fail, registry_path

app = typer.Typer(help="List, promote and roll back model versions.", no_args_is_help=True)


@app.command("list")
def list_models(registry: RegistryOption = None) -> None:
    """Every version, newest last, with its aliases and headline metrics."""
    from rich.console import Console
    from rich.table import Table

    from scoring.registry import ModelRegistry

    models = ModelRegistry(registry_path(registry))
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


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version (or alias) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    registry: RegistryOption = None,
) -> None:
    """Point an alias (default: champion) at VERSION."""
    from scoring.registry import ModelRegistry, RegistryError

    try:
        state = ModelRegistry(registry_path(registry)).promote(version, alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    console.print(f"{alias} → {state.version}")


@app.command()
def rollback(
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = "champion",
    registry: RegistryOption = None,
) -> None:
    """Point an alias back at the version it held before."""
    from scoring.registry import ModelRegistry, RegistryError

    try:
        version = ModelRegistry(registry_path(registry)).rollback(alias)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    console.print(f"{alias} → {version}")
