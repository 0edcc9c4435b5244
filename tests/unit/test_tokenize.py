"""Card-number tokenization (scoring/tokenize.py): keyed, stable, rotatable, never a PAN."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.card_data import find_card_numbers, mask_card_numbers
from scoring.records import looks_like_pan, luhn_valid
from scoring.tokenize import (
    DEV_TOKENIZATION_KEY,
    BadCardNumberError,
    CardTokenizer,
    TokenizationConfigError,
    check_card_number,
    tokenizer_from_settings,
)

SECRET_1 = "s1-" + "a" * 40
SECRET_2 = "s2-" + "b" * 40
PAN = "4111111111111111"
TOKEN = re.compile(r"^tok_[a-z0-9]{1,16}_[a-z2-7]{26}$")


def with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


card_numbers = st.integers(12, 18).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n).map(with_check_digit)
)


def rotating() -> CardTokenizer:
    return CardTokenizer.parse(
        json.dumps({"active": "k2", "keys": {"k1": SECRET_1, "k2": SECRET_2}})
    )


def test_a_bare_secret_is_key_k1_and_tokens_are_stable() -> None:
    tokenizer = CardTokenizer.parse(SECRET_1)
    token = tokenizer.tokenize(PAN)
    assert TOKEN.match(token) and token.startswith("tok_k1_")
    assert CardTokenizer.parse(SECRET_1).tokenize(PAN) == token  # every replica, every restart
    assert CardTokenizer.parse(SECRET_2).tokenize(PAN) != token  # keyed
    assert tokenizer.tokenize("4012888888881881") != token
    assert PAN not in repr(tokenizer) and SECRET_1 not in repr(tokenizer)


def test_rotation_new_tokens_use_the_active_key_and_old_keys_stay_known() -> None:
    tokenizer = rotating()
    old = CardTokenizer.parse(SECRET_1).tokenize(PAN)
    assert tokenizer.tokenize(PAN).startswith("tok_k2_")
    # k1 as JSON gives the same tokens as k1 given bare: a bare key can be rotated away from
    assert tokenizer.tokenize(PAN, key_id="k1") == old
    with pytest.raises(TokenizationConfigError, match="no tokenization key with id 'k9'"):
        tokenizer.tokenize(PAN, key_id="k9")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("short", "shorter than 32"),
        ("{not json", "not JSON"),
        (json.dumps({"keys": {"k1": SECRET_1}}), "must be"),
        (json.dumps({"active": "k2", "keys": {"k1": SECRET_1}}), "`active` must name"),
        (json.dumps({"active": "K 1", "keys": {"K 1": SECRET_1}}), "1-16 characters"),
        (json.dumps({"active": "k1", "keys": {"k1": "x"}}), "shorter than 32"),
        (json.dumps({"active": "k1", "keys": {}}), "non-empty"),
        (json.dumps({"active": "a", "keys": {"a": SECRET_1, "b": SECRET_1}}), "share one secret"),
    ],
)
def test_bad_key_settings_say_what_is_wrong_and_never_show_the_secret(
    setting: str, message: str
) -> None:
    with pytest.raises(TokenizationConfigError, match=message) as caught:
        CardTokenizer.parse(setting)
    assert SECRET_1 not in str(caught.value)


def test_on_when_a_key_is_configured_dev_key_only_in_development() -> None:
    assert tokenizer_from_settings(None, development=False) is None
    assert tokenizer_from_settings("  ", development=False) is None
    dev = tokenizer_from_settings(None, development=True)
    assert dev is not None and dev.tokenize(PAN) == CardTokenizer.parse(
        DEV_TOKENIZATION_KEY
    ).tokenize(PAN)
    configured = tokenizer_from_settings(SECRET_1, development=True)
    assert configured is not None and configured.tokenize(PAN) == CardTokenizer.parse(
        SECRET_1
    ).tokenize(PAN)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("4111111111111112", "Luhn"),
        ("411111111111", "13 to 19"),
        ("41111111111111111111", "13 to 19"),
        ("4111 1111 1111 1111", "13 to 19"),
        ("４１１１１１１１１１１１１１１１", "13 to 19"),  # fullwidth digits are not 0-9
    ],
)
def test_a_bad_card_number_is_refused_without_repeating_it(value: str, why: str) -> None:
    with pytest.raises(BadCardNumberError, match=why) as caught:
        check_card_number(value)
    assert value not in str(caught.value)


@given(card_numbers)
def test_every_token_is_an_acceptable_card_id_and_no_card_number(card_number: str) -> None:
    token = rotating().tokenize(card_number)
    assert TOKEN.match(token) and len(token) <= 64
    assert not looks_like_pan(token)
    assert find_card_numbers(token.encode()) == []
    assert mask_card_numbers(token.encode()) == (token.encode(), 0)  # base32: no 13-digit run
