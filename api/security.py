"""Who is calling (API keys → bank), how often (token buckets), and how much (body size).

API keys are never stored: settings hold the SHA-256 hex of each key, per bank
(``FRAUD_API__API_KEYS='{"bank-a": ["<sha256>", "<sha256>"]}'``). Several hashes per bank is how
keys rotate: add the new key's hash, roll the pods, move the clients, remove the old hash, roll
again. A request's key is hashed and compared with every configured hash in constant time
(``hmac.compare_digest``), so the time taken says nothing about which prefix matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scoring.settings import ApiSettings

#: The public development key (the Helm chart's global.development placeholder uses the same).
DEV_BANK = "dev-bank"
DEV_KEY = "fraudstream-dev-key"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ApiKeyConfigError(ValueError):
    """The API-key configuration is missing or malformed; the message says what to fix."""


def hash_key(key: str) -> str:
    """The SHA-256 hex digest to configure for ``key`` (what ``api.api_keys`` holds)."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured key hashes and the bank each belongs to."""

    def __init__(self, banks: dict[str, list[str]]) -> None:
        self._hashes: list[tuple[bytes, str]] = []
        owners: dict[str, str] = {}
        for bank, hashes in banks.items():
            if not isinstance(bank, str) or not 1 <= len(bank) <= 64:
                raise ApiKeyConfigError(f"api.api_keys: bank id {bank!r} must be 1-64 characters")
            if not isinstance(hashes, list) or not hashes:
                raise ApiKeyConfigError(f"api.api_keys[{bank!r}]: give a list of key hashes")
            for digest in hashes:
                if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                    raise ApiKeyConfigError(
                        f"api.api_keys[{bank!r}]: each entry must be the lowercase SHA-256 hex "
                        "digest of a key (64 characters), never the key itself"
                    )
                if owners.setdefault(digest, bank) != bank:
                    raise ApiKeyConfigError(
                        f"api.api_keys: one key hash is listed for {owners[digest]!r} and {bank!r}"
                    )
                self._hashes.append((bytes.fromhex(digest), bank))
        if not self._hashes:
            raise ApiKeyConfigError("api.api_keys is empty")

    @classmethod
    def from_settings(cls, api: ApiSettings) -> KeyRing:
        """The keys of ``api.api_keys``. Without any: the development key when
        ``api.development`` is set, otherwise :class:`ApiKeyConfigError` (no working default)."""
        if api.api_keys is None or not api.api_keys.get_secret_value().strip():
            if api.development:
                return cls({DEV_BANK: [hash_key(DEV_KEY)]})
            raise ApiKeyConfigError(
                "no API keys configured: set FRAUD_API__API_KEYS to JSON "
                '{"<bank_id>": ["<sha256 hex of a key>", ...]} (for local development only, '
                f"FRAUD_API__DEVELOPMENT=true accepts the public key {DEV_KEY!r} for bank "
                f"{DEV_BANK!r})"
            )
        try:
            banks = json.loads(api.api_keys.get_secret_value())
        except json.JSONDecodeError as exc:
            raise ApiKeyConfigError(f"api.api_keys is not JSON: {exc.msg}") from None
        if not isinstance(banks, dict):
            raise ApiKeyConfigError("api.api_keys must be a JSON object {bank_id: [hashes]}")
        return cls(banks)

    @property
    def banks(self) -> set[str]:
        return {bank for _digest, bank in self._hashes}

    def bank_for(self, key: str) -> str | None:
        """The bank whose key this is, or None. Compares with every hash (constant time)."""
        # Header values reach us decoded as latin-1: encoding back gives the bytes the client
        # sent, so a key that is UTF-8 text matches hash_key(key) of that text.
        digest = hashlib.sha256(key.encode("latin-1", "replace")).digest()
        found = None
        for candidate, bank in self._hashes:
            if hmac.compare_digest(candidate, digest):
                found = bank
        return found


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """A token bucket per API key: ``rate`` tokens a second, at most ``burst`` saved up.

    Per replica: N replicas behind a load balancer allow about N × rate in total.
    """

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, tokens: int = 1) -> float:
        """Take ``tokens`` (capped at the burst); 0.0 when allowed, else seconds to wait."""
        tokens = min(tokens, self.burst)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= tokens:
            bucket.tokens -= tokens
            return 0.0
        return (tokens - bucket.tokens) / self.rate


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``limit`` bytes — at once from Content-Length, or as
    soon as the streamed body passes the limit (chunked uploads, lying headers).

    (Starlette ≥ 1.0 has a RequestBodyLimitMiddleware too; this one answers in the API's JSON
    error format and before the application runs when Content-Length already says too much.)
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _send_json(send, 413, f"request body larger than {self.limit} bytes")
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPExceptions met while reading the body; the app's
                    # handler then renders it as JSON.
                    raise BodyTooLargeError(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
