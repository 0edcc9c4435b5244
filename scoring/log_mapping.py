"""Convert a foreign card-transaction file into fraudstream's log format with a column mapping.

A mapping (TOML, see docs/scoring.md "Converting public datasets" and ``docs/mappings/``) says,
for each contract field of DESIGN.md §2, where its value comes from::

    [transactions]
    transaction_id = "trans_num"                                  # a column, as text
    card_id = { column = "cc_num", tokenize = true }              # keyed token, never the number
    timestamp = { column = "trans_date_trans_time", format = "%Y-%m-%d %H:%M:%S" }
    amount = "amt"
    channel = { column = "category", map = { shopping_net = "ecom" }, default = "pos" }
    currency = { value = "USD" }                                  # a constant

    [labels]
    is_fraud = "is_fraud"
    delay_days = 7          # reported_at = timestamp + 7 days (the file does not say when)
    source = { value = "chargeback" }

A field spec is a column name, or a table with one of ``column`` / ``columns`` (joined with "|",
for composite keys) / ``value``, and optionally ``tokenize``, ``map`` + ``default``, ``format`` and
``timezone`` (text times), ``unit`` and ``origin`` (numeric times: epoch or offsets), ``scale``
(amounts). Fields left out are absent (null); the service works without them, with the features
that need them missing (docs/features.md, column "needs").

Only mapped fields are written: every other input column (names, addresses, raw card numbers) is
dropped. ``tokenize`` replaces a value by the same ``tok_<key id>_...`` token the API gives a card
number (:mod:`scoring.tokenize`, key from ``FRAUD_API__TOKENIZATION_KEY``); values that are not
card numbers (e.g. a dataset's own card ids) get a keyed token of the same form. Before anything
is written, every text field is checked for values that look like a raw card number (13-19 digits
passing Luhn), and the output must pass the log readers' checks; errors name the input file, the
row and the field, never the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from scoring.logs import (
    MAX_PROBLEMS,
    TIMESTAMP,
    TRANSACTION_FIELDS,
    LogError,
    Problem,
)
from scoring.records import looks_like_pan
from scoring.tokenize import TOKEN_PREFIX, CardTokenizer

TRANSACTION_NAMES = tuple(f.name for f in TRANSACTION_FIELDS)
LABEL_NAMES = ("is_fraud", "reported_at", "source")  # transaction_id and bank_id come along
SPEC_KEYS = {"column", "columns", "value", "tokenize", "map", "default", "format", "timezone",
             "unit", "origin", "scale"}  # fmt: skip
# Values that are not card numbers (a dataset's own ids) are tokenized in their own domain, so a
# card number and an id that happen to be equal never share a token.
_ID_DOMAIN = b"fraudstream/converted-id/v1\x00"
_PAN_CANDIDATE = r"^[0-9]{13,19}$"


class MappingError(ValueError):
    """The mapping file is wrong; the message names the section and field."""


@dataclass(frozen=True)
class FieldSpec:
    field: str
    column: str | None = None
    columns: tuple[str, ...] = ()
    value: Any = None
    tokenize: bool = False
    map: dict[str, Any] | None = None
    default: Any = None
    format: str | None = None
    timezone: str = "UTC"
    unit: str = "ms"
    origin: str | None = None
    scale: float | None = None

    @property
    def source(self) -> str:
        if self.columns:
            return "columns " + "+".join(self.columns)
        return f"column {self.column!r}" if self.column else "a constant"


@dataclass(frozen=True)
class Mapping:
    transactions: dict[str, FieldSpec]
    labels: dict[str, FieldSpec]
    delay_days: float | None = None
    frauds_only: bool = False
    csv_delimiter: str = ","
    path: Path | None = None

    @property
    def has_labels(self) -> bool:
        return "is_fraud" in self.labels


def load_mapping(path: Path) -> Mapping:
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: not valid TOML: {exc}") from None
    return parse_mapping(document, path)


def parse_mapping(document: dict[str, Any], path: Path | None = None) -> Mapping:
    where = f"{path}: " if path else ""
    unknown = set(document) - {"transactions", "labels", "source"}
    if unknown:
        raise MappingError(
            f"{where}unknown sections {sorted(unknown)} (transactions, labels, source)"
        )
    tx = _specs(document.get("transactions", {}), "transactions", TRANSACTION_NAMES, where)
    missing = [f.name for f in TRANSACTION_FIELDS if f.required and f.name not in tx]
    if missing:
        raise MappingError(f"{where}[transactions] must map the required fields {missing}")
    raw_labels = dict(document.get("labels", {}))
    delay = raw_labels.pop("delay_days", None)
    frauds_only = raw_labels.pop("frauds_only", False)
    labels = _specs(raw_labels, "labels", LABEL_NAMES, where)
    if labels and "is_fraud" not in labels:
        raise MappingError(f"{where}[labels] must map is_fraud")
    if labels and ("reported_at" in labels) == (delay is not None):
        raise MappingError(
            f"{where}[labels] needs exactly one of reported_at (a column) or delay_days (days "
            "after the transaction)"
        )
    if delay is not None and (not isinstance(delay, int | float) or delay < 0):
        raise MappingError(f"{where}[labels] delay_days must be a number >= 0")
    source = document.get("source", {})
    delimiter = source.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise MappingError(f"{where}[source] delimiter must be one character")
    return Mapping(tx, labels, None if delay is None else float(delay), bool(frauds_only),
                   delimiter, path)  # fmt: skip


def _specs(
    section: dict[str, Any], name: str, known: tuple[str, ...], where: str
) -> dict[str, FieldSpec]:
    out = {}
    for key, raw in section.items():
        if key not in known:
            raise MappingError(f"{where}[{name}] {key!r} is not a field of the format ({known})")
        spec = {"column": raw} if isinstance(raw, str) else raw
        if not isinstance(spec, dict):
            raise MappingError(f"{where}[{name}] {key}: a column name or a table")
        bad = set(spec) - SPEC_KEYS
        if bad:
            raise MappingError(f"{where}[{name}] {key}: unknown keys {sorted(bad)}")
        sources = sum(k in spec for k in ("column", "columns", "value"))
        if sources != 1:
            raise MappingError(f"{where}[{name}] {key}: exactly one of column, columns, value")
        if "unit" in spec and spec["unit"] not in ("s", "ms", "us"):
            raise MappingError(f"{where}[{name}] {key}: unit is s, ms or us")
        values = {k: v for k, v in spec.items() if k != "columns"}
        out[key] = FieldSpec(field=key, columns=tuple(spec.get("columns", ())), **values)
    return out


# ------------------------------------------------------------------------------------- reading


def read_any(path: Path, delimiter: str = ",") -> pa.Table:
    """Every column as it is in the file; CSV columns as text (ids keep their leading zeros)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name.removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return pq.read_table(path)
    if name.endswith((".jsonl", ".ndjson")):
        return pajson.read_json(path)
    if name.endswith(".csv"):
        parse = pacsv.ParseOptions(delimiter=delimiter)
        with pacsv.open_csv(path, parse_options=parse) as reader:
            names = reader.schema.names
        convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            null_values=[""],
        )
        return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    raise ValueError(f"{path}: unknown format (use .csv, .csv.gz, .parquet or .jsonl)")


