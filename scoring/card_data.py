"""Finding and masking card numbers (PANs) in bytes: the card-data scanner and the DLQ redactor.

What counts as a card number here (docs/security.md, "What the scanner looks for"):

* a **maximal run** of 13 to 19 ASCII digits (a run of 20 digits is not a card number, and no
  13-digit window inside it is tested: every digit string of 20+ digits would otherwise "contain"
  a Luhn-valid window with near certainty);
* or digits in the printed groups of a card: ``4-4-4-4`` (up to ``4-4-4-4-3``) or Amex ``4-6-5``,
  separated by one space or one dash each, the same separator throughout;
* that passes the Luhn check.

:func:`find_card_numbers` (the scanner) adds three rules that keep it quiet on machine output while
still catching anything a human or a program would write as a card number:

* the run must not touch a letter, digit or underscore on either side (a digit run inside a hex
  digest, a base32 token or an identifier is not a card number written out);
* it must not be the fractional part of a decimal (``0.4111111111111111``: scores, features);
* its first digit is 2-6: the ISO/IEC 7812 major industry identifiers of the card networks
  (2 Mastercard 2-series; 3 Amex, JCB, Diners; 4 Visa; 5 Mastercard, Maestro; 6 Discover,
  UnionPay, Maestro). Epoch timestamps in milliseconds, microseconds and nanoseconds (13, 16 and 19
  digits, all starting with 1 until 2033) would otherwise pass Luhn one time in ten;
* a grouped number must not be a stretch of a longer list of numbers joined by the same separator
  (``... 5661 2345 1531 1853 1411 464``: printed arrays, counts).

:func:`scan_files` knows two of the formats it meets (module-level notes at ``_scan_parquet`` and
``_LIGHTGBM_MODEL``): a Parquet file is scanned value by value, not as bytes, and a LightGBM text
model without the grouped rule.

:func:`mask_card_numbers` (dead letters, anything copied from a bank's bad input) is deliberately
broader: every maximal 13-19 digit run or grouped number that passes Luhn is masked, whatever
surrounds it — a false positive there only hides a few digits of an already rejected message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scoring.records import luhn_valid

_RUN = re.compile(rb"[0-9]{13,}")
_GROUPED = re.compile(
    rb"[0-9]{4}(?P<sep>[ -])(?:[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{1,3})?"
    rb"|[0-9]{6}(?P=sep)[0-9]{5})"
)
_NETWORK_FIRST_DIGITS = b"23456"
# The scanner's plain runs: 13-19 digits starting with a network's first digit, not glued to a
# letter, digit or underscore on either side (so also maximal: a 20-digit run has no match).
_SCANNER_RUN = re.compile(rb"(?<![0-9A-Za-z_])[2-6][0-9]{12,18}(?![0-9A-Za-z_])")


@dataclass(frozen=True)
class CardNumberHit:
    """One card number found: where, and a masked form (first 4 and last 4 digits) to report."""

    start: int
    end: int
    masked: str


def _digits(raw: bytes) -> bytes:
    return raw.replace(b" ", b"").replace(b"-", b"")


def _mask(digits: bytes) -> str:
    text = digits.decode("ascii")
    return f"{text[:4]}{'*' * (len(text) - 8)}{text[-4:]}"


def _word_byte(data: bytes, index: int) -> bool:
    if index < 0 or index >= len(data):
        return False
    byte = data[index]
    return byte == 0x5F or 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _candidates(data: bytes, *, grouped: bool = True) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, digits) of every maximal run of 13-19 digits and (with ``grouped``) every
    grouped number, Luhn valid; a grouped number must not continue into more digits on either
    side."""
    for match in _RUN.finditer(data):
        digits = match.group()
        if len(digits) <= 19 and luhn_valid(digits.decode("ascii")):
            yield match.start(), match.end(), digits
    if grouped:
        yield from _grouped_candidates(data)


def _grouped_candidates(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    for match in _GROUPED.finditer(data):
        start, end = match.start(), match.end()
        if start > 0 and 0x30 <= data[start - 1] <= 0x39:
            continue
        if end < len(data) and 0x30 <= data[end] <= 0x39:
            continue
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits.decode("ascii")):
            yield start, end, digits


def _digit(data: bytes, index: int) -> bool:
    return 0 <= index < len(data) and 0x30 <= data[index] <= 0x39


def _in_a_list_of_numbers(data: bytes, start: int, end: int) -> bool:
    """Whether the grouped number at ``start:end`` is a stretch of a longer list of numbers joined
    by its separator (``... 5661 2345 1531 1853 1411 464``: LightGBM's model dumps, counts)."""
    sep = data[start + 4]
    return (start >= 1 and data[start - 1] == sep and _digit(data, start - 2)) or (
        end < len(data) and data[end] == sep and _digit(data, end + 1)
    )


def find_card_numbers(data: bytes, *, grouped: bool = True) -> list[CardNumberHit]:
    """Card numbers written out in ``data`` (the scanner's rules, module docstring), in order;
    ``grouped=False`` leaves out numbers printed in groups (``4111 1111 1111 1111``)."""
    hits = []
    # Plain runs: the first digit and the word boundaries are in the pattern, so the Luhn check
    # (Python, the cost of a scan) runs only on what could be a card number — not on the 13-digit
    # epoch milliseconds that every record of every topic carries several of.
    for match in _SCANNER_RUN.finditer(data):
        start, end = match.span()
        if not _fraction(data, start) and luhn_valid(match.group().decode("ascii")):
            hits.append(CardNumberHit(start, end, _mask(match.group())))
    for start, end, digits in _grouped_candidates(data) if grouped else ():
        if digits[0] not in _NETWORK_FIRST_DIGITS:
            continue
        if _word_byte(data, start - 1) or _word_byte(data, end) or _fraction(data, start):
            continue
        if _in_a_list_of_numbers(data, start, end):
            continue
        hits.append(CardNumberHit(start, end, _mask(digits)))
    return sorted(hits, key=lambda hit: hit.start)


