"""Dependencies of the routes, as ``Annotated`` aliases that read like nouns."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.security import retry_after

if TYPE_CHECKING:
    from api.hub import DecisionHub
    from api.security import KeyRing, RateLimiter
    from api.serving import ModelService
    from api.stream_link import KafkaLink
    from scoring.settings import Settings
    from scoring.tokenize import CardTokenizer


@dataclass
class Services:
    """Everything a request may need; one per app (``app.state.services``)."""

    settings: Settings
    keys: KeyRing
    limiter: RateLimiter
    hub: DecisionHub
    models: ModelService
    link: KafkaLink
    tokenizer: CardTokenizer | None = None  # None: card_number is not accepted


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated["Services", Depends(get_services)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="`Authorization: Bearer <API key>`: the key names the bank.",
)
_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="`X-API-Key: <API key>`, the same keys as the bearer scheme.",
)

UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="fraudstream"'}


@dataclass(frozen=True)
class Caller:
    bank_id: str
    key_id: str  # a digest of the key: the rate-limit bucket (keys themselves are never kept)


async def authenticated_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_header)],
) -> Caller:
    """The caller's bank, from its API key; 401 without a valid key, 429 over its rate.

    (The services come from the request, not from ``ServicesDep``: every dependency FastAPI
    resolves costs ~15 µs a request, and this one runs on every /v1 call.)"""
    services = services_of(request)
    keys = {k for k in (bearer.credentials if bearer else None, header_key) if k}
    if not keys:
        raise HTTPException(
            401,
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers=UNAUTHORIZED,
        )
    banks = {services.keys.bank_for(key) for key in keys}
    if None in banks or len(banks) != 1:
        raise HTTPException(401, "invalid API key", headers=UNAUTHORIZED)
    bank = banks.pop()
    assert bank is not None
    key_id = hashlib.sha256(min(keys).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    wait = services.limiter.take(key_id)
    if wait > 0:
        raise HTTPException(
            429,
            f"rate limit of this API key exceeded ({services.settings.api.rate_limit_per_s:g} "
            "per second per replica); retry later",
            headers={"Retry-After": retry_after(wait)},
        )
    return Caller(bank, key_id)


CallerDep = Annotated[Caller, Depends(authenticated_caller)]


def request_started(request: Request) -> float:
    """When the request arrived, on the event loop's clock (the deadline counts from it)."""
    loop = asyncio.get_running_loop()
    arrived = request.scope.get("fraudstream.started")
    if arrived is None:
        return loop.time()
    return loop.time() - max(time.monotonic() - arrived, 0.0)


async def single_valued_query(request: Request) -> None:
    """Every query parameter of this API takes one value: ``?limit=1&limit=2`` is a 422, not a
    silent choice of one of them."""
    names = [name for name, _value in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": "given more than once", "type": "multiple_values"}
                for name in repeated
            ]
        )
