"""fraudstream convert: a Sparkov-layout file → our logs, through the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from scoring.log_mapping import MappingError, convert, parse_mapping
from scoring.logs import read_labels, read_transactions
from scoring.tokenize import CardTokenizer
from tests.bench.sparkov_layout import write_sparkov_csv

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-tokenization-key-0123456789abcdefghijklmnop"  # 48 chars, tests only


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "FRAUD_API__TOKENIZATION_KEY": KEY, **(env or {})},
    )  # fmt: skip


def test_sparkov_file_converts_without_its_card_numbers(tmp_path: Path) -> None:
    raw = tmp_path / "fraudTrain.csv"
    made = write_sparkov_csv(raw, cards=60, days=6, seed=2)
    tx, lb = tmp_path / "out" / "transactions.parquet", tmp_path / "out" / "labels.csv"
    done = run_cli("convert", "--input", str(raw), "--map", "docs/mappings/sparkov.toml",
                   "--transactions", str(tx), "--labels", str(lb))  # fmt: skip
    assert done.returncode == 0, done.stderr
    transactions, labels = read_transactions(tx), read_labels(lb)
    assert transactions.num_rows == made["rows"] == labels.num_rows
    assert pc.sum(labels["is_fraud"]).as_py() == made["frauds"] > 0
    # no raw card number anywhere in the output, and one token per card, as the API makes it
    for path in (tx, lb):
        data = path.read_bytes()
        assert not any(number.encode() in data for number in made["card_numbers"])  # type: ignore[attr-defined]
    tokenizer = CardTokenizer.parse(KEY)
    first = pacsv.read_csv(raw, convert_options=pacsv.ConvertOptions(
        column_types={"cc_num": pa.string()}))["cc_num"][0].as_py()  # fmt: skip
    assert transactions["card_id"][0].as_py() == tokenizer.tokenize(first)
    cards = pc.count_distinct(transactions["card_id"]).as_py()
    assert cards == pc.count_distinct(
        pacsv.read_csv(raw, convert_options=pacsv.ConvertOptions(
            column_types={"cc_num": pa.string()}))["cc_num"]).as_py()  # fmt: skip
    # personal columns are gone; mapped ones are there; the 14-day report delay is applied
    assert "first" not in transactions.column_names and "street" not in transactions.column_names
    assert set(pc.unique(transactions["channel"]).to_pylist()) <= {"pos", "ecom"}
    delay = pc.subtract(labels["reported_at"], transactions["timestamp"])
    assert pc.all(pc.equal(delay, pa.scalar(14 * 86_400_000, pa.duration("ms")))).as_py()
    assert "absent: terminal_id" in done.stderr


def test_a_card_number_column_without_tokenize_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "fraudTrain.csv"
    write_sparkov_csv(raw, cards=20, days=2, seed=3)
    mapping = tmp_path / "careless.toml"
    text = (ROOT / "docs/mappings/sparkov.toml").read_text()
    mapping.write_text(text.replace('card_id = { column = "cc_num", tokenize = true }',
                                    'card_id = "trans_num"\ncustomer_id = "cc_num"'))  # fmt: skip
    tx = tmp_path / "out" / "transactions.parquet"
    done = run_cli("convert", "--input", str(raw), "--map", str(mapping), "--transactions", str(tx))
    assert done.returncode == 1
    assert "fraudTrain.csv: row 1, field 'customer_id (from column 'cc_num')'" in done.stderr
    assert "tokenize = true" in done.stderr
    out = tmp_path / "out"
    assert not tx.exists() and (not out.exists() or not any(out.iterdir()))


def test_tokenizing_needs_a_key(tmp_path: Path) -> None:
    raw = tmp_path / "fraudTrain.csv"
    write_sparkov_csv(raw, cards=10, days=1, seed=4)
    done = run_cli("convert", "--input", str(raw), "--map", "docs/mappings/sparkov.toml",
                   "--transactions", str(tmp_path / "t.parquet"),
                   env={"FRAUD_API__TOKENIZATION_KEY": ""})  # fmt: skip
    assert done.returncode == 1
    assert "FRAUD_API__TOKENIZATION_KEY" in done.stderr


def test_bad_values_are_reported_with_row_and_field() -> None:
    table = pa.table({
        "id": ["a", "b", "c"], "card": ["x1", "x2", "x3"],
        "when": ["2026-01-01 10:00:00", "yesterday", "2026-01-01 11:00:00"],
        "amt": ["1.5", "2.0", "three"], "fraud": ["0", "1", "maybe"],
    })  # fmt: skip
    mapping = parse_mapping({
        "transactions": {"transaction_id": "id", "card_id": "card", "amount": "amt",
                         "timestamp": {"column": "when", "format": "%Y-%m-%d %H:%M:%S"}},
        "labels": {"is_fraud": "fraud", "delay_days": 7},
    })  # fmt: skip
    with pytest.raises(ValueError) as caught:
        convert(table, mapping, tokenizer=None, file="raw.csv")
    message = str(caught.value)
    assert "raw.csv: row 2, field 'timestamp (from column 'when')'" in message
    assert "raw.csv: row 3, field 'amount (from column 'amt')': not a number" in message


def test_numeric_offsets_composite_keys_and_unmapped_values() -> None:
    table = pa.table({
        "TransactionID": [1, 2, 3], "TransactionDT": [86_400, 86_401, 90_000],
        "card1": [1000, 1000, 2000], "addr1": [None, None, 315.0],
        "TransactionAmt": [10.0, 20.5, 3.0], "isFraud": [0, 1, 0], "kind": ["a", "b", "z"],
    })  # fmt: skip
    mapping = parse_mapping({
        "transactions": {
            "transaction_id": "TransactionID",
            "card_id": {"columns": ["card1", "addr1"], "tokenize": True},
            "timestamp": {"column": "TransactionDT", "unit": "s",
                          "origin": "2017-12-01T00:00:00Z"},
            "amount": "TransactionAmt",
            "channel": {"column": "kind", "map": {"a": "pos", "b": "ecom"}},
        },
        "labels": {"is_fraud": "isFraud", "delay_days": 0},
    })  # fmt: skip
    result = convert(table, mapping, tokenizer=CardTokenizer.parse(KEY), file="t.csv")
    tx = result.transactions
    assert tx["transaction_id"].to_pylist() == ["1", "2", "3"]
    assert str(tx["timestamp"][0].as_py()) == "2017-12-02 00:00:00+00:00"
    cards = tx["card_id"].to_pylist()
    assert cards[0] == cards[1] != cards[2] and all(c.startswith("tok_k1_") for c in cards)
    assert tx["channel"].to_pylist() == ["pos", "ecom", None]
    assert any("'z'" in note and "channel" in note for note in result.notes)
    assert result.labels is not None
    assert result.labels["is_fraud"].to_pylist() == [False, True, False]


def test_mapping_errors_name_the_field() -> None:
    with pytest.raises(MappingError, match="required fields"):
        parse_mapping({"transactions": {"transaction_id": "a"}})
    with pytest.raises(MappingError, match="not a field of the format"):
        parse_mapping({"transactions": {"colour": "a"}})
    with pytest.raises(MappingError, match="exactly one of reported_at"):
        parse_mapping({
            "transactions": {"transaction_id": "a", "card_id": "b", "timestamp": "c",
                             "amount": "d"},
            "labels": {"is_fraud": "e"},
        })  # fmt: skip
