"""POST /v1/transactions and /batch: the stream's decision verbatim, idempotency, conflicts."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from api.hub import transaction_json
from api.schemas import TransactionIn, parse_timestamp
from scoring.logs import TIMESTAMP, TRANSACTION_SCHEMA
from scoring.records import Transaction
from scoring.wire import decode_transactions, encode_transactions
from tests.api.conftest import A, B, async_api, transaction


def test_the_answer_is_the_stream_decision_verbatim(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        response = client.post("/v1/transactions", json=transaction(amount=700.0), headers=A)
        assert response.status_code == 200
        decision = response.json()
        ((key, value),) = harness.stream.sent
        assert key == b"card-77"  # keyed by card: one card's events stay on one partition
        assert orjson.loads(value)["bank_id"] == "bank-a"  # from the key, not the body
        assert decision["action"] == "review" and decision["degraded"] is False
        assert decision["model_version"] == "v0001-fake" and decision["reasons"]
        assert response.headers["server-timing"].startswith("decide;dur=")
        assert "idempotent-replayed" not in response.headers


def test_same_id_same_body_returns_the_same_decision_and_sends_once(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        first = client.post("/v1/transactions", json=transaction(), headers=A)
        # the same transaction written differently: other offset, key order, explicit nulls
        same = {
            **transaction(timestamp="2026-05-04T14:00:00.250+02:00"),
            "currency": None,
        }
        again = client.post("/v1/transactions", json=dict(reversed(same.items())), headers=A)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert len(harness.stream.sent) == 1


def test_same_id_different_body_is_a_409_naming_the_fields(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        assert client.post("/v1/transactions", json=transaction(), headers=A).status_code == 200
        changed = transaction(amount=43.0, merchant_id="m-9")
        response = client.post("/v1/transactions", json=changed, headers=A)
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "'tx-1'" in detail and "amount, merchant_id differ" in detail
        assert "43" not in detail  # names fields, never values
        assert len(harness.stream.sent) == 1


def test_conflict_while_the_first_request_is_still_waiting() -> None:
    async def run() -> tuple[int, int]:
        async with async_api(delay=0.02, deadline_ms=500.0) as (client, _harness):
            first = asyncio.create_task(
                client.post("/v1/transactions", json=transaction(), headers=A)
            )
            await asyncio.sleep(0.005)
            second = await client.post("/v1/transactions", json=transaction(amount=1.0), headers=A)
            return (await first).status_code, second.status_code

    assert asyncio.run(run()) == (200, 409)


def test_concurrent_duplicates_produce_one_message_and_one_decision() -> None:
    async def run() -> tuple[list[dict[str, Any]], int, list[str]]:
        async with async_api(delay=0.01) as (client, harness):
            responses = await asyncio.gather(
                *(client.post("/v1/transactions", json=transaction(), headers=A) for _ in range(10))
            )
            assert all(r.status_code == 200 for r in responses)
            replayed = [r.headers.get("idempotent-replayed", "") for r in responses]
            return [r.json() for r in responses], len(harness.stream.sent), replayed

    decisions, sent, replayed = asyncio.run(run())
    assert sent == 1
    assert all(d == decisions[0] for d in decisions)
    assert replayed.count("true") == 9


def test_a_client_that_goes_away_does_not_cancel_the_shared_decision() -> None:
    async def run() -> dict[str, Any]:
        async with async_api(delay=0.03, deadline_ms=500.0) as (client, _harness):
            impatient = asyncio.create_task(
                client.post("/v1/transactions", json=transaction(), headers=A)
            )
            await asyncio.sleep(0.005)
            impatient.cancel()
            patient = await client.post("/v1/transactions", json=transaction(), headers=A)
            assert patient.status_code == 200
            return dict(patient.json())

    assert asyncio.run(run())["degraded"] is False


def test_batch_answers_in_request_order(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        body = {
            "transactions": [
                transaction("b-1", amount=10.0),
                transaction("b-2", amount=2000.0),
                transaction("b-3", amount=600.0),
                transaction("b-1", amount=10.0),  # a duplicate in the batch: same decision
            ]
        }
        response = client.post("/v1/transactions/batch", json=body, headers=A)
        assert response.status_code == 200
        decisions = response.json()["decisions"]
        assert [d["transaction_id"] for d in decisions] == ["b-1", "b-2", "b-3", "b-1"]
        assert [d["action"] for d in decisions] == ["approve", "decline", "review", "approve"]
        assert decisions[0] == decisions[3]
        assert len(harness.stream.sent) == 3


def test_batch_conflicts_are_all_or_nothing(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        client.post("/v1/transactions", json=transaction("c-1"), headers=A)
        body = {"transactions": [transaction("c-2"), transaction("c-1", amount=99.0)]}
        response = client.post("/v1/transactions/batch", json=body, headers=A)
        assert response.status_code == 409 and "'c-1'" in response.json()["detail"]
        inside = {"transactions": [transaction("c-3"), transaction("c-3", amount=1.0)]}
        assert client.post("/v1/transactions/batch", json=inside, headers=A).status_code == 409
        assert [orjson.loads(v)["transaction_id"] for _k, v in harness.stream.sent] == ["c-1"]


def test_batch_size_limits(api_client: Any) -> None:
    with api_client(delay=0.0, max_batch=3) as (client, _harness):
        too_many = {"transactions": [transaction(f"n-{i}") for i in range(4)]}
        response = client.post("/v1/transactions/batch", json=too_many, headers=A)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "transactions"]
        empty = client.post("/v1/transactions/batch", json={"transactions": []}, headers=A)
        assert empty.status_code == 422
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert schema["TransactionBatch"]["properties"]["transactions"]["maxItems"] == 3


def test_banks_have_separate_id_spaces(api_client: Any) -> None:
    with api_client(delay=0.0, deadline_ms=5000.0) as (client, harness):
        a = client.post("/v1/transactions", json=transaction("same-id"), headers=A)
        b = client.post("/v1/transactions", json=transaction("same-id", amount=5.0), headers=B)
        assert a.status_code == b.status_code == 200  # no 409: another bank's id
        assert a.json()["bank_id"] == "bank-a" and b.json()["bank_id"] == "bank-b"
        assert len(harness.stream.sent) == 2


# ------------------------------------------------------------------------- the wire format

_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)
_upper = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_moments = st.datetimes(
    min_value=parse_timestamp("1970-01-02T00:00:00Z").replace(tzinfo=None),
    max_value=parse_timestamp("2099-12-30T00:00:00Z").replace(tzinfo=None),
)
_offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00", "+14:00"])


@st.composite
def api_transactions(draw: st.DrawFn) -> TransactionIn:
    moment = draw(_moments)
    stamp = moment.isoformat(
        timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    )
    values = {
        "transaction_id": draw(_ids),
        "card_id": draw(_ids.filter(lambda s: not s.isdigit())),
        "timestamp": stamp + draw(_offsets),
        "amount": draw(st.floats(min_value=0.01, max_value=1e11)),
        "currency": draw(st.none() | st.text(_upper, min_size=3, max_size=3)),
        "merchant_id": draw(st.none() | _ids),
        "terminal_id": draw(st.none() | _ids),
        "mcc": draw(st.none() | st.from_regex(r"\A[0-9]{4}\Z")),
        "country": draw(st.none() | st.text(_upper, min_size=2, max_size=2)),
        "channel": draw(st.none() | st.sampled_from(["pos", "ecom", "atm", "moto"])),
        "card_present": draw(st.none() | st.booleans()),
        "customer_id": draw(st.none() | _ids),
    }
    return TransactionIn.model_validate(values)


@settings(max_examples=200, deadline=None)
@given(api_transactions())
def test_the_kafka_value_is_what_scoring_wire_writes(tx: TransactionIn) -> None:
    """The API's JSON equals encode_transactions' for the same transaction, the stream's decoder
    accepts it, and it is a valid scoring.records.Transaction (the contract)."""
    value = transaction_json(tx, "bank-z")
    record = orjson.loads(value)
    row = {**record, "timestamp": parse_timestamp(record["timestamp"])}
    columns = {
        f.name: pa.array([row.get(f.name)], f.type if f.name != "timestamp" else TIMESTAMP)
        for f in TRANSACTION_SCHEMA
    }
    (wire,) = encode_transactions(pa.table(columns, schema=TRANSACTION_SCHEMA))
    assert value == wire
    _table, positions, rejected = decode_transactions([value])
    assert rejected == [] and positions == [0]
    assert Transaction.model_validate(record).bank_id == "bank-z"


def test_the_transaction_fields_are_the_contract_minus_bank_id() -> None:
    assert set(TransactionIn.model_fields) == set(Transaction.model_fields) - {"bank_id"}
    assert set(TransactionIn.model_fields) | {"bank_id"} == set(TRANSACTION_SCHEMA.names)
