"""Records on the wire (Kafka values, JSON): canonical Arrow tables to JSON bytes, in bulk.

Field names and formats are those of DESIGN.md §2: snake_case, RFC 3339 UTC times with a ``Z``,
absent optional fields left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from msgspec.structs import astuple

from scoring.card_data import mask_card_numbers
from scoring.logs import LABEL_SCHEMA, TIMESTAMP, TRANSACTION_SCHEMA
from scoring.records import MAX_EPOCH_MS, looks_like_pan


def _rfc3339(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    text = pc.strftime(column.cast(TIMESTAMP), format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(text, "Z", "")


def _encode(table: pa.Table, fields: list[str], time_fields: tuple[str, ...]) -> list[bytes]:
    present = [f for f in fields if f in table.column_names]
    table = table.select(present)
    for name in time_fields:
        if name in present:
            table = table.set_column(present.index(name), name, _rfc3339(table.column(name)))
    dumps = orjson.dumps
    return [dumps({k: v for k, v in row.items() if v is not None}) for row in table.to_pylist()]


def encode_transactions(table: pa.Table) -> list[bytes]:
    """One JSON document per transaction (contract fields only; extra log columns dropped)."""
    return _encode(table, TRANSACTION_SCHEMA.names, ("timestamp",))


def encode_labels(table: pa.Table) -> list[bytes]:
    return _encode(table, LABEL_SCHEMA.names, ("reported_at",))


# ------------------------------------------------------------------------------------- decoding
# The stream's decoder: msgspec validates the contract of DESIGN.md §2 in C (~1 µs a message);
# what msgspec cannot say (an RFC 3339 offset, a Luhn-valid card number) is checked after, in bulk.

Id64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class TransactionMessage(msgspec.Struct, forbid_unknown_fields=True):
    transaction_id: Id64
    card_id: Id64
    timestamp: datetime | int  # RFC 3339 with offset, or epoch milliseconds
    amount: Annotated[float, msgspec.Meta(gt=0, lt=1e12)]
    bank_id: Id64 | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    merchant_id: Id64 | None = None
    terminal_id: Id64 | None = None
    mcc: Annotated[str, msgspec.Meta(pattern=r"^\d{4}$")] | None = None
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] | None = None
    channel: Literal["pos", "ecom", "atm", "moto"] | None = None
    card_present: bool | None = None
    customer_id: Id64 | None = None


class LabelMessage(msgspec.Struct, forbid_unknown_fields=True):
    transaction_id: Id64
    is_fraud: bool
    reported_at: datetime | int
    bank_id: Id64 | None = None
    source: Literal["chargeback", "analyst", "customer"] | None = None


_TX_DECODER = msgspec.json.Decoder(TransactionMessage)
_LABEL_DECODER = msgspec.json.Decoder(LabelMessage)
PAN_REASON = "card_id looks like a raw card number (13-19 digits, Luhn-valid); send a token"


@dataclass(frozen=True)
class Rejected:
    index: int  # position in the batch given to the decoder
    reason: str  # names the field; never echoes a card number


def _reason(text: str) -> str:
    # msgspec quotes some offending values ("Invalid enum value '...'", unknown field names): a
    # card number among them is masked before the reason reaches a DLQ header or a log line.
    return mask_card_numbers(text.encode("utf-8", "replace"))[0].decode("utf-8", "replace")


def _epoch_ms(value: datetime | int, field: str) -> int:
    if isinstance(value, int):
        if not 0 <= value < MAX_EPOCH_MS:
            raise ValueError(f"{field} in epoch milliseconds must be between 1970 and 2100")
        return value
    if value.tzinfo is None:
        raise ValueError(f"{field} needs a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z")
    return round(value.timestamp() * 1000)


def _decode_all(
    values: Sequence[bytes], decoder: msgspec.json.Decoder
) -> tuple[list[tuple[int, Any]], list[Rejected]]:
    """Decode message by message: joining a batch into one JSON array would be faster, but one
    crafted message (``{..},{..}``) could then pose as two and shift every later position."""
    good: list[tuple[int, Any]] = []
    rejected: list[Rejected] = []
    decode = decoder.decode
    for i, value in enumerate(values):
        try:
            good.append((i, decode(value)))
        except msgspec.ValidationError as exc:
            rejected.append(Rejected(i, _reason(f"invalid: {exc}")))
        except msgspec.DecodeError as exc:
            rejected.append(Rejected(i, _reason(f"not JSON: {exc}")))
    return good, rejected


def decode_transactions(values: Sequence[bytes]) -> tuple[pa.Table, list[int], list[Rejected]]:
    """Valid messages as a canonical table, the batch positions of its rows, and the rejects."""
    decoded, rejected = _decode_all(values, _TX_DECODER)
    rows: list[TransactionMessage] = []
    positions: list[int] = []
    millis: list[int] = []
    for i, message in decoded:
        try:
            moment = _epoch_ms(message.timestamp, "timestamp")
        except ValueError as exc:
            rejected.append(Rejected(i, f"invalid: {exc} - at `$.timestamp`"))
            continue
        if looks_like_pan(message.card_id):
            rejected.append(Rejected(i, f"invalid: {PAN_REASON} - at `$.card_id`"))
            continue
        millis.append(moment)
        rows.append(message)
        positions.append(i)
    # Column lists in one transposition (astuple is C), not a getattr per field and row.
    fields = TransactionMessage.__struct_fields__
    transposed = list(zip(*map(astuple, rows), strict=True)) if rows else [()] * len(fields)
    by_name = dict(zip(fields, transposed, strict=True))
    columns = {
        name: pa.array(millis, pa.int64()).cast(TIMESTAMP)
        if name == "timestamp"
        else pa.array(by_name[name], TRANSACTION_SCHEMA.field(name).type)
        for name in TRANSACTION_SCHEMA.names
    }
    table = pa.table(columns, schema=TRANSACTION_SCHEMA)
    rejected.sort(key=lambda r: r.index)
    return table, positions, rejected


def decode_labels(values: Sequence[bytes]) -> tuple[pa.Table, list[int], list[Rejected]]:
    decoded, rejected = _decode_all(values, _LABEL_DECODER)
    rows: list[LabelMessage] = []
    positions: list[int] = []
    millis: list[int] = []
    for i, message in decoded:
        try:
            millis.append(_epoch_ms(message.reported_at, "reported_at"))
        except ValueError as exc:
            rejected.append(Rejected(i, f"invalid: {exc} - at `$.reported_at`"))
            continue
        rows.append(message)
        positions.append(i)
    table = pa.table(
        {
            "transaction_id": pa.array([m.transaction_id for m in rows], pa.string()),
            "is_fraud": pa.array([m.is_fraud for m in rows], pa.bool_()),
            "reported_at": pa.array(millis, pa.int64()).cast(TIMESTAMP),
            "bank_id": pa.array([m.bank_id for m in rows], pa.string()),
            "source": pa.array([m.source for m in rows], pa.string()),
        },
        schema=LABEL_SCHEMA,
    )
    rejected.sort(key=lambda r: r.index)
    return table, positions, rejected
