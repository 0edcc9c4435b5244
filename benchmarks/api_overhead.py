"""CPU per request inside the API process, without HTTP or Kafka, beside a bare FastAPI endpoint.

``benchmarks/api_load.py`` measures the whole path under load; on 2 shared cores its numbers move
with the host. This isolates one part that code changes move: the application's own CPU per
``POST /v1/transactions`` (middleware, auth, validation, idempotency store, deadline timer,
metrics), called as an ASGI app on one event loop, one request after another. The stream is a
stand-in that "decides" each transaction at once with a canned decision (its cost is inside the
numbers, ~10 µs). The bare endpoint is a FastAPI app returning a constant JSON.

Each target runs ``--repeats`` rounds of ``--requests`` requests, interleaved; the table gives the
median round. Writes results/api_overhead.{json,md,png}.

    .venv/bin/python benchmarks/api_overhead.py          # ~1 min
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import typer

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
KEY = "bench-key-0123456789"
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class InstantStream:
    """The API's Kafka link, answering every transaction on the next loop turn."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hub: Any = None

    def start(self, loop: asyncio.AbstractEventLoop, hub: Any) -> None:
        self.loop, self.hub = loop, hub

    def send_transaction(self, key: bytes, value: bytes, on_failed: Callable[[str], None]) -> None:
        from api.hub import StreamDecision

        tx = orjson.loads(value)
        decision = {
            "transaction_id": tx["transaction_id"],
            "bank_id": tx["bank_id"],
            "score": 0.01,
            "action": "approve",
            "reasons": [],
            "model_version": "bench",
            "rule": None,
            "degraded": False,
            "cost": {
                "expected_fraud_loss": 0.4,
                "review_cost": 0.0,
                "friction_cost": 0.0,
                "compute_usd": 1e-8,
            },
            "latency_ms": 1.0,
            "decided_at": "2026-05-04T12:00:00.300Z",
        }
        record = StreamDecision(
            tx["bank_id"], tx["transaction_id"], "approve", decision["decided_at"],
            orjson.dumps(decision), time.time(),
        )  # fmt: skip
        assert self.loop is not None
        self.loop.call_soon(self.hub.on_stream_decisions, [record])

    async def send_label(self, key: bytes, value: bytes) -> None:
        return None

    def status(self) -> tuple[bool, str]:
        return True, "instant"

    def alive(self) -> tuple[bool, str]:
        return True, "instant"

    def close(self) -> None:
        return None


class NoModels:
    def load(self) -> None:
        return None

    def offer(self, value: bytes) -> None:
        return None

    def poll(self) -> None:
        return None

    def status(self) -> tuple[bool, str]:
        return True, "none"

    def close(self) -> None:
        return None


def fraudstream_app() -> Asgi:
    from pydantic import SecretStr

    from api.app import create_app
    from api.security import hash_key
    from scoring.settings import ApiSettings, Settings

    api = ApiSettings(
        api_keys=SecretStr(json.dumps({"bank01": [hash_key(KEY)]})),
        rate_limit_per_s=1e9,
        rate_limit_burst=10**9,
    )
    app: Asgi = create_app(Settings(api=api), link=InstantStream(), models=NoModels())
    return app


def bare_app() -> Asgi:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/transactions")
    async def decide() -> dict[str, Any]:
        return {"transaction_id": "bare", "action": "approve", "degraded": False}

    return app  # type: ignore[return-value]


async def _call(app: Asgi, i: int) -> int:
    body = orjson.dumps(
        {
            "transaction_id": f"tx-{i}",
            "card_id": "card-77",
            "timestamp": "2026-05-04T12:00:00.250Z",
            "amount": 42.5,
            "merchant_id": "m-1",
            "mcc": "5411",
            "country": "DE",
            "channel": "pos",
            "card_present": True,
        }
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/transactions",
        "raw_path": b"/v1/transactions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def _lifespan(app: Asgi) -> None:
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def send(_message: Any) -> None:
        return None

    asyncio.get_running_loop().create_task(app({"type": "lifespan"}, queue.get, send))
    await asyncio.sleep(0.2)


async def _rounds(requests: int, repeats: int) -> dict[str, list[float]]:
    targets = {"bare FastAPI endpoint": bare_app(), "fraudstream POST /v1/transactions": None}
    app = fraudstream_app()
    await _lifespan(app)
    targets["fraudstream POST /v1/transactions"] = app
    per_target: dict[str, list[float]] = {name: [] for name in targets}
    serial = 0
    for name, target in targets.items():  # warm-up: imports, caches, first-call paths
        assert target is not None
        for _ in range(1000):
            serial += 1
            assert await _call(target, serial) == 200, name
    for _ in range(repeats):
        for name, target in targets.items():
            assert target is not None
            cpu = time.process_time()
            for _ in range(requests):
                serial += 1
                await _call(target, serial)
            per_target[name].append((time.process_time() - cpu) / requests * 1e6)
    return per_target


def write_reports(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["targets"]
    lines = [
        "# CPU per request inside the API process (no HTTP, no Kafka)",
        "",
        f"{results['requests']:,} sequential ASGI calls per round, {results['repeats']} rounds "
        f"per target, interleaved; median round (min–max). Run of {results['when']}.",
        "",
        "| target | CPU µs per request | min–max |",
        "|---|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['median_us']:.0f} | {row['min_us']:.0f}–{row['max_us']:.0f} |"
        )
    (RESULTS / "api_overhead.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = list(rows)
    ax.barh(names, [rows[n]["median_us"] for n in names])
    ax.set_xlabel("CPU µs per request (median round)")
    fig.tight_layout()
    fig.savefig(RESULTS / "api_overhead.png", dpi=110)


def main(
    requests: int = typer.Option(5000, help="Requests per round."),
    repeats: int = typer.Option(5, help="Rounds per target."),
) -> None:
    """CPU per request of the API's decision route and of a bare FastAPI endpoint."""
    per_target = asyncio.run(_rounds(requests, repeats))
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "requests": requests,
        "repeats": repeats,
        "targets": {
            name: {
                "median_us": statistics.median(values),
                "min_us": min(values),
                "max_us": max(values),
                "rounds_us": values,
            }
            for name, values in per_target.items()
        },
    }
    for name, row in results["targets"].items():
        print(f"{name}: {row['median_us']:.0f} CPU-µs per request (median of {repeats} rounds)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_overhead.json").write_text(json.dumps(results, indent=2))
    write_reports(results)
    print(f"wrote {RESULTS / 'api_overhead.md'}")


if __name__ == "__main__":
    typer.run(main)
