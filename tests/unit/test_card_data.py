"""The card-number scanner and masker (scoring/card_data.py): what they find, what they ignore."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.card_data import find_card_numbers, mask_card_numbers, scan_files
from scoring.records import luhn_valid

# Published test numbers of the networks (not real cards), 13 to 19 digits.
KNOWN = [
    "4111111111111111",  # Visa 16
    "4222222222222",  # Visa 13
    "4111111111111111003",  # Visa 19 (Luhn-valid)
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # Amex 15
    "30569309025904",  # Diners 14
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "6200000000000005",  # UnionPay
]


def found(data: bytes) -> list[str]:
    return [hit.masked for hit in find_card_numbers(data)]


@pytest.mark.parametrize("pan", KNOWN)
def test_known_test_numbers_are_found_where_a_program_would_write_them(pan: str) -> None:
    assert luhn_valid(pan)
    masked = pan[:4] + "*" * (len(pan) - 8) + pan[-4:]
    for text in (
        pan,
        f'{{"card_id":"{pan}"}}',
        f'{{"card_number": {pan}}}',  # a JSON number
        f"card={pan}&x=1",
        f"2026-05-04 12:00:00 WARNING rejected {pan}\n",
        f"k\x00\x10{pan}\x00",  # inside binary
    ):
        assert found(text.encode()) == [masked], text


def test_grouped_numbers_are_found() -> None:
    assert found(b"card 4111 1111 1111 1111 on file") == ["4111********1111"]
    assert found(b"card 4111-1111-1111-1111.") == ["4111********1111"]
    assert found(b"amex 3782 822463 10005") == ["3782*******0005"]
    assert found(b"mixed 4111 1111-1111 1111") == []  # one separator throughout


def with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


EPOCH_MS = with_check_digit("176757120000")  # a Luhn-valid epoch in milliseconds
NINE = with_check_digit("911111111111111")


def test_what_is_not_a_card_number() -> None:
    assert luhn_valid(EPOCH_MS) and luhn_valid(NINE) and luhn_valid("4111111111111111" * 2)
    not_cards = [
        b"4111111111111112",  # fails Luhn
        b"411111111111",  # 12 digits
        b"41111111111111114111111111111111",  # 32 digits: no window inside a longer run
        EPOCH_MS.encode(),  # epoch ms (starts with 1)
        b"0.4111111111111111",  # the fractional part of a score
        b"12.4111111111111111e-05",
        b"sha256:ab4111111111111111cd",  # inside a hex digest
        b"tok_k1_4111111111111111",  # glued to an identifier
        NINE.encode(),  # no card network starts with 9
        b"2026-05-04T12:00:00.250Z 42.5 EUR",
    ]
    for data in not_cards:
        assert found(data) == [], data


def test_masking_is_broader_than_finding_and_keeps_the_shape() -> None:
    raw = (
        b'{"card_id":"4111111111111111","merchant_id":"m' + EPOCH_MS.encode() + b'x",'
        b'"n":41111111111111114111111111111111}'
    )
    masked, count = mask_card_numbers(raw)
    assert count == 2  # the card and the (Luhn-valid) epoch inside an identifier; not 32 digits
    assert masked == raw.replace(b'"4111111111111111"', b'"' + b"*" * 16 + b'"').replace(
        EPOCH_MS.encode(), b"*" * 13
    )
    assert mask_card_numbers(b"4111 1111 1111 1111") == (b"**** **** **** ****", 1)
    assert mask_card_numbers(b"no cards here") == (b"no cards here", 0)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_masking_leaves_nothing_to_find(data: bytes) -> None:
    hits = find_card_numbers(data)
    assert all(0 <= h.start < h.end <= len(data) for h in hits)
    masked, _count = mask_card_numbers(data)
    assert len(masked) == len(data)
    assert find_card_numbers(masked) == []


@given(st.sampled_from(KNOWN), st.binary(max_size=40), st.binary(max_size=40))
def test_a_card_between_separators_is_always_found_and_masked(
    pan: str, before: bytes, after: bytes
) -> None:
    data = before + b" " + pan.encode() + b" " + after
    assert pan[:4] + "*" * (len(pan) - 8) + pan[-4:] in found(data)
    assert pan.encode() not in mask_card_numbers(data)[0]


def test_grouped_digits_inside_a_list_of_numbers_are_not_a_card_number() -> None:
    assert found(b"leaf_count=101 4111 1111 1111 1111 464") == []  # a model dump, counts
    assert found(b"[2 4111 1111 1111 1111]") == []  # a printed array
    assert found(b"ids 12-4111-1111-1111-1111") == []
    assert found(b"card 4111 1111 1111 1111, 12 items") == ["4111********1111"]  # a comma ends it
    assert mask_card_numbers(b"x 12 4111 1111 1111 1111")[1] == 1  # the masker stays broad
    assert find_card_numbers(b"card 4111 1111 1111 1111", grouped=False) == []
    assert [h.masked for h in find_card_numbers(b"4111111111111111", grouped=False)] == [
        "4111********1111"
    ]


def test_a_lightgbm_model_is_scanned_without_the_grouped_rule(tmp_path: Path) -> None:
    trees = b"Tree=0\nnum_leaves=4\nleaf_count=4111 1111 1111 1111\nnote=4111111111111111\n"
    model = tmp_path / "model.txt"
    content = b"tree\nversion=v4\nnum_class=1\n" + trees
    model.write_bytes(content)
    other = tmp_path / "notes.txt"
    other.write_bytes(trees)
    in_model, files = scan_files(model)
    assert files == 1
    plain = content.index(b"4111111111111111")
    assert [(f.hit.start, f.hit.masked) for f in in_model] == [(plain, "4111********1111")]
    assert len(scan_files(other)[0]) == 2  # elsewhere the grouped number counts


def test_parquet_is_scanned_value_by_value(tmp_path: Path) -> None:
    pan = "4111111111111111"
    table = pa.table(
        {
            "note": ["ok", "fine", f"card {pan} declined", None],
            # adjacent values whose concatenation is a Luhn-valid, Visa-shaped number
            "code": ["41111111", "11111111", "5", "6"],
            "amount": [1.5, 2.0, 3.25, 4.0],
        }
    ).replace_schema_metadata({"origin": f"export of {pan}"})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, compression="zstd")
    found_in, files = scan_files(tmp_path)
    assert files == 1
    assert sorted((f.where.removeprefix(str(path)), f.hit.start) for f in found_in) == [
        (" column note row 2", 5),  # row 2, at offset 5 of its value
        (" metadata", 17),
    ]
    # Not Parquet after all: scanned as bytes.
    (tmp_path / "t.parquet").write_bytes(f"plain text {pan}\n".encode())
    assert [f.where for f in scan_files(tmp_path)[0]] == [str(path)]
