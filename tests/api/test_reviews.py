"""The review queue: the stream's review decisions, oldest first, paged; verdicts become labels."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import A, B, transaction
from tests.api.fakes import stream_record

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _flag(harness: Any, tx_id: str, minutes: float, bank: str = "bank-a") -> None:
    """The stream decides ``review`` for a transaction (sent over Kafka, not through this API)."""
    record = stream_record({"transaction_id": tx_id, "amount": 700.0, "bank_id": bank})
    decided = T0 + timedelta(minutes=minutes)
    record["decided_at"] = decided.isoformat().replace("+00:00", "Z")
    harness.stream.loop.call_soon_threadsafe(harness.stream.publish, record)


def test_queue_is_oldest_first_and_pages(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        for tx_id, minutes in [("late", 30), ("early", 1), ("middle", 10), ("mid2", 10)]:
            _flag(harness, tx_id, minutes)
        _flag(harness, "other-bank", 0, bank="bank-b")
        time.sleep(0.05)
        first = client.get("/v1/reviews", params={"limit": 2}, headers=A)
        assert first.status_code == 200
        page = first.json()
        assert [i["transaction_id"] for i in page["items"]] == ["early", "mid2"]
        item = page["items"][0]
        assert item["decision"]["action"] == "review" and item["decision"]["reasons"]
        second = client.get(
            "/v1/reviews", params={"limit": 2, "cursor": page["next_cursor"]}, headers=A
        ).json()
        assert [i["transaction_id"] for i in second["items"]] == ["middle", "late"]
        assert second["next_cursor"] is None
        # any non-empty string is a position: past the end, before the start
        assert client.get("/v1/reviews", params={"cursor": "~"}, headers=A).json()["items"] == []
        everything = client.get("/v1/reviews", params={"cursor": " "}, headers=A).json()["items"]
        assert len(everything) == 4
        theirs = client.get("/v1/reviews", headers=B).json()["items"]
        assert [i["transaction_id"] for i in theirs] == ["other-bank"]
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "c" * 201},
                    {"cursor": ""}):  # fmt: skip
            assert client.get("/v1/reviews", params=bad, headers=A).status_code == 422


def test_a_verdict_becomes_an_analyst_label_and_leaves_the_queue(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        response = client.post("/v1/transactions", json=transaction("r-1", amount=700.0), headers=A)
        assert response.json()["action"] == "review"
        verdict = client.post("/v1/reviews/r-1", json={"is_fraud": True}, headers=A)
        assert verdict.status_code == 200
        body = verdict.json()
        assert body["transaction_id"] == "r-1" and body["is_fraud"] is True
        (label,) = harness.stream.labels
        assert label == body["label"]
        assert label["source"] == "analyst" and label["bank_id"] == "bank-a"
        assert label["reported_at"].endswith("Z")
        assert client.get("/v1/reviews", headers=A).json()["items"] == []
        # the same verdict again: the same answer, no second label; the other verdict: 409
        assert client.post("/v1/reviews/r-1", json={"is_fraud": True}, headers=A).json() == body
        assert len(harness.stream.labels) == 1
        other = client.post("/v1/reviews/r-1", json={"is_fraud": False}, headers=A)
        assert other.status_code == 409 and "already reviewed as fraud" in other.json()["detail"]


def test_unknown_and_approved_transactions_are_not_reviewable(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, _harness):
        client.post("/v1/transactions", json=transaction("ok", amount=5.0), headers=A)
        for tx_id in ("ok", "never-seen"):
            response = client.post(f"/v1/reviews/{tx_id}", json={"is_fraud": False}, headers=A)
            assert response.status_code == 404


def test_a_verdict_given_on_another_replica_empties_this_queue(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        _flag(harness, "elsewhere", 1)
        time.sleep(0.02)
        assert len(client.get("/v1/reviews", headers=A).json()["items"]) == 1
        from api.hub import AnalystVerdict

        label = {"transaction_id": "elsewhere", "is_fraud": False, "bank_id": "bank-a",
                 "reported_at": "2026-05-04T13:00:00.000Z", "source": "analyst"}  # fmt: skip
        verdict = AnalystVerdict("bank-a", "elsewhere", False, label)
        hub = harness.app.state.services.hub
        harness.stream.loop.call_soon_threadsafe(hub.on_analyst_verdicts, [verdict])
        time.sleep(0.02)
        assert client.get("/v1/reviews", headers=A).json()["items"] == []
        again = client.post("/v1/reviews/elsewhere", json={"is_fraud": False}, headers=A)
        assert again.status_code == 200 and again.json()["label"] == label
        assert harness.stream.labels == []


def test_a_verdict_kafka_did_not_take_is_a_503_and_stays_queued(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        client.post("/v1/transactions", json=transaction("r-2", amount=700.0), headers=A)
        harness.stream.fail_labels = True
        response = client.post("/v1/reviews/r-2", json={"is_fraud": True}, headers=A)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert len(client.get("/v1/reviews", headers=A).json()["items"]) == 1
        harness.stream.fail_labels = False
        assert client.post("/v1/reviews/r-2", json={"is_fraud": True}, headers=A).status_code == 200


def test_labels_are_forwarded_with_the_callers_bank(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        response = client.post(
            "/v1/labels",
            json={"transaction_id": "t-9", "is_fraud": True, "source": "chargeback",
                  "reported_at": "2026-05-20T11:30:00+02:00"},
            headers=B,
        )  # fmt: skip
        assert response.status_code == 202
        assert response.json() == {
            "transaction_id": "t-9",
            "is_fraud": True,
            "reported_at": "2026-05-20T09:30:00.000Z",
            "bank_id": "bank-b",
            "source": "chargeback",
        }
        assert harness.stream.labels == [response.json()]
        now = client.post(
            "/v1/labels", json={"transaction_id": "t-9", "is_fraud": False}, headers=B
        )
        assert now.status_code == 202 and "source" not in now.json()
        reported = datetime.fromisoformat(now.json()["reported_at"])
        assert abs((datetime.now(UTC) - reported).total_seconds()) < 5
        harness.stream.fail_labels = True
        failed = client.post(
            "/v1/labels", json={"transaction_id": "t-9", "is_fraud": True}, headers=B
        )
        assert failed.status_code == 503
