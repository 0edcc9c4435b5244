"""Fuzzing the two places where outside bytes enter: the Kafka decoder and the log readers.

Property: nothing raises past the boundary. A Kafka message is either a row or a rejection whose
reason names what is wrong (and never repeats a card number); a log file either reads or raises
:class:`scoring.logs.LogError` naming the file, the row and the field — no other exception type.
(The API's own boundary is fuzzed by schemathesis: tests/api/test_schemathesis.py and
benchmarks/api_fuzz.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.card_data import find_card_numbers
from scoring.logs import LABEL_SCHEMA, TRANSACTION_SCHEMA, LogError, read_labels, read_transactions
from scoring.wire import decode_labels, decode_transactions

PANS = ["4111111111111111", "5555555555554444", "378282246310005"]

# JSON that is almost right: the contract's keys with values of every JSON type, edge numbers,
# odd text (card numbers, control characters, lone surrogates as escapes), nesting.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.sampled_from(
        [*PANS, "", "2026-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00",
         "1e999", "FR", "fr", "EUR", "5411", "54111", "pos", "POS", "chargeback", "\x00", "\u2028"]
    ),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
tx_keys = st.sampled_from([*TRANSACTION_SCHEMA.names, "card_number", "extra", *PANS])
label_keys = st.sampled_from([*LABEL_SCHEMA.names, "extra"])


TRICKS = [
    b"", b"null", b"[]", b"{}", b'{"a":1}{"b":2}', b'{"transaction_id":"\\ud800"}', b"\xff\xfe{}",
    b'{"amount":1e999}', b"[" * 5000, b'{"card_id":"' + b"1" * 10**5 + b'"}',
]  # fmt: skip


def _dumps(document: dict[str, object]) -> bytes:
    # json, not orjson: integers beyond 64 bits must reach the decoder too
    return json.dumps(document).encode()


def _messages(keys: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    documents = st.dictionaries(keys, json_values, max_size=15).map(_dumps)
    tricks = st.integers(0, len(TRICKS) - 1).map(TRICKS.__getitem__)
    return st.one_of(documents, st.binary(max_size=120), tricks)


# msgspec's messages locate the problem with a JSON path (`$.field`), name a missing or unknown
# field, or say the message is not an object / not JSON at all.
NAMES_WHERE = re.compile(r"`\$[^`]*`|field `[^`]*`|Expected `object`|^not JSON")


def _check(values: list[bytes], decode: object) -> None:
    _, positions, rejected = decode(values)  # type: ignore[operator]
    assert sorted([*positions, *(r.index for r in rejected)]) == list(range(len(values)))
    for r in rejected:
        assert r.reason.startswith(("invalid: ", "not JSON: ")), r.reason
        assert NAMES_WHERE.search(r.reason), r.reason
        assert find_card_numbers(r.reason.encode()) == [], r.reason


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_messages(tx_keys), max_size=6))
def test_transaction_decoder_rows_or_reasons_never_raises(values: list[bytes]) -> None:
    _check(values, decode_transactions)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_messages(label_keys), max_size=6))
def test_label_decoder_rows_or_reasons_never_raises(values: list[bytes]) -> None:
    _check(values, decode_labels)


# ------------------------------------------------------------------------------- log readers

cells = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "4111111111111111", "1767571200000", "2026-01-01T00:00:00Z", "12.5",
                     "-1", "nan", "inf", "true", "yes", "pos", '"', ",", "\n", "\r\n"]),
)  # fmt: skip


def _assert_located(error: LogError, path: Path) -> None:
    assert error.problems, error
    for problem in error.problems:
        assert problem.file == path.name and problem.row >= 0 and problem.field, problem
        assert str(problem).startswith(f"{path.name}: ")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    header=st.lists(st.sampled_from([*TRANSACTION_SCHEMA.names, "x"]), min_size=1, max_size=8),
    rows=st.lists(st.lists(cells, min_size=0, max_size=9), max_size=6),
    garbage=st.binary(max_size=40),
)
def test_csv_reader_reads_or_names_file_row_and_field(
    tmp_path: Path, header: list[str], rows: list[list[str]], garbage: bytes
) -> None:
    path = tmp_path / "fuzz.csv"
    lines = [",".join(header), *(",".join(r) for r in rows)]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + garbage)
    try:
        read_transactions(path)
    except LogError as error:
        _assert_located(error, path)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    lines=st.lists(st.one_of(_messages(tx_keys), _messages(label_keys)), max_size=6),
    labels=st.booleans(),
)
def test_jsonl_reader_reads_or_names_file_row_and_field(
    tmp_path: Path, lines: list[bytes], labels: bool
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    try:
        (read_labels if labels else read_transactions)(path)
    except LogError as error:
        _assert_located(error, path)


def test_a_column_named_twice_is_a_log_error(tmp_path: Path) -> None:
    """Found by the CSV fuzz above: a repeated header raised KeyError from pyarrow."""
    path = tmp_path / "twice.csv"
    path.write_text("transaction_id,card_id,transaction_id,timestamp,amount\nt1,c1,t2,1,2.5\n")
    try:
        read_transactions(path)
    except LogError as error:
        assert [str(p) for p in error.problems] == [
            "twice.csv: field 'transaction_id': the column appears 2 times"
        ]
    else:
        raise AssertionError("a repeated column was accepted")


def test_an_integer_beyond_64_bits_in_jsonl_is_a_log_error(tmp_path: Path) -> None:
    """Found by the JSONL fuzz above: pyarrow raised OverflowError."""
    path = tmp_path / "big.jsonl"
    row = {"transaction_id": "t1", "card_id": "c1", "timestamp": 1, "amount": 2**70}
    path.write_text(json.dumps(row) + "\n")
    try:
        read_transactions(path)
    except LogError as error:
        assert [(p.row, p.field) for p in error.problems] == [(1, "amount")]
    else:
        raise AssertionError("an amount of 2**70 was accepted")
