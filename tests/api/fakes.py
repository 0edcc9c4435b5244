"""Stand-ins for Kafka + the stream worker and for the model registry, for tests of the API itself.

``FakeStream`` plays the ``decisions`` topic: each transaction the API sends is "decided" after
``delay`` seconds (``None``: never, like a stopped worker) by a tiny deterministic rule, and handed
to the hub exactly as the Kafka consumer thread would hand it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from api.hub import AnalystVerdict, DecisionHub, StreamDecision
from api.stream_link import LabelNotDeliveredError

MODEL_VERSION = "v0001-fake"


def stream_record(transaction: dict[str, Any]) -> dict[str, Any]:
    """What the fake stream decides: by amount (review over 500, decline over 1000)."""
    amount = float(transaction["amount"])
    action = "decline" if amount > 1000 else "review" if amount > 500 else "approve"
    score = 0.9 if action == "decline" else 0.4 if action == "review" else 0.01
    reasons = (
        []
        if action == "approve"
        else [{"feature": "amount_vs_card_mean", "value": amount / 50, "contribution": 1.25}]
    )
    return {
        "transaction_id": transaction["transaction_id"],
        "bank_id": transaction.get("bank_id"),
        "score": score,
        "action": action,
        "reasons": reasons,
        "model_version": MODEL_VERSION,
        "rule": None,
        "degraded": False,
        "cost": {
            "expected_fraud_loss": score * amount if action == "approve" else 0.0,
            "review_cost": 5.0 if action == "review" else 0.0,
            "friction_cost": 0.0,
            "compute_usd": 1e-8,
        },
        "latency_ms": 1.5,
        "decided_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


class FakeStream:
    def __init__(self, delay: float | None = 0.0) -> None:
        self.delay = delay
        self.sent: list[tuple[bytes, bytes]] = []
        self.labels: list[dict[str, Any]] = []
        self.fail_sends = False
        self.fail_labels = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hub: DecisionHub | None = None

    # the KafkaLink interface
    def start(self, loop: asyncio.AbstractEventLoop, hub: DecisionHub) -> None:
        self.loop, self.hub = loop, hub

    def send_transaction(self, key: bytes, value: bytes, on_failed: Callable[[str], None]) -> None:
        if self.fail_sends:
            raise BufferError("Local: Queue full")
        self.sent.append((key, value))
        if self.delay is not None:
            assert self.loop is not None
            self.loop.call_later(self.delay, self.decide, value)

    async def send_label(self, key: bytes, value: bytes) -> None:
        if self.fail_labels:
            raise LabelNotDeliveredError("broker down")
        label = orjson.loads(value)
        self.labels.append(label)
        if label.get("source") == "analyst":  # the labels topic, read back
            assert self.loop is not None and self.hub is not None
            verdict = AnalystVerdict(
                label["bank_id"], label["transaction_id"], label["is_fraud"], label
            )
            self.loop.call_soon(self.hub.on_analyst_verdicts, [verdict])

    def status(self) -> tuple[bool, str]:
        return True, "fake stream"

    def alive(self) -> tuple[bool, str]:
        return True, "fake stream"

    def close(self) -> None:
        pass

    # playing the stream
    def decide(self, value: bytes, **changes: Any) -> dict[str, Any]:
        record = {**stream_record(orjson.loads(value)), **changes}
        self.publish(record)
        return record

    def publish(self, record: dict[str, Any]) -> None:
        """A decision appears on ``decisions`` (also one the API never asked for)."""
        assert self.hub is not None
        self.hub.on_stream_decisions(
            [
                StreamDecision(
                    record["bank_id"],
                    record["transaction_id"],
                    record["action"],
                    record["decided_at"],
                    orjson.dumps(record),
                    datetime.now(UTC).timestamp(),
                )
            ]
        )


class FakeModels:
    def __init__(self) -> None:
        self.loaded = True

    def load(self) -> None:
        pass

    def offer(self, value: bytes) -> None:
        pass

    def poll(self) -> None:
        pass

    def status(self) -> tuple[bool, str]:
        return (True, f"model {MODEL_VERSION} loaded") if self.loaded else (False, "no model")

    def describe(self) -> dict[str, Any]:
        manifest = {
            "version": MODEL_VERSION,
            "parent": None,
            "created_at": "2026-05-01T00:00:00Z",
            "window": {"from": "2026-01-01T00:00:00Z", "until": "2026-04-01T00:00:00Z"},
            "metrics": {"auc": 0.91, "average_precision": None},
            "feature_schema_hash": "0" * 64,
        }
        return {"serving": manifest, "champion": manifest, "challenger": None}

    def close(self) -> None:
        pass
