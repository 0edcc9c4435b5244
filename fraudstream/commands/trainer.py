"""``fraudstream trainer``: run the incremental trainer until SIGTERM (docs/training.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from fraudstream.commands.common import (
    MaxSecondsOption,
    RegistryOption,
    console,
    fail,
    log_to_stderr,
    registry_path,
)


def trainer(
    registry: RegistryOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port of /metrics, /healthz, /readyz (default: FRAUD_TRAINING__HTTP_PORT, 8002)."
        ),
    ] = None,
    max_seconds: MaxSecondsOption = None,
) -> None:
    """Learn from matured labels; promote challengers that beat the champion, announce them."""
    from confluent_kafka import KafkaException

    from scoring.registry import RegistryError
    from scoring.settings import get_settings
    from training.trainer import Trainer

    log_to_stderr()
    try:
        running = Trainer(get_settings(), registry=registry_path(registry))
        stats = running.run(max_seconds=max_seconds, port=port)
    except (RegistryError, KafkaException, RuntimeError, OSError, ValueError) as exc:
        raise fail(f"trainer stopped: {exc}") from None
    console.print(
        f"trainer: {stats.rounds} rounds, {stats.promotions} promotions, "
        f"{stats.refusals} refusals, {stats.records:,} records read"
    )
