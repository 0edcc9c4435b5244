"""``fraudstream api``: serve the bank-facing HTTP API with uvicorn until SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from fraudstream.commands.common import RegistryOption, fail, log_to_stderr, registry_path


def api(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: FRAUD_API__HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (default: FRAUD_API__PORT, 8000).")
    ] = None,
    registry: RegistryOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Alias or version to serve (default: FRAUD_SCORING__MODEL_REF)."),
    ] = None,
) -> None:
    """Serve /v1 (decisions within a deadline), /healthz, /readyz and /metrics (docs/api.md).

    One process; SIGTERM stops taking connections, lets requests in flight finish, then closes
    the Kafka clients. Refuses to start without API keys (FRAUD_API__API_KEYS) unless
    FRAUD_API__DEVELOPMENT=true.
    """
    import logging
    import signal
    import sys

    import uvicorn

    from api.app import create_app
    from api.security import ApiKeyConfigError
    from scoring.settings import get_settings
    from scoring.tokenize import TokenizationConfigError

    log_to_stderr()
    settings = get_settings()
    chosen = {"host": host, "port": port}
    settings = settings.model_copy(
        update={
            "api": settings.api.model_copy(update={k: v for k, v in chosen.items() if v}),
            "scoring": settings.scoring.model_copy(
                update={"model_ref": model or settings.scoring.model_ref}
            ),
        }
    )
    try:
        app = create_app(settings, registry=registry_path(registry))
    except (ApiKeyConfigError, TokenizationConfigError) as exc:
        raise fail(f"api not started: {exc}") from None
    if settings.api.api_keys is None and settings.api.development:
        logging.getLogger("fraudstream.api").warning(
            "DEVELOPMENT MODE: accepting the public API key 'fraudstream-dev-key' (bank dev-bank)"
        )
    if settings.api.tokenization_key is None and settings.api.development:
        logging.getLogger("fraudstream.api").warning(
            "DEVELOPMENT MODE: card_number is tokenized with the public development key"
        )
    # uvicorn re-raises SIGTERM once it has shut down gracefully, so the process would end "killed
    # by SIGTERM"; like the worker, a clean stop on SIGTERM exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=settings.api.host,
        port=settings.api.port,
        # uvicorn's access log prints raw paths, which carry transaction ids; the request-duration
        # histogram (route templates only) is the access record.
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        log_config=None,  # keep the logging configured above
    )
