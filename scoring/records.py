"""The record contracts of DESIGN.md §2: Transaction, Label, Decision.

These pydantic models are the reference definition (API bodies, OpenAPI, docs). Bulk paths (log
readers, the stream decoder) validate the same rules vectorised or with msgspec, and the tests hold
them to these models.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_DIGITS = re.compile(r"^\d{13,19}$")
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01: a larger epoch value is a unit mistake


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (only 0-9) passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(value: str) -> bool:
    """A 13–19 digit string that passes Luhn: treated as a real card number and refused."""
    return bool(_DIGITS.match(value)) and luhn_valid(value)


def _not_pan(value: str) -> str:
    if looks_like_pan(value):
        # Never echo the value: it may be a real card number.
        raise ValueError("looks like a raw card number (13-19 digits, Luhn-valid); send a token")
    return value


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z")
    return value.astimezone(UTC)


Id64 = Annotated[str, Field(min_length=1, max_length=64)]
CardToken = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_not_pan)]
AwareDatetime = Annotated[datetime, AfterValidator(_to_utc)]


class Channel(StrEnum):
    pos = "pos"
    ecom = "ecom"
    atm = "atm"
    moto = "moto"


class LabelSource(StrEnum):
    chargeback = "chargeback"
    analyst = "analyst"
    customer = "customer"


class Action(StrEnum):
    approve = "approve"
    review = "review"
    decline = "decline"


class Transaction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Id64
    card_id: CardToken
    timestamp: AwareDatetime
    amount: float = Field(gt=0, lt=1e12, allow_inf_nan=False, description="Major units.")
    bank_id: Id64 | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    merchant_id: Id64 | None = None
    terminal_id: Id64 | None = None
    mcc: str | None = Field(default=None, pattern=r"^\d{4}$")
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    channel: Channel | None = None
    card_present: bool | None = None
    customer_id: Id64 | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_millis(cls, value: object) -> object:
        # Logs may carry epoch milliseconds; the API carries RFC 3339 strings.
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0 <= value < MAX_EPOCH_MS:
                raise ValueError("epoch milliseconds must be between 1970 and 2100")
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        return value


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Id64
    is_fraud: bool
    reported_at: AwareDatetime
    bank_id: Id64 | None = None
    source: LabelSource | None = None

    _epoch_millis = field_validator("reported_at", mode="before")(
        Transaction._epoch_millis.__func__  # type: ignore[attr-defined]
    )


class Reason(BaseModel):
    feature: str
    value: float | None
    contribution: float = Field(description="Signed contribution to the log-odds of fraud.")


class Cost(BaseModel):
    expected_fraud_loss: float = Field(ge=0)
    review_cost: float = Field(ge=0)
    friction_cost: float = Field(ge=0)
    compute_usd: float = Field(ge=0)


class Decision(BaseModel):
    transaction_id: Id64
    bank_id: str | None
    score: float = Field(ge=0, le=1)
    action: Action
    reasons: list[Reason]
    model_version: str | None
    rule: str | None = None
    degraded: bool = False
    cost: Cost
    latency_ms: float = Field(ge=0)
    decided_at: datetime