# ------------------------------------------------------------------------------------ converting


@dataclass
class _Problems:
    file: str
    problems: list[Problem] = field(default_factory=list)
    more: int = 0

    def add_rows(self, mask: np.ndarray, where: str, message: str) -> None:
        for row in np.flatnonzero(mask):
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(Problem(self.file, int(row) + 1, where, message))
            else:
                self.more += 1

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.file, 0, where, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise LogError(self.problems, more=self.more)


@dataclass(frozen=True)
class Converted:
    transactions: pa.Table
    labels: pa.Table | None
    notes: list[str]  # what the reader should know: values left out of a map, etc.


def convert(
    table: pa.Table, mapping: Mapping, *, tokenizer: CardTokenizer | None, file: str
) -> Converted:
    problems = _Problems(file)
    notes: list[str] = []
    needs_key = [
        s for s in (*mapping.transactions.values(), *mapping.labels.values()) if s.tokenize
    ]
    if needs_key and tokenizer is None:
        raise MappingError(
            f"fields {[s.field for s in needs_key]} are to be tokenized but no tokenization key is "
            "set: FRAUD_API__TOKENIZATION_KEY (the API's key, so both give a card one card_id)"
        )
    for spec in (*mapping.transactions.values(), *mapping.labels.values()):
        for column in (spec.column, *spec.columns):
            if column is not None and column not in table.column_names:
                problems.add(spec.field, f"column {column!r} is not in the file "
                             f"(it has {', '.join(table.column_names[:30])})")  # fmt: skip
    problems.raise_if_any()

    columns: dict[str, pa.Array] = {}
    for name, spec in mapping.transactions.items():
        columns[name] = _field(table, spec, problems, notes, tokenizer)
    problems.raise_if_any()
    transactions = pa.table(columns)
    _refuse_card_numbers(transactions, mapping.transactions, problems)
    problems.raise_if_any()

    labels = None
    if mapping.has_labels:
        fraud = _field(table, mapping.labels["is_fraud"], problems, notes, tokenizer, kind="bool")
        problems.raise_if_any()
        if "reported_at" in mapping.labels:
            reported = _field(table, mapping.labels["reported_at"], problems, notes, tokenizer,
                              kind="timestamp")  # fmt: skip
        else:
            delay = pa.scalar(timedelta(days=mapping.delay_days or 0.0), pa.duration("ms"))
            reported = pc.add(transactions["timestamp"].combine_chunks().cast(TIMESTAMP), delay)
        label_columns: dict[str, Any] = {
            "transaction_id": transactions["transaction_id"],
            "is_fraud": fraud,
            "reported_at": reported,
        }
        if "bank_id" in transactions.column_names:
            label_columns["bank_id"] = transactions["bank_id"]
        if "source" in mapping.labels:
            label_columns["source"] = _field(table, mapping.labels["source"], problems, notes,
                                             tokenizer)  # fmt: skip
        problems.raise_if_any()
        labels = pa.table(label_columns)
        if mapping.frauds_only:
            labels = labels.filter(pc.fill_null(labels["is_fraud"], False))
    return Converted(transactions, labels, notes)


