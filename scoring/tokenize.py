"""Card-number tokenization: a raw card number (PAN) becomes a keyed HMAC token at the edge.

A bank that cannot tokenize itself sends the PAN in the API's dedicated ``card_number`` field; the
API replaces it by ``card_id = tok_<key id>_<token>`` before anything else sees it (Kafka, the
idempotency store, logs). Banks that produce straight to Kafka call :func:`CardTokenizer.tokenize`
(or ``fraudstream tokenize``) with the same key before producing, so both paths give one card the
same ``card_id``.

The token is HMAC-SHA256(key, domain || PAN), truncated to 128 bits and written in lowercase
base32. Why these choices:

* keyed: the PAN space is small (a BIN fixes 6-8 digits, Luhn one more: ~10⁹ candidates per BIN),
  so an unkeyed hash is reversed by enumeration in minutes; without the key it cannot be;
* 128 bits: collisions between two cards need ~2⁶⁴ cards;
* base32, not hex: a hex string is 62 % digits, so a 32-character hex token often holds a run of
  13+ digits, and one in ten of those passes Luhn — it would look like a card number to the
  PAN checks and scanners. Base32 (a-z, 2-7) makes such a run practically impossible (< 10⁻⁸).

Rotation (docs/api.md, "Card numbers and tokenization"): the key is versioned. The key id is part
of the token, new tokens use the *active* key, and the other keys stay known so that an
investigator can compute a card's tokens under earlier keys. Per-card state (velocity, novelty) is
keyed by ``card_id``, so after a switch of the active key every card starts a new history; rotation
is therefore rare and planned, not periodic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from scoring.records import luhn_valid

#: The chart's public development key (global.development); never outside development.
DEV_TOKENIZATION_KEY = "insecure-development-tokenization-key-do-not-use"
#: The id of a key given as a bare secret (not as JSON with ids).
DEFAULT_KEY_ID = "k1"
MIN_SECRET_CHARS = 32
TOKEN_PREFIX = "tok_"  # noqa: S105 -- a prefix, not a password
_KEY_ID = re.compile(r"^[a-z0-9]{1,16}$")
_CARD_NUMBER = re.compile(r"^[0-9]{13,19}$")
# Domain separation: the same key used for anything else never yields a card token.
_DOMAIN = b"fraudstream/card-token/v1\x00"


class TokenizationConfigError(ValueError):
    """The tokenization key setting is malformed; the message says what to fix (never the key)."""


class BadCardNumberError(ValueError):
    """Not a card number; the message says why without repeating it."""


def check_card_number(value: str) -> str:
    """``value`` when it is 13-19 ASCII digits passing Luhn, else :class:`BadCardNumberError`."""
    if not _CARD_NUMBER.match(value):
        raise BadCardNumberError("a card number is 13 to 19 digits (0-9), without separators")
    if not luhn_valid(value):
        raise BadCardNumberError("not a card number: the Luhn check digit does not match")
    return value


@dataclass(frozen=True)
class CardTokenizer:
    """Keys by id and the active one. ``repr`` never shows a key."""

    keys: dict[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise TokenizationConfigError(f"the active key id {self.active!r} has no key")

    def __repr__(self) -> str:
        return f"CardTokenizer(active={self.active!r}, key_ids={sorted(self.keys)})"

    def tokenize(self, card_number: str, *, key_id: str | None = None) -> str:
        """The ``card_id`` of ``card_number`` under the active key (or ``key_id``)."""
        check_card_number(card_number)
        kid = key_id or self.active
        if kid not in self.keys:
            raise TokenizationConfigError(f"no tokenization key with id {kid!r}")
        mac = hmac.new(self.keys[kid], _DOMAIN + card_number.encode("ascii"), hashlib.sha256)
        token = base64.b32encode(mac.digest()[:16]).decode("ascii").rstrip("=").lower()
        return f"{TOKEN_PREFIX}{kid}_{token}"

    @classmethod
    def parse(cls, secret: str) -> CardTokenizer:
        """From the setting's text: a bare secret (key id ``k1``), or JSON
        ``{"active": "<id>", "keys": {"<id>": "<secret>", ...}}``."""
        text = secret.strip()
        if not text.startswith("{"):
            return cls({DEFAULT_KEY_ID: _secret_bytes(DEFAULT_KEY_ID, text)}, DEFAULT_KEY_ID)
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TokenizationConfigError(f"tokenization key is not JSON: {exc.msg}") from None
        if not isinstance(config, dict) or set(config) != {"active", "keys"}:
            raise TokenizationConfigError(
                'tokenization key JSON must be {"active": "<key id>", "keys": {"<key id>": '
                '"<secret>", ...}}'
            )
        keys = config["keys"]
        if not isinstance(keys, dict) or not keys:
            raise TokenizationConfigError(
                "tokenization key JSON: `keys` must be a non-empty object"
            )
        parsed = {}
        for kid, value in keys.items():
            if not _KEY_ID.match(kid):
                raise TokenizationConfigError(
                    f"tokenization key id {kid!r}: 1-16 characters a-z, 0-9 (it is part of tokens)"
                )
            if not isinstance(value, str):
                raise TokenizationConfigError(f"tokenization key {kid!r}: the secret must be text")
            parsed[kid] = _secret_bytes(kid, value)
        active = config["active"]
        if not isinstance(active, str) or active not in parsed:
            raise TokenizationConfigError(
                f"tokenization key JSON: `active` must name one of the keys {sorted(parsed)}"
            )
        if len(set(parsed.values())) != len(parsed):
            raise TokenizationConfigError("tokenization keys: two key ids share one secret")
        return cls(parsed, active)


def _secret_bytes(kid: str, secret: str) -> bytes:
    if len(secret) < MIN_SECRET_CHARS:
        raise TokenizationConfigError(
            f"tokenization key {kid!r} is shorter than {MIN_SECRET_CHARS} characters; use a "
            "random secret (e.g. `openssl rand -base64 48`)"
        )
    return secret.encode("utf-8")


def tokenizer_from_settings(secret: str | None, *, development: bool) -> CardTokenizer | None:
    """The deployment's tokenizer: on when a key is configured; in development without one, the
    public development key; otherwise None (``card_number`` is refused)."""
    if secret is not None and secret.strip():
        return CardTokenizer.parse(secret)
    if development:
        return CardTokenizer.parse(DEV_TOKENIZATION_KEY)
    return None
