"""Transaction and label logs: Parquet, CSV and JSONL, chosen by file extension.

Readers return a canonical :class:`pyarrow.Table` (every contract field present, nulls where a
column or value is absent, timestamps as ``timestamp[ms, UTC]``) and validate the rules of
:mod:`scoring.records` vectorised, so a million-row log loads in about a second. A bad row raises
:class:`LogError` naming the file, the row (1-based data row; CSV line = row + 1) and the field.
Columns the contract does not know are kept after the contract's columns (e.g. the simulator's
``fraud_type``), untouched.

Why not validate row by row with the pydantic models: it is ~100x slower on big logs. The tests hold
the two paths to the same verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from scoring.records import luhn_valid

TIMESTAMP = pa.timestamp("ms", tz="UTC")
MAX_PROBLEMS = 20

CHANNELS = ("pos", "ecom", "atm", "moto")
SOURCES = ("chargeback", "analyst", "customer")


@dataclass(frozen=True)
class Problem:
    file: str
    row: int  # 1-based data row
    field: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row else ""
        return f"{self.file}: {where}field '{self.field}': {self.message}"


class LogError(ValueError):
    """A log file could not be read; ``problems`` names each bad row and field."""

    def __init__(self, problems: list[Problem], *, more: int = 0) -> None:
        self.problems = problems
        lines = [str(p) for p in problems]
        if more:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # id | token | timestamp | amount | pattern | choice | bool | mcc
    required: bool = False
    pattern: str | None = None
    choices: tuple[str, ...] = ()


TRANSACTION_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("transaction_id", "id", required=True),
    FieldSpec("card_id", "token", required=True),
    FieldSpec("timestamp", "timestamp", required=True),
    FieldSpec("amount", "amount", required=True),
    FieldSpec("bank_id", "id"),
    FieldSpec("currency", "pattern", pattern=r"^[A-Z]{3}$"),
    FieldSpec("merchant_id", "id"),
    FieldSpec("terminal_id", "id"),
    FieldSpec("mcc", "mcc"),
    FieldSpec("country", "pattern", pattern=r"^[A-Z]{2}$"),
    FieldSpec("channel", "choice", choices=CHANNELS),
    FieldSpec("card_present", "bool"),
    FieldSpec("customer_id", "id"),
)

LABEL_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("transaction_id", "id", required=True),
    FieldSpec("is_fraud", "bool", required=True),
    FieldSpec("reported_at", "timestamp", required=True),
    FieldSpec("bank_id", "id"),
    FieldSpec("source", "choice", choices=SOURCES),
)

_ARROW_TYPES = {
    "id": pa.string(),
    "token": pa.string(),
    "timestamp": TIMESTAMP,
    "amount": pa.float64(),
    "pattern": pa.string(),
    "choice": pa.string(),
    "bool": pa.bool_(),
    "mcc": pa.string(),
}


def schema_of(fields: Iterable[FieldSpec]) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, _ARROW_TYPES[f.kind], nullable=not f.required) for f in fields]
    )


TRANSACTION_SCHEMA = schema_of(TRANSACTION_FIELDS)
LABEL_SCHEMA = schema_of(LABEL_FIELDS)


# ----------------------------------------------------------------------------------------- reading


def read_transactions(path: str | Path) -> pa.Table:
    """Read and validate a transactions log (Parquet, CSV or JSONL)."""
    table = _canonical(Path(path), TRANSACTION_FIELDS)
    _check_unique_ids(Path(path), table)
    return table


def read_labels(path: str | Path) -> pa.Table:
    """Read and validate a labels log (Parquet, CSV or JSONL)."""
    return _canonical(Path(path), LABEL_FIELDS)


def _canonical(path: Path, fields: tuple[FieldSpec, ...]) -> pa.Table:
    raw, early_problems = _read_raw(path, fields)
    problems = _ProblemList(path.name)
    problems.extend(early_problems)
    if "__line" in raw.column_names:  # JSONL: report file line numbers, not data indexes
        problems.row_numbers = raw.column("__line").to_numpy()
        raw = raw.drop_columns(["__line"])
    names = raw.column_names
    repeated = sorted({n for n in names if names.count(n) > 1})
    for name in repeated:
        # A CSV header (or Parquet schema) naming a column twice: which one holds the data?
        problems.add_column(name, f"the column appears {names.count(name)} times")
    if repeated:
        problems.raise_if_any()
    columns: dict[str, pa.Array] = {}
    for spec in fields:
        if spec.name in raw.column_names:
            column = raw.column(spec.name).combine_chunks()
        elif spec.required:
            problems.add_column(spec.name, "required column is missing from the file")
            continue
        else:
            column = pa.nulls(raw.num_rows, type=_ARROW_TYPES[spec.kind])
        columns[spec.name] = _coerce(column, spec, problems)
    problems.raise_if_any()
    known = {f.name for f in fields}
    for name in raw.column_names:
        if name not in known:
            columns[name] = raw.column(name).combine_chunks()
    return pa.table(columns)


def _read_raw(path: Path, fields: tuple[FieldSpec, ...]) -> tuple[pa.Table, list[Problem]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such log file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path), []
    if suffix in (".csv", ".csv.gz"):
        # Every contract column is read as text, so a card token of digits never becomes an
        # integer and loses leading zeros; conversion (and its errors) happen in _coerce.
        convert = pacsv.ConvertOptions(
            column_types={f.name: pa.string() for f in fields},
            strings_can_be_null=True,
            null_values=[""],  # only an empty cell is missing: "nan" or "NULL" may be real ids
        )
        try:
            return pacsv.read_csv(path, convert_options=convert), []
        except pa.ArrowInvalid as exc:
            raise LogError([Problem(path.name, 0, "<csv>", str(exc))]) from exc
    if suffix in (".jsonl", ".ndjson", ".jsonl.gz"):
        return _read_jsonl(path)
    raise ValueError(f"{path}: unknown log format '{suffix}' (use .parquet, .csv or .jsonl)")


def _read_jsonl(path: Path) -> tuple[pa.Table, list[Problem]]:
    problems: list[Problem] = []
    rows: list[dict[str, object]] = []
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                problems.append(Problem(path.name, line_no, "<line>", f"not valid JSON ({exc})"))
                continue
            if not isinstance(obj, dict):
                problems.append(Problem(path.name, line_no, "<line>", "not a JSON object"))
                continue
            obj["__line"] = line_no
            rows.append(obj)
    names: dict[str, None] = {}
    for obj in rows:
        names.update(dict.fromkeys(obj))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [obj.get(name) for obj in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # Mixed JSON types in one column, or integers beyond 64 bits (found by fuzzing):
            # compare as text, _coerce reports the bad rows.
            columns[name] = pa.array([None if v is None else _json_text(v) for v in values])
    table = pa.table(columns) if columns else pa.table({"__line": pa.array([], pa.int64())})
    return table, problems


def _json_text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class _ProblemList:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Problem] = []
        self.more = 0
        self.row_numbers: np.ndarray | None = None  # JSONL: data index -> line number

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self._append(p)

    def add_column(self, field: str, message: str) -> None:
        """A problem with a whole column (row 0 means: every row)."""
        self._append(Problem(self.file, 0, field, message))

    def add(self, index: int, field: str, message: str) -> None:
        row = index + 1 if self.row_numbers is None else int(self.row_numbers[index])
        self._append(Problem(self.file, row, field, message))

    def _append(self, problem: Problem) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(problem)
        else:
            self.more += 1

    def add_mask(self, mask: np.ndarray, field: str, message: Callable[[int], str]) -> None:
        for index in np.flatnonzero(mask)[: MAX_PROBLEMS + 1]:
            self.add(int(index), field, message(int(index)))
        self.more += max(0, int(mask.sum()) - (MAX_PROBLEMS + 1))

    def raise_if_any(self) -> None:
        if self.items:
            self.items.sort(key=lambda p: (p.row, p.field))
            raise LogError(self.items, more=self.more)


# -------------------------------------------------------------------------------------- coercion


def _coerce(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    coerce = _COERCERS[spec.kind]
    value = coerce(column, spec, problems)
    if spec.required:
        missing = _mask(pc.is_null(value))
        # Rows already reported as malformed are not reported again as missing.
        already = _mask(pc.is_null(value)) & ~_mask(pc.is_null(column))
        problems.add_mask(missing & ~already, spec.name, lambda _i: "required value is missing")
    return value


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _show(column: pa.Array, index: int) -> str:
    text = repr(column[index].as_py())
    return text if len(text) <= 40 else text[:37] + "..."


def _as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_integer(column.type) or pa.types.is_null(column.type):
        return column.cast(pa.string())
    if pa.types.is_dictionary(column.type):
        return column.cast(pa.string())
    raise TypeError(f"expected text, found column of type {column.type}")


def _text_column(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    """The column as text; a column that cannot be text is reported once and read as missing."""
    try:
        return _as_text(column)
    except TypeError as exc:
        problems.add_column(spec.name, str(exc))
        return pa.nulls(len(column), pa.string())


def _coerce_id(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    text = _text_column(column, spec, problems)
    lengths = pc.fill_null(pc.utf8_length(text), 1).to_numpy(zero_copy_only=False)
    bad = (lengths < 1) | (lengths > 64)
    problems.add_mask(bad, spec.name, lambda _i: "must be 1-64 characters")
    return text


def _coerce_token(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    text = _coerce_id(column, spec, problems)
    digits = _mask(pc.fill_null(pc.match_substring_regex(text, r"^\d{13,19}$"), False))
    candidates = np.flatnonzero(digits)
    if candidates.size:
        values = text.take(pa.array(candidates)).to_pylist()
        pan = np.zeros(len(text), dtype=bool)
        pan[candidates] = [luhn_valid(v) for v in values]
        # The value is never echoed: it may be a real card number.
        problems.add_mask(
            pan,
            spec.name,
            lambda _i: "looks like a raw card number (13-19 digits, Luhn-valid); send a token",
        )
    return text


def _coerce_timestamp(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:  # a naive Parquet timestamp is taken to be UTC (documented)
            column = pc.assume_timezone(column, "UTC")
        return column.cast(TIMESTAMP, safe=False)
    if pa.types.is_integer(kind):
        return column.cast(pa.int64()).cast(TIMESTAMP)
    if pa.types.is_floating(kind):
        return pc.round(column).cast(pa.int64()).cast(TIMESTAMP)
    if pa.types.is_null(kind):
        return column.cast(TIMESTAMP)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        problems.add_column(spec.name, f"expected a timestamp, found column of type {kind}")
        return pa.nulls(len(column), TIMESTAMP)
    text = column.cast(pa.string())
    is_millis = _mask(pc.fill_null(pc.match_substring_regex(text, r"^-?\d{1,15}$"), False))
    out = np.zeros(len(text), dtype=np.int64)
    valid = ~_mask(pc.is_null(text))
    if is_millis.any():
        out[is_millis] = text.filter(pa.array(is_millis)).cast(pa.int64()).to_numpy()
    iso = valid & ~is_millis
    if iso.any():
        iso_text = text.filter(pa.array(iso))
        try:
            parsed = iso_text.cast(pa.timestamp("us", tz="UTC")).cast(TIMESTAMP, safe=False)
            out[iso] = parsed.cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            out[iso], bad = _parse_iso_slowly(iso_text.to_pylist())
            bad_mask = np.zeros(len(text), dtype=bool)
            bad_mask[np.flatnonzero(iso)[bad]] = True
            problems.add_mask(
                bad_mask,
                spec.name,
                lambda i: (
                    f"not an RFC 3339 time with offset nor epoch milliseconds "
                    f"(got {_show(text, i)})"
                ),
            )
            valid &= ~bad_mask
    return pa.array(out, type=pa.int64(), mask=~valid).cast(TIMESTAMP)


def _parse_iso_slowly(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-value fallback that finds the bad rows when the vectorised cast fails."""
    out = np.zeros(len(values), dtype=np.int64)
    bad = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            bad[i] = True
            continue
        if moment.tzinfo is None:
            bad[i] = True
            continue
        out[i] = round(moment.timestamp() * 1000)
    return out, bad