_KINDS = {"timestamp": "timestamp", "reported_at": "timestamp", "amount": "amount",
          "is_fraud": "bool", "card_present": "bool"}  # fmt: skip


def _field(
    table: pa.Table,
    spec: FieldSpec,
    problems: _Problems,
    notes: list[str],
    tokenizer: CardTokenizer | None,
    *,
    kind: str | None = None,
) -> pa.Array:
    kind = kind or _KINDS.get(spec.field, "text")
    n = table.num_rows
    if spec.value is not None:
        constant = spec.value
        if kind == "timestamp":
            return pa.array([_parse_time(str(constant))] * n, TIMESTAMP)
        return pa.array([constant] * n)
    if spec.columns:
        parts = [pc.cast(table[c].combine_chunks(), pa.string()) for c in spec.columns]
        # a missing part is an empty string: the other parts still identify the entity
        raw = pc.binary_join_element_wise(*parts, "|", null_handling="replace", null_replacement="")
    else:
        raw = table[spec.column].combine_chunks()
    where = f"{spec.field} (from {spec.source})"
    if spec.map is not None:
        raw = _mapped(raw, spec, notes)
    if kind == "timestamp":
        return _timestamp(raw, spec, problems, where)
    if kind == "amount":
        values = _floats(raw, problems, where)
        return pc.multiply(values, spec.scale) if spec.scale is not None else values
    if kind == "bool":
        return _bools(raw, problems, where)
    text = _text(raw)
    if spec.tokenize:
        assert tokenizer is not None
        text = _tokenized(text, tokenizer)
    return text


def _text(raw: pa.Array) -> pa.Array:
    if pa.types.is_floating(raw.type):
        # 1234.0 from a float column of ids is the id 1234
        whole = pc.equal(raw, pc.floor(raw))
        as_int = pc.cast(pc.if_else(whole, raw, None), pa.int64(), safe=False)
        return pc.if_else(whole, pc.cast(as_int, pa.string()), pc.cast(raw, pa.string()))
    return pc.cast(raw, pa.string())


def _mapped(raw: pa.Array, spec: FieldSpec, notes: list[str]) -> pa.Array:
    assert spec.map is not None
    text = _text(raw)
    encoded = text.dictionary_encode()
    values = encoded.dictionary.to_pylist()
    unmapped = sorted({v for v in values if v not in spec.map})
    looked_up = [spec.map.get(v, spec.default) for v in values]
    out = pc.take(pa.array(looked_up), encoded.indices)
    if unmapped:
        what = f"the default {spec.default!r}" if spec.default is not None else "null"
        shown = ", ".join(repr(v) for v in unmapped[:8]) + (" ..." if len(unmapped) > 8 else "")
        notes.append(f"{spec.field}: {len(unmapped)} value(s) of {spec.source} not in the map "
                     f"became {what}: {shown}")  # fmt: skip
    return out


def _floats(raw: pa.Array, problems: _Problems, where: str) -> pa.Array:
    if pa.types.is_floating(raw.type) or pa.types.is_integer(raw.type):
        return pc.cast(raw, pa.float64())
    text = pc.utf8_trim_whitespace(pc.cast(raw, pa.string()))
    try:
        return pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        values = text.to_pylist()
        out: list[float | None] = []
        bad = np.zeros(len(values), dtype=bool)
        for i, v in enumerate(values):
            try:
                out.append(None if v is None else float(v))
            except ValueError:
                out.append(None)
                bad[i] = True
        problems.add_rows(bad, where, "not a number")
        return pa.array(out, pa.float64())


