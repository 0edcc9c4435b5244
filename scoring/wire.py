"""Records on the wire (Kafka values, JSON): canonical Arrow tables to JSON bytes, in bulk.

Field names and formats are those of DESIGN.md §2: snake_case, RFC 3339 UTC times with a ``Z``,
absent optional fields left out.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from scoring.logs import LABEL_SCHEMA, TIMESTAMP, TRANSACTION_SCHEMA


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
