"""``fraudstream worker``: run one stream worker until SIGTERM."""

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


def worker(
    registry: RegistryOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Alias or version to serve (default: FRAUD_SCORING__MODEL_REF)."),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(help="Stable worker name (default: FRAUD_STREAM__INSTANCE_ID or the host)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of /metrics, /healthz, /readyz (default: 8001).")
    ] = None,
    max_seconds: MaxSecondsOption = None,
) -> None:
    """Consume transactions and labels, decide every transaction exactly once."""
    from confluent_kafka import KafkaException

    from scoring.registry import RegistryError
    from scoring.settings import get_settings
    from stream.worker import Worker

    log_to_stderr()
    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(
            update={"stream": settings.stream.model_copy(update={"http_port": port})}
        )
    try:
        running = Worker(
            settings, registry=registry_path(registry), model_ref=model, instance_id=instance
        )
        stats = running.run(max_seconds=max_seconds)
    except (RegistryError, KafkaException, RuntimeError, OSError) as exc:
        raise fail(f"worker stopped: {exc}") from None
    console.print(
        f"worker {running.instance}: {stats.decisions:,} decisions, "
        f"{stats.dead_letters:,} dead letters, {stats.restores} state restores, "
        f"{stats.swaps} model swaps"
    )
