"""The record contracts (DESIGN.md §2) and the Luhn guard."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scoring.records import Label, Transaction, looks_like_pan, luhn_valid

VALID = {
    "transaction_id": "tx-1",
    "card_id": "card_0001",
    "timestamp": "2026-03-01T12:00:00+01:00",
    "amount": 12.5,
}


def _luhn_complete(prefix: str) -> str:
    """Append the check digit that makes ``prefix`` Luhn-valid."""
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable")


def test_minimal_transaction_has_optional_fields_absent() -> None:
    tx = Transaction.model_validate(VALID)
    assert tx.timestamp == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert tx.merchant_id is None and tx.channel is None and tx.bank_id is None


def test_epoch_milliseconds_are_accepted() -> None:
    tx = Transaction.model_validate({**VALID, "timestamp": 1_772_366_400_000})
    assert tx.timestamp == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -3),
        ("amount", float("nan")),
        ("timestamp", "2026-03-01T12:00:00"),  # no offset
        ("transaction_id", ""),
        ("transaction_id", "x" * 65),
        ("mcc", "54a1"),
        ("country", "fra"),
        ("channel", "phone"),
        ("currency", "eu"),
    ],
)
def test_invalid_fields_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate({**VALID, field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        Transaction.model_validate({**VALID, "pan": "x"})


@pytest.mark.parametrize("pan", ["4111111111111111", "5500005555555559", "340000000000009"])
def test_pan_like_card_id_is_rejected_and_not_echoed(pan: str) -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate({**VALID, "card_id": pan})
    assert pan not in str(info.value.errors(include_input=False))


@given(st.from_regex(r"\d{12,18}", fullmatch=True))
def test_luhn_completed_numbers_are_pan_like(prefix: str) -> None:
    assert looks_like_pan(_luhn_complete(prefix))


@given(st.from_regex(r"\d{12,18}", fullmatch=True))
def test_one_wrong_check_digit_is_not_pan_like(prefix: str) -> None:
    number = _luhn_complete(prefix)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not looks_like_pan(wrong)


def test_short_or_long_digit_strings_are_tokens() -> None:
    assert not looks_like_pan(_luhn_complete("41111111111"))  # 12 digits
    assert not looks_like_pan(_luhn_complete("4" * 19))  # 20 digits


def test_label_accepts_epoch_and_iso() -> None:
    a = Label.model_validate(
        {"transaction_id": "t", "is_fraud": True, "reported_at": 1_772_366_400_000}
    )
    b = Label.model_validate(
        {"transaction_id": "t", "is_fraud": True, "reported_at": "2026-03-01T12:00:00Z"}
    )
    assert a.reported_at == b.reported_at