def _coerce_amount(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.cast(pa.float64())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        text = column.cast(pa.string())
        numeric = pc.match_substring_regex(text, r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
        not_numeric = _mask(pc.fill_null(pc.invert(numeric), False))
        problems.add_mask(not_numeric, spec.name, lambda i: f"not a number (got {_show(text, i)})")
        values = pc.if_else(numeric, text, None).cast(pa.float64())
    else:
        problems.add_column(spec.name, f"expected a number, found column of type {kind}")
        return pa.nulls(len(column), pa.float64())
    array = values.to_numpy(zero_copy_only=False).astype(np.float64)
    present = ~_mask(pc.is_null(values))
    with np.errstate(invalid="ignore"):
        bad = present & ~(np.isfinite(array) & (array > 0) & (array < 1e12))
    problems.add_mask(
        bad, spec.name, lambda i: f"must be a finite amount > 0 (got {_show(values, i)})"
    )
    return values


def _coerce_pattern(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    text = _text_column(column, spec, problems)
    assert spec.pattern is not None
    ok = pc.match_substring_regex(text, spec.pattern)
    bad = _mask(pc.fill_null(pc.invert(ok), False))
    problems.add_mask(bad, spec.name, lambda i: f"must match {spec.pattern} (got {_show(text, i)})")
    return text


def _coerce_mcc(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    if pa.types.is_integer(column.type):
        column = pc.utf8_lpad(column.cast(pa.string()), 4, "0")
    return _coerce_pattern(column, FieldSpec(spec.name, "pattern", pattern=r"^\d{4}$"), problems)


def _coerce_choice(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    text = _text_column(column, spec, problems)
    ok = pc.is_in(text, value_set=pa.array(spec.choices))
    bad = _mask(pc.and_(pc.invert(ok), pc.is_valid(text)))
    allowed = "|".join(spec.choices)
    problems.add_mask(bad, spec.name, lambda i: f"must be one of {allowed} (got {_show(text, i)})")
    return text


_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")


def _coerce_bool(column: pa.Array, spec: FieldSpec, problems: _ProblemList) -> pa.Array:
    kind = column.type
    if pa.types.is_boolean(kind):
        return column
    if pa.types.is_null(kind):
        return column.cast(pa.bool_())
    if pa.types.is_integer(kind):
        text = column.cast(pa.string())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(column.cast(pa.string())))
    else:
        problems.add_column(spec.name, f"expected true/false, found column of type {kind}")
        return pa.nulls(len(column), pa.bool_())
    is_true = pc.is_in(text, value_set=pa.array(_TRUE))
    is_false = pc.is_in(text, value_set=pa.array(_FALSE))
    bad = _mask(pc.and_(pc.is_valid(text), pc.invert(pc.or_(is_true, is_false))))
    problems.add_mask(bad, spec.name, lambda i: f"must be true or false (got {_show(text, i)})")
    return pc.if_else(is_true, True, pc.if_else(is_false, False, None))


_COERCERS: dict[str, Callable[[pa.Array, FieldSpec, _ProblemList], pa.Array]] = {
    "id": _coerce_id,
    "token": _coerce_token,
    "timestamp": _coerce_timestamp,
    "amount": _coerce_amount,
    "pattern": _coerce_pattern,
    "choice": _coerce_choice,
    "bool": _coerce_bool,
    "mcc": _coerce_mcc,
}


def _check_unique_ids(path: Path, table: pa.Table) -> None:
    """transaction_id is unique per bank: a repeat would get two decisions downstream."""
    keys = pc.binary_join_element_wise(
        pc.fill_null(table.column("bank_id"), ""), table.column("transaction_id"), "\x1f"
    )
    codes = keys.combine_chunks().dictionary_encode().indices.to_numpy()
    seen = np.zeros(len(table), dtype=bool)
    _, first = np.unique(codes, return_index=True)
    seen[first] = True
    problems = _ProblemList(path.name)
    problems.add_mask(
        ~seen, "transaction_id", lambda i: "repeats an earlier transaction_id of the same bank"
    )
    problems.raise_if_any()


# ----------------------------------------------------------------------------------------- writing


def write_log(table: pa.Table, path: str | Path) -> Path:
    """Write a transactions or labels table as Parquet, CSV or JSONL (by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".parquet", ".pq"):
        pq.write_table(table, path, compression="zstd")
    elif path.suffix == ".csv":
        pacsv.write_csv(_timestamps_as_text(table), path)
    elif path.suffix in (".jsonl", ".ndjson"):
        with path.open("wb") as fh:
            for row in _timestamps_as_text(table).to_pylist():
                fh.write(orjson.dumps({k: v for k, v in row.items() if v is not None}))
                fh.write(b"\n")
    else:
        raise ValueError(
            f"{path}: unknown log format '{path.suffix}' (use .parquet, .csv or .jsonl)"
        )
    return path


def _timestamps_as_text(table: pa.Table) -> pa.Table:
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            text = pc.strftime(table.column(index), format="%Y-%m-%dT%H:%M:%S")
            text = pc.binary_join_element_wise(text, "Z", "")
            table = table.set_column(index, field.name, text)
    return table


def timestamps_ms(table: pa.Table, column: str) -> np.ndarray:
    """A timestamp column as int64 epoch milliseconds (numpy), for the feature engine."""
    return table.column(column).cast(TIMESTAMP).cast(pa.int64()).to_numpy()
