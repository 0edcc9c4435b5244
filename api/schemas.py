"""Request and response bodies of the API: the records of DESIGN.md §2 as a bank sees them.

Requests are stricter than :mod:`scoring.records` on purpose, so that the OpenAPI schema says
exactly what is accepted (schemathesis holds the two together):

* JSON types are strict: ``"12.5"`` is not an amount, ``"true"`` is not a boolean;
* ``timestamp`` is an RFC 3339 string with an offset, years 1970–2099, written out as a regular
  expression (month lengths and leap years included) instead of ``format: date-time``;
* ``bank_id`` is not a field: the bank is the one the API key belongs to;
* text must be valid Unicode (no lone surrogates: they cannot be written to Kafka as UTF-8).

Every request the API accepts is a valid :class:`scoring.records.Transaction` (tests hold this), and
responses are :class:`scoring.records.Decision` records exactly as the stream wrote them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from scoring.records import Decision, looks_like_pan
from scoring.tokenize import check_card_number

# ---------------------------------------------------------------------------------- field types


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (a lone surrogate is not)") from None
    return value


def _not_pan(value: str) -> str:
    if looks_like_pan(value):
        # Never echo the value: it may be a real card number.
        raise ValueError("looks like a raw card number (13-19 digits, Luhn-valid); send a token")
    return value


def _card_number(value: str) -> str:
    check_card_number(value)  # its message never repeats the value
    return value


Text64 = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_valid_unicode)]
#: JSON-schema ``format`` of ``card_number`` (13-19 digits passing Luhn; the pattern says the
#: first part, Luhn is a custom format so that schema-driven clients can generate valid ones).
CARD_NUMBER_FORMAT = "card-number"
CardNumber = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{13,19}$",
        json_schema_extra={"format": CARD_NUMBER_FORMAT},
        description="The raw card number (13–19 digits passing Luhn), for banks that do not "
        "tokenize themselves: replaced on arrival by `card_id = tok_<key id>_<HMAC>` and never "
        "stored, logged or forwarded. Send either `card_id` or `card_number`.",
    ),
    AfterValidator(_card_number),
]
CardToken = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="Opaque card token. A 13–19 digit Luhn-valid number (a real card number) is "
        "refused and never logged.",
    ),
    AfterValidator(_valid_unicode),
    AfterValidator(_not_pan),
]

_YEAR = r"(?:19[7-9][0-9]|20[0-9]{2})"
_LEAP_YEAR = r"(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26]))"
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = (
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
#: RFC 3339 date-time with an offset, 1970-01-01 to 2099-12-31, real calendar dates only.
TIMESTAMP_PATTERN = rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29){_TIME}$"

Timestamp = Annotated[
    str,
    Field(
        pattern=TIMESTAMP_PATTERN,
        description="RFC 3339 with an offset, e.g. 2026-05-04T12:00:00Z (years 1970–2099); kept "
        "to the millisecond.",
        examples=["2026-05-04T12:00:00.250Z"],
    ),
]


def parse_timestamp(value: str) -> datetime:
    """A :data:`Timestamp` string as an aware UTC datetime truncated to the millisecond."""
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def rfc3339_ms(moment: datetime) -> str:
    """``2026-05-04T12:00:00.250Z``: the stream's wire format (scoring.wire)."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


_STRICT = ConfigDict(extra="forbid", strict=True)

# ----------------------------------------------------------------------------------- requests

TRANSACTION_EXAMPLE: dict[str, Any] = {
    "transaction_id": "tx-2026-05-04-000123",
    "card_id": "card-9f2c1a",
    "timestamp": "2026-05-04T12:00:00.250Z",
    "amount": 42.5,
    "currency": "EUR",
    "merchant_id": "m-1234",
    "terminal_id": "t-77",
    "mcc": "5411",
    "country": "FR",
    "channel": "pos",
    "card_present": True,
    "customer_id": "cust-8812",
}


