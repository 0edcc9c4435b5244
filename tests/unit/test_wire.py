"""The stream's wire format: bulk encoding, and a decoder that rejects (never raises) bad input."""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring.logs import LABEL_SCHEMA, TIMESTAMP, TRANSACTION_SCHEMA
from scoring.records import Transaction
from scoring.wire import (
    decode_labels,
    decode_transactions,
    encode_labels,
    encode_transactions,
)


def _table() -> pa.Table:
    return pa.table(
        {
            "transaction_id": ["t1", "t2"],
            "card_id": ["c1", "0042"],
            "timestamp": pa.array([1_700_000_000_123, 1_700_000_001_000], pa.int64()).cast(
                TIMESTAMP
            ),
            "amount": [12.5, 3.0],
            "bank_id": ["b", None],
            "currency": [None, "EUR"],
            "merchant_id": ["m", None],
            "terminal_id": [None, "k"],
            "mcc": ["5411", None],
            "country": ["FR", None],
            "channel": ["ecom", None],
            "card_present": [False, None],
            "customer_id": [None, "cu"],
        },
        schema=TRANSACTION_SCHEMA,
    )


def test_round_trip_keeps_every_field() -> None:
    values = encode_transactions(_table())
    assert b'"timestamp":"2023-11-14T22:13:20.123Z"' in values[0]
    assert b"null" not in values[1]  # absent optional fields are left out
    table, positions, rejected = decode_transactions(values)
    assert rejected == [] and positions == [0, 1]
    assert table.equals(_table())


def test_bad_messages_are_rejected_with_reasons_and_the_rest_kept() -> None:
    good = encode_transactions(_table())
    values = [
        good[0],
        b"not json at all",
        b'{"transaction_id": "x", "timestamp": 1, "amount": 1}',
        b'{"transaction_id": "x", "card_id": "4111111111111111", "timestamp": 1, "amount": 1}',
        b'{"transaction_id": "x", "card_id": "c", "timestamp": 1, "amount": -4}',
        b'{"transaction_id": "x", "card_id": "c", "timestamp": "2026-01-01T00:00:00", "amount": 1}',
        b'{"transaction_id": "x", "card_id": "c", "timestamp": 1, "amount": 1, "pan": "1"}',
        good[1],
    ]
    table, positions, rejected = decode_transactions(values)
    assert positions == [0, 7]
    assert table.column("transaction_id").to_pylist() == ["t1", "t2"]
    reasons = {r.index: r.reason for r in rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert reasons[1].startswith("not JSON")
    assert "card_id" in reasons[2]
    assert "raw card number" in reasons[3] and "4111111111111111" not in reasons[3]
    assert "$.amount" in reasons[4]
    assert "$.timestamp" in reasons[5]
    assert "pan" in reasons[6]


def test_labels_decode() -> None:
    labels = pa.table(
        {
            "transaction_id": ["t1"],
            "is_fraud": [True],
            "reported_at": pa.array([1_700_000_000_000], pa.int64()).cast(TIMESTAMP),
            "bank_id": [None],
            "source": ["chargeback"],
        }
    )
    table, positions, rejected = decode_labels([*encode_labels(labels), b'{"is_fraud": 1}'])
    assert positions == [0] and [r.index for r in rejected] == [1]
    assert table.equals(labels.cast(table.schema))
    assert table.schema == LABEL_SCHEMA


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_bytes_never_raise(values: list[bytes]) -> None:
    _, positions, rejected = decode_transactions(values)
    assert len(positions) + len(rejected) == len(values)


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**41), st.floats(allow_nan=False),
    st.text(max_size=70), st.sampled_from(["2026-01-01T00:00:00Z", "4111111111111111", "FR",
                                           "EUR", "5411", "pos", "2026-01-01T00:00:00"]),
)  # fmt: skip


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from([*TRANSACTION_SCHEMA.names, "extra"]), json_values, max_size=14)
)
def test_decoder_agrees_with_the_record_contract(message: dict[str, object]) -> None:
    raw = orjson.dumps(message)
    try:
        Transaction.model_validate_json(raw)
        contract_ok = True
    except ValidationError:
        contract_ok = False
    _, positions, _ = decode_transactions([raw])
    assert (positions == [0]) == contract_ok, message