def _fraction(data: bytes, start: int) -> bool:
    """Whether a number at ``start`` is the fractional part of a decimal number."""
    return start >= 2 and data[start - 1] == 0x2E and 0x30 <= data[start - 2] <= 0x39


def mask_card_numbers(data: bytes) -> tuple[bytes, int]:
    """``data`` with every Luhn-valid 13-19 digit number (plain or grouped) replaced by ``*``
    (same length, separators kept), and how many were masked."""
    spans = sorted({(start, end) for start, end, _digits in _candidates(data)})
    if not spans:
        return data, 0
    out = bytearray(data)
    for start, end in spans:
        for i in range(start, end):
            if 0x30 <= out[i] <= 0x39:
                out[i] = 0x2A
    return bytes(out), len(spans)


@dataclass(frozen=True)
class FoundIn:
    """A card number found in a file (``where`` = path) or a record (``where`` = topic/p/offset
    and the part: key, value or a header's name)."""

    where: str
    hit: CardNumberHit

    def __str__(self) -> str:
        return f"{self.where} @{self.hit.start}: {self.hit.masked}"


# LightGBM's text model (the registry's model.txt) begins so. Its trees are lines of numbers joined
# by single spaces (``leaf_count=2345 1531 1853 1411``): a tree with four or five leaves prints
# exactly the shape of a grouped card number, and one such line in ten passes Luhn. Nothing of a
# transaction but its features reaches a model, so only the plain-run rule applies there.
_LIGHTGBM_MODEL = b"tree\nversion="


def scan_files(*roots: Path, chunk: int = 1 << 22) -> tuple[list[FoundIn], int]:
    """Card numbers in every regular file under ``roots`` (recursively; symlinks not followed),
    and how many files were read. Files are read in overlapping chunks, so a number across a
    chunk boundary is still found; Parquet files are scanned by value (:func:`_scan_parquet`)."""
    found: list[FoundIn] = []
    files = 0
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            if path.is_symlink():
                continue
            try:
                handle = path.open("rb")
            except OSError:
                continue  # vanished (a checkpoint being replaced) or unreadable
            files += 1
            with handle:
                in_values = _scan_parquet(path) if path.suffix == ".parquet" else None
                found += in_values if in_values is not None else _scan_bytes(path, handle, chunk)
    return _unique(found), files


def _scan_bytes(path: Path, handle: BinaryIO, chunk: int) -> list[FoundIn]:
    found = []
    overlap = 64
    offset, tail = 0, b""
    grouped = True
    while block := handle.read(chunk):
        if offset == 0:
            grouped = not block.startswith(_LIGHTGBM_MODEL)
        data = tail + block
        base = offset - len(tail)
        for hit in find_card_numbers(data, grouped=grouped):
            # the overlap was scanned with the previous block unless it ends there
            if hit.start >= len(tail) or hit.end > len(tail):
                at = CardNumberHit(base + hit.start, base + hit.end, hit.masked)
                found.append(FoundIn(str(path), at))
        offset += len(block)
        tail = data[-overlap:]
    return found


def _scan_parquet(path: Path) -> list[FoundIn] | None:
    """Every value of every column, and the file's key-value metadata; None if the file does not
    read as Parquet (it is then scanned as bytes).

    Why not the bytes: Parquet pages are compressed (zstd, snappy), so a card number stored in one
    is invisible to a byte scan; and a compressor's literals put unrelated short digit strings side
    by side — in a demo's transactions file, zstd's literal section held four merchant category
    codes end to end, a 19-digit, Luhn-valid, Visa-shaped run. Values are scanned one per line, so
    neither can happen. Hits say ``<path> column <name> row <n>``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        found = []
        for key, value in (parquet.metadata.metadata or {}).items():
            for hit in find_card_numbers(key + b"\n" + value):
                found.append(FoundIn(f"{path} metadata", hit))
        row = 0
        for batch in parquet.iter_batches(batch_size=1 << 16):
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                try:
                    text = pc.cast(column, pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # nested: its JSON-ish text
                    text = pa.array([str(v) for v in column.to_pylist()], pa.string())
                values = pc.fill_null(text, "")
                one_list = pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
                blob = pc.binary_join(one_list, "\n")[0].as_py().encode()
                for hit in find_card_numbers(blob):
                    line = blob.rfind(b"\n", 0, hit.start) + 1  # offsets within the value
                    at = CardNumberHit(hit.start - line, hit.end - line, hit.masked)
                    index = row + blob.count(b"\n", 0, line)
                    found.append(FoundIn(f"{path} column {name} row {index}", at))
            row += batch.num_rows
    except (OSError, pa.ArrowException):
        return None
    return found


def _unique(found: list[FoundIn]) -> list[FoundIn]:
    seen: set[tuple[str, int]] = set()
    out = []
    for item in found:
        key = (item.where, item.hit.start)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