class TransactionIn(BaseModel):
    """A card transaction to decide. ``bank_id`` is not sent: it is the API key's bank."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [TRANSACTION_EXAMPLE]})

    transaction_id: Text64 = Field(description="Unique per bank; the idempotency key.")
    card_id: CardToken
    timestamp: Timestamp
    amount: float = Field(gt=0, lt=1e12, allow_inf_nan=False, description="Major units.")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217.")
    merchant_id: Text64 | None = None
    terminal_id: Text64 | None = None
    mcc: str | None = Field(default=None, pattern=r"^[0-9]{4}$", description="Merchant category.")
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 a2.")
    channel: Literal["pos", "ecom", "atm", "moto"] | None = None
    card_present: bool | None = None
    customer_id: Text64 | None = None


class TokenizingTransactionIn(TransactionIn):
    """A transaction on a deployment that tokenizes card numbers: ``card_id`` or ``card_number``.

    Only the route sees this model: it swaps ``card_number`` for its token at once
    (:meth:`with_card_id`), so everything after holds a :class:`TransactionIn`.
    """

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "examples": [TRANSACTION_EXAMPLE],
            "oneOf": [{"required": ["card_id"]}, {"required": ["card_number"]}],
        },
    )

    # Absent, not nullable: an explicit null is a 422, so the schema's oneOf says what is accepted.
    card_id: CardToken = None  # type: ignore[assignment]
    card_number: CardNumber = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_card(self) -> TokenizingTransactionIn:
        if (self.card_id is None) == (self.card_number is None):
            raise ValueError("send exactly one of card_id (a token) and card_number")
        return self

    def with_card_id(self, card_id: str) -> TransactionIn:
        """This transaction as the stream gets it: ``card_id`` set, no ``card_number``."""
        fields = {k: getattr(self, k) for k in TransactionIn.model_fields}
        fields["card_id"] = card_id
        return TransactionIn.model_construct(**fields)


def batch_request_model(
    max_batch: int, item: type[TransactionIn] = TransactionIn
) -> type[BaseModel]:
    """The batch body; its size limit is a setting, so the model is made per app."""
    items = Annotated[list[item], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
    return create_model(
        "TransactionBatch",
        __config__=ConfigDict(
            **_STRICT,
            json_schema_extra={"examples": [{"transactions": [TRANSACTION_EXAMPLE]}]},
        ),
        transactions=(items, Field(description=f"1 to {max_batch} transactions.")),
    )


class LabelIn(BaseModel):
    """What the bank learned about a transaction: fraud or genuine."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "tx-2026-05-04-000123",
                    "is_fraud": True,
                    "reported_at": "2026-05-20T09:30:00Z",
                    "source": "chargeback",
                }
            ]
        },
    )

    transaction_id: Text64
    is_fraud: bool
    reported_at: Timestamp | None = Field(
        default=None, description="When the bank learned it; default: now."
    )
    source: Literal["chargeback", "analyst", "customer"] | None = None


class ReviewVerdictIn(BaseModel):
    """An analyst's verdict on a transaction the stream sent to review."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [{"is_fraud": False}]})

    is_fraud: bool


# ---------------------------------------------------------------------------------- responses


class StoredDecision(Decision):
    """A past decision: what the bank was told, and the stream's own decision when they differ."""

    stream_decision: Decision | None = Field(
        default=None,
        description="When the bank was told a degraded (fallback) decision: the stream's decision "
        "for the same transaction, once it arrived. Null otherwise.",
    )


class DecisionBatch(BaseModel):
    decisions: list[Decision] = Field(description="One per transaction, in request order.")


class LabelOut(BaseModel):
    """The label as it was put on the ``labels`` topic."""

    transaction_id: str
    is_fraud: bool
    reported_at: datetime
    bank_id: str
    source: Literal["chargeback", "analyst", "customer"] | None = None


class ReviewItem(BaseModel):
    transaction_id: str
    decision: Decision
    cursor: str = Field(description="Pass as `cursor` to list what comes after this item.")


class ReviewPage(BaseModel):
    items: list[ReviewItem] = Field(description="Oldest decision first.")
    next_cursor: str | None = Field(description="The cursor of the next page; null at the end.")


class ReviewOut(BaseModel):
    transaction_id: str
    is_fraud: bool
    label: LabelOut


class TrainingWindowOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime | None = Field(default=None, alias="from")
    until: datetime | None = None


class ModelOut(BaseModel):
    version: str
    parent: str | None = None
    created_at: datetime
    window: TrainingWindowOut
    metrics: dict[str, float | None]
    feature_schema_hash: str


class ModelsOut(BaseModel):
    serving: ModelOut | None = Field(description="The version this API replica has loaded.")
    champion: ModelOut | None
    challenger: ModelOut | None


class Problem(BaseModel):
    """An error: what went wrong, in one sentence."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description='Where: e.g. ["body", "amount"].')
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """Field-level errors. The offending values are never echoed."""

    detail: list[FieldProblem]


class Health(BaseModel):
    ok: bool
    detail: str
