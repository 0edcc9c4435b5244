"""Log readers and writers: formats, timestamps, and errors that name file, row and field."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.logs import (
    LABEL_SCHEMA,
    TIMESTAMP,
    TRANSACTION_SCHEMA,
    LogError,
    read_labels,
    read_transactions,
    write_log,
)


def _transactions() -> pa.Table:
    return pa.table(
        {
            "transaction_id": ["t1", "t2", "t3"],
            "card_id": ["c1", "c2", "0123"],
            "timestamp": pa.array([1_700_000_000_000, 1_700_000_001_500, 1_700_000_002_000]).cast(
                TIMESTAMP
            ),
            "amount": [10.0, 0.01, 2500.75],
            "merchant_id": ["m1", None, "m2"],
            "mcc": ["5411", None, "0742"],
            "channel": ["pos", "ecom", None],
            "card_present": [True, False, None],
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_round_trip_every_format(tmp_path: Path, suffix: str) -> None:
    path = write_log(_transactions(), tmp_path / f"tx{suffix}")
    table = read_transactions(path)
    assert table.schema.names[: len(TRANSACTION_SCHEMA)] == TRANSACTION_SCHEMA.names
    assert table.column("timestamp").type == TIMESTAMP
    assert table.column("card_id").to_pylist() == ["c1", "c2", "0123"]  # leading zero kept
    assert table.column("amount").to_pylist() == [10.0, 0.01, 2500.75]
    assert table.column("mcc").to_pylist() == ["5411", None, "0742"]
    assert table.column("card_present").to_pylist() == [True, False, None]
    assert table.column("country").null_count == 3  # absent optional column -> nulls
    ms = table.column("timestamp").cast(pa.int64()).to_pylist()
    assert ms == [1_700_000_000_000, 1_700_000_001_500, 1_700_000_002_000]


def test_timestamps_as_iso_epoch_and_parquet_types(tmp_path: Path) -> None:
    csv = tmp_path / "tx.csv"
    csv.write_text(
        "transaction_id,card_id,timestamp,amount\n"
        "a,c,2023-11-14T22:13:20Z,1\n"
        "b,c,2023-11-14T23:13:20.250+01:00,1\n"
        "c,c,1700000000000,1\n"
    )
    ms = read_transactions(csv).column("timestamp").cast(pa.int64()).to_pylist()
    assert ms == [1_700_000_000_000, 1_700_000_000_250, 1_700_000_000_000]

    for kind in (pa.timestamp("us"), pa.timestamp("ns", tz="Europe/Paris"), pa.timestamp("s")):
        parquet = tmp_path / f"tx_{kind.unit}.parquet"
        stamp = pa.array([1_700_000_000], pa.int64()).cast(pa.timestamp("s")).cast(kind)
        pq.write_table(
            pa.table(
                {"transaction_id": ["a"], "card_id": ["c"], "timestamp": stamp, "amount": [1]}
            ),
            parquet,
        )
        assert read_transactions(parquet).column("timestamp").cast(pa.int64()).to_pylist() == [
            1_700_000_000_000
        ]


def _problems(path: Path, reader=read_transactions) -> list[tuple[str, int, str]]:
    with pytest.raises(LogError) as info:
        reader(path)
    return [(p.file, p.row, p.field) for p in info.value.problems]


def test_bad_csv_rows_name_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "transaction_id,card_id,timestamp,amount,channel\n"
        "ok,c1,2024-01-01T00:00:00Z,5,pos\n"
        "neg,c1,2024-01-01T00:00:00Z,-5,pos\n"
        "when,c1,yesterday,5,pos\n"
        "pan,4111111111111111,2024-01-01T00:00:00Z,5,pos\n"
        "chan,c1,2024-01-01T00:00:00Z,5,telepathy\n"
        ",c1,2024-01-01T00:00:00Z,5,pos\n"
        "nan,c1,2024-01-01T00:00:00Z,abc,pos\n"
    )
    assert _problems(path) == [
        ("bad.csv", 2, "amount"),
        ("bad.csv", 3, "timestamp"),
        ("bad.csv", 4, "card_id"),
        ("bad.csv", 5, "channel"),
        ("bad.csv", 6, "transaction_id"),
        ("bad.csv", 7, "amount"),
    ]
    with pytest.raises(LogError) as info:
        read_transactions(path)
    assert "4111111111111111" not in str(info.value)  # a PAN is never echoed
    assert "bad.csv: row 2, field 'amount'" in str(info.value)


def test_bad_jsonl_rows_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"transaction_id": "a", "card_id": "c", "timestamp": 1700000000000, "amount": 3}\n'
        "this is not json\n"
        '{"transaction_id": "b", "card_id": "c", "timestamp": "2024-01-01T00:00:00Z", '
        '"amount": 0}\n'
        "\n"
        '{"transaction_id": "c", "card_id": "c", "amount": 3}\n'
        '{"transaction_id": "d", "card_id": "c", "timestamp": 1700000000000, "amount": "x"}\n'
        "[1, 2]\n"
    )
    assert _problems(path) == [
        ("bad.jsonl", 2, "<line>"),
        ("bad.jsonl", 3, "amount"),
        ("bad.jsonl", 5, "timestamp"),
        ("bad.jsonl", 6, "amount"),
        ("bad.jsonl", 7, "<line>"),
    ]


def test_missing_required_column_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nocard.csv"
    path.write_text("transaction_id,timestamp,amount\na,2024-01-01T00:00:00Z,1\n")
    assert _problems(path) == [("nocard.csv", 0, "card_id")]


def test_repeated_transaction_id_of_one_bank_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(
        "transaction_id,card_id,timestamp,amount,bank_id\n"
        "a,c,1,1,b1\n"
        "a,c,2,1,b2\n"  # same id, other bank: fine
        "a,c,3,1,b1\n"
    )
    assert _problems(path) == [("dup.csv", 3, "transaction_id")]


def test_labels_round_trip_and_bool_spellings(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "transaction_id,is_fraud,reported_at,source,fraud_type\n"
        "a,true,2024-01-02T00:00:00Z,chargeback,card_testing\n"
        "b,0,1704153600000,,\n"
        "c,Yes,2024-01-02T00:00:00Z,analyst,\n"
    )
    table = read_labels(path)
    assert table.schema.names[: len(LABEL_SCHEMA)] == LABEL_SCHEMA.names
    assert table.column("is_fraud").to_pylist() == [True, False, True]
    assert table.column("fraud_type").to_pylist()[0] == "card_testing"  # extra column kept
    bad = tmp_path / "bad_labels.csv"
    bad.write_text("transaction_id,is_fraud,reported_at,source\na,maybe,1,chargeback\nb,1,2,bank\n")
    assert _problems(bad, read_labels) == [
        ("bad_labels.csv", 1, "is_fraud"),
        ("bad_labels.csv", 2, "source"),
    ]


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tx.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match="unknown log format"):
        read_transactions(path)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    card=st.text(min_size=0, max_size=70),
)
def test_reader_verdict_matches_the_record_model(tmp_path: Path, amount: object, card: str) -> None:
    """Bulk validation and the pydantic contract agree on what is a valid row."""
    from pydantic import ValidationError

    from scoring.records import Transaction

    row = {"transaction_id": "t", "card_id": card, "timestamp": 1_700_000_000_000, "amount": amount}
    path = tmp_path / "one.jsonl"
    import orjson

    try:
        path.write_bytes(orjson.dumps(row) + b"\n")
    except TypeError:
        return  # not representable as JSON (e.g. NaN is written as null)
    try:
        Transaction.model_validate(orjson.loads(path.read_bytes()))
        model_ok = True
    except ValidationError:
        model_ok = False
    try:
        read_transactions(path)
        reader_ok = True
    except LogError:
        reader_ok = False
    assert reader_ok == model_ok, (row, reader_ok, model_ok)