def _bools(raw: pa.Array, problems: _Problems, where: str) -> pa.Array:
    text = pc.utf8_lower(pc.utf8_trim_whitespace(_text(raw)))
    true = pc.is_in(text, value_set=pa.array(["1", "true", "t", "yes", "y", "1.0"]))
    false = pc.is_in(text, value_set=pa.array(["0", "false", "f", "no", "n", "0.0"]))
    bad = np.asarray(
        pc.and_(pc.is_valid(text), pc.invert(pc.or_(true, false))).to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    problems.add_rows(bad, where, "must be 0/1 or true/false")
    return pc.if_else(true, True, pc.if_else(false, False, None))


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 0.001}


def _timestamp(raw: pa.Array, spec: FieldSpec, problems: _Problems, where: str) -> pa.Array:
    if pa.types.is_timestamp(raw.type):
        if raw.type.tz is None:
            raw = pc.assume_timezone(raw, spec.timezone)
        return raw.cast(TIMESTAMP)
    numeric = pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type)
    if not numeric and spec.format is None and spec.origin is None and spec.unit == "ms":
        # text: ISO 8601 (with or without offset)
        text = pc.cast(raw, pa.string())
        parsed = []
        bad = np.zeros(len(text), dtype=bool)
        for i, value in enumerate(text.to_pylist()):
            try:
                parsed.append(None if value is None else _parse_time(value))
            except ValueError:
                parsed.append(None)
                bad[i] = True
        problems.add_rows(bad, where, "not an ISO 8601 time (give `format` for other layouts)")
        return pa.array(parsed, TIMESTAMP)
    if spec.format is not None:
        text = pc.cast(raw, pa.string())
        parsed = pc.strptime(text, format=spec.format, unit="ms", error_is_null=True)
        bad = np.asarray(pc.and_(pc.is_valid(text), pc.is_null(parsed)).to_numpy(
            zero_copy_only=False), dtype=bool)  # fmt: skip
        problems.add_rows(bad, where, f"does not match the format {spec.format!r}")
        if parsed.type.tz is None:
            parsed = pc.assume_timezone(parsed, spec.timezone)
        return parsed.cast(TIMESTAMP)
    # numbers: epoch (or offsets from `origin`) in `unit`
    values = _floats(raw, problems, where)
    ms = pc.multiply(values, _UNIT_MS[spec.unit])
    if spec.origin is not None:
        ms = pc.add(ms, _parse_time(spec.origin).timestamp() * 1000.0)
    return pc.cast(pc.round(ms), pa.int64()).cast(TIMESTAMP)


def _tokenized(text: pa.Array, tokenizer: CardTokenizer) -> pa.Array:
    """Each distinct value once: card numbers as the API tokenizes them, other values with the
    same key in their own domain."""
    encoded = text.dictionary_encode()
    key = tokenizer.keys[tokenizer.active]
    tokens = []
    for value in encoded.dictionary.to_pylist():
        digits = value.replace(" ", "").replace("-", "")
        if looks_like_pan(digits):
            tokens.append(tokenizer.tokenize(digits))
            continue
        mac = hmac.new(key, _ID_DOMAIN + value.encode("utf-8"), hashlib.sha256).digest()[:16]
        body = base64.b32encode(mac).decode("ascii").rstrip("=").lower()
        tokens.append(f"{TOKEN_PREFIX}{tokenizer.active}_{body}")
    return pc.take(pa.array(tokens, pa.string()), encoded.indices)


def _refuse_card_numbers(table: pa.Table, specs: dict[str, FieldSpec], problems: _Problems) -> None:
    """No text field may carry something that looks like a raw card number (13-19 digits passing
    Luhn) — not only card_id: a customer or merchant id mapped from a card number column too."""
    for name in table.column_names:
        column = table[name].combine_chunks()
        if not pa.types.is_string(column.type):
            continue
        compact = pc.replace_substring_regex(column, r"[ -]", "")
        matches = pc.fill_null(pc.match_substring_regex(compact, _PAN_CANDIDATE), False)
        candidate = np.asarray(matches.to_numpy(zero_copy_only=False), dtype=bool)
        if not candidate.any():
            continue
        values = compact.to_pylist()
        bad = np.zeros(len(values), dtype=bool)
        for i in np.flatnonzero(candidate):
            bad[i] = looks_like_pan(values[i])
        spec = specs.get(name)
        source = spec.source if spec else "?"
        problems.add_rows(bad, f"{name} (from {source})",
                          "looks like a raw card number; map it with tokenize = true")  # fmt: skip


def degraded_features(mapped: set[str]) -> dict[str, list[str]]:
    """For each optional input field left out of a mapping, the features that will be NaN."""
    from scoring.features.catalog import CATALOG

    out: dict[str, list[str]] = {}
    for feature in CATALOG:
        for needed in (n.strip() for n in feature.needs.split(",") if n.strip()):
            if needed not in mapped:
                out.setdefault(needed, []).append(feature.name)
    return out
