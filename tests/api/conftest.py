"""Fixtures for the API tests: an app with a fake stream (tests/api/fakes.py) and two banks.

``api_client(...)`` builds a ``TestClient`` (the lifespan runs) with settings overrides;
``async_api(...)`` gives an ``httpx.AsyncClient`` on the ASGI app for concurrent requests.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette 1.x nudges towards "httpx2"; the TestClient works the same with httpx.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.security import hash_key
from scoring.settings import ApiSettings, ScoringSettings, Settings
from tests.api.fakes import FakeModels, FakeStream

KEY_A = "key-a-0123456789"
KEY_B1 = "key-b-old-0123456789"
KEY_B2 = "key-b-new-0123456789"  # bank-b rotates: both keys work
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"X-API-Key": KEY_B2}
B_OLD = {"Authorization": f"Bearer {KEY_B1}"}
API_KEYS = {"bank-a": [hash_key(KEY_A)], "bank-b": [hash_key(KEY_B1), hash_key(KEY_B2)]}


def transaction(transaction_id: str = "tx-1", **fields: Any) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "card_id": "card-77",
        "timestamp": "2026-05-04T12:00:00.250Z",
        "amount": 42.5,
        **fields,
    }


def make_settings(*, banks: dict[str, dict[str, Any]] | None = None, **api: Any) -> Settings:
    api_settings = {"api_keys": SecretStr(json.dumps(API_KEYS)), "deadline_ms": 50.0, **api}
    return Settings(api=ApiSettings(**api_settings), scoring=ScoringSettings(banks=banks or {}))


@dataclass
class Harness:
    app: FastAPI
    stream: FakeStream
    models: FakeModels


def build(
    delay: float | None = 0.0, *, banks: dict[str, dict[str, Any]] | None = None, **api: Any
) -> Harness:
    stream, models = FakeStream(delay), FakeModels()
    app = create_app(make_settings(banks=banks, **api), link=stream, models=models)
    return Harness(app, stream, models)


@pytest.fixture
def api_client() -> Iterator[Callable[..., AbstractContextManager[tuple[TestClient, Harness]]]]:
    """``with api_client(delay=..., deadline_ms=..., banks=...) as (client, harness):``"""

    @contextmanager
    def open_client(*args: Any, **kwargs: Any) -> Iterator[tuple[TestClient, Harness]]:
        harness = build(*args, **kwargs)
        with TestClient(harness.app, raise_server_exceptions=False) as client:
            yield client, harness

    yield open_client


@asynccontextmanager
async def async_api(*args: Any, **kwargs: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Harness]]:
    """The app with its lifespan on this event loop, and an async client for it."""
    harness = build(*args, **kwargs)
    async with harness.app.router.lifespan_context(harness.app):
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client, harness
