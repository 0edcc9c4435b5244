"""The bank-facing FastAPI application (``fraudstream api`` serves it with uvicorn).

:func:`create_app` wires the parts; each lives in its own module:

* :mod:`api.security` — API keys (hashes only) → bank, per-key rate limits, body-size limit;
* :mod:`api.hub` — in-memory decisions, idempotency, deadlines, the review queue;
* :mod:`api.fallback` — the bank's fallback policy when the stream is late;
* :mod:`api.stream_link` — Kafka: produce transactions and labels, read every decision back;
* :mod:`api.serving` — the loaded model (``/v1/models``, ``/readyz``), hot-swapped;
* :mod:`api.metrics` — Prometheus metrics and request timing;
* :mod:`api.routes` — one router per resource.

Tests pass their own ``link`` and ``models`` (fakes) to run without Kafka or a registry.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api import errors
from api.deps import Services
from api.hub import DecisionHub, HubLimits
from api.metrics import ApiMetrics, RequestTiming
from api.routes import decisions, labels, ops, reviews, transactions
from api.routes import models as models_routes
from api.security import BodySizeLimit, KeyRing, RateLimiter
from api.serving import ModelService
from api.stream_link import KafkaLink
from scoring.decision import policy_from
from scoring.registry import open_registry
from scoring.settings import Settings, get_settings
from scoring.tokenize import tokenizer_from_settings

DESCRIPTION = """
Card-fraud decisions for banks: **approve / review / decline** within your deadline, with the
reasons and what the decision cost.

* **Auth**: every `/v1` call carries an API key, as `Authorization: Bearer <key>` or
  `X-API-Key: <key>`. The key names your bank; `bank_id` is never taken from a body, and another
  bank's transactions are invisible (404).
* **Deadlines**: when the stream does not decide in time, your bank's fallback policy does and the
  decision says `degraded: true`.
* **Idempotency**: resending a `transaction_id` with the same body returns the same decision; with
  a different body it is a 409.
* **Errors** are JSON: `{"detail": "..."}`, or for invalid input a list of
  `{"loc", "msg", "type"}` (the values you sent are never echoed).

Operations: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus). Guide: docs/api.md.
"""

TAGS = [
    {"name": "transactions", "description": "Decide transactions synchronously."},
    {"name": "decisions", "description": "Look up past decisions."},
    {"name": "labels", "description": "Fraud and genuine feedback."},
    {"name": "reviews", "description": "The analysts' review queue."},
    {"name": "models", "description": "Which model decides."},
]


async def _freeze_when_ready(models: Any, link: Any, *, give_up_s: float = 300.0) -> None:
    """Once the model is loaded and the decisions read-back has caught up, move every object
    alive then (imported modules, the model, the app) out of the garbage collector's reach.

    Why: the API holds ~200k long-lived objects (numpy, numba, pydantic, FastAPI, the model);
    every full collection walked them all and stopped the event loop for 100-300 ms at a time
    under load (benchmarks/api_load.py measured it), which is a deadline miss for every request
    in flight. Frozen objects are never collected, which is right for objects that live as long
    as the process; what is allocated later (requests, stored decisions) is collected as usual.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + give_up_s
    while loop.time() < until:
        if models.status()[0] and link.status()[0]:
            break
        await asyncio.sleep(0.5)
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    registry: Path | None = None,
    link: Any = None,
    models: Any = None,
) -> FastAPI:
    """The application. Raises :class:`api.security.ApiKeyConfigError` without API keys (unless
    ``api.development``): there is no working default; and
    :class:`scoring.tokenize.TokenizationConfigError` for a malformed tokenization key."""
    settings = settings or get_settings()
    api = settings.api
    keys = KeyRing.from_settings(api)
    secret = api.tokenization_key.get_secret_value() if api.tokenization_key else None
    tokenizer = tokenizer_from_settings(secret, development=api.development)
    metrics = ApiMetrics()
    hub = DecisionHub(
        policy_from(settings),
        HubLimits(
            default_deadline_ms=api.deadline_ms,
            window_s=api.decision_window_s,
            max_entries=api.max_stored_decisions,
            max_reviews=api.max_pending_reviews,
            cpu_second_usd=settings.scoring.cpu_second_usd,
            deadline_margin_ms=api.deadline_margin_ms,
        ),
        metrics,
    )
    if models is None:
        store = open_registry(settings, registry)
        models = ModelService(store, settings.scoring.model_ref, metrics)
    if link is None:
        link = KafkaLink(
            settings.kafka,
            lookback_s=api.decision_window_s,
            models=models,
            isolation=api.decisions_isolation,
            linger_ms=api.producer_linger_ms,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop(), link)
        link.start(asyncio.get_running_loop(), hub)
        # Loading (digests, maybe a native build) can take seconds: requests are answered
        # meanwhile (by the stream, or the fallback); /readyz says when the model is there.
        threading.Thread(target=models.load, name="model-load", daemon=True).start()
        freezer = asyncio.get_running_loop().create_task(_freeze_when_ready(models, link))
        try:
            yield
        finally:
            freezer.cancel()
            hub.close()
            link.close()
            models.close()

    app = FastAPI(
        title="fraudstream",
        version="1",
        summary="Card-fraud decisions within a deadline.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.services = Services(
        settings=settings,
        keys=keys,
        limiter=RateLimiter(api.rate_limit_per_s, api.rate_limit_burst),
        hub=hub,
        models=models,
        link=link,
        tokenizer=tokenizer,
    )
    errors.install(app)
    app.include_router(transactions.build_router(api.max_batch, tokenizer))
    app.include_router(decisions.router)
    app.include_router(labels.router)
    app.include_router(reviews.router)
    app.include_router(models_routes.router)
    app.include_router(ops.router)
    app.add_middleware(BodySizeLimit, limit=api.max_body_bytes)
    app.add_middleware(RequestTiming, metrics=metrics)  # added last: outermost, times everything
    return app
