"""Small helpers shared by the verbs: time arguments, progress, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from scoring.registry import ModelRegistry

# Progress and messages go to stderr: stdout carries results (e.g. the new model version).
console = Console(stderr=True)

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        help="Model registry directory (default: FRAUD_SCORING__REGISTRY); with "
        "FRAUD_SCORING__REGISTRY_S3__BUCKET set, the local cache of the bucket's registry."
    ),
]


MaxSecondsOption = Annotated[
    float | None,
    typer.Option(help="Stop after this many seconds (default: run until SIGTERM)."),
]


def log_to_stderr() -> None:
    """Long-running services (worker, api, trainer) log lines with time, level and source."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def parse_time(value: str | None, option: str) -> datetime | None:
    """ISO 8601; a time without offset is taken as UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def registry_path(path: Path | None) -> Path:
    from scoring.settings import get_settings

    return path or get_settings().scoring.registry


def open_models(path: Path | None) -> ModelRegistry:
    """The registry of the settings (the S3 bucket when configured), ``path`` overriding
    FRAUD_SCORING__REGISTRY."""
    from scoring.registry import open_registry
    from scoring.settings import get_settings

    return open_registry(get_settings(), path)


@contextmanager
def steps() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        yield progress


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)
