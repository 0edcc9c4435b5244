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
  digits, all starting with 1 until 2033) would otherwise pass Luhn one time in ten.

:func:`mask_card_numbers` (dead letters, anything copied from a bank's bad input) is deliberately
broader: every maximal 13-19 digit run or grouped number that passes Luhn is masked, whatever
surrounds it — a false positive there only hides a few digits of an already rejected message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scoring.records import luhn_valid

_RUN = re.compile(rb"[0-9]{13,}")
_GROUPED = re.compile(
    rb"[0-9]{4}(?P<sep>[ -])(?:[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{1,3})?"
    rb"|[0-9]{6}(?P=sep)[0-9]{5})"
)
_NETWORK_FIRST_DIGITS = b"23456"


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


def _candidates(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, digits) of every maximal run of 13-19 digits and every grouped number, Luhn
    valid; a grouped number must not continue into more digits on either side."""
    for match in _RUN.finditer(data):
        digits = match.group()
        if len(digits) <= 19 and luhn_valid(digits.decode("ascii")):
            yield match.start(), match.end(), digits
    for match in _GROUPED.finditer(data):
        start, end = match.start(), match.end()
        if start > 0 and 0x30 <= data[start - 1] <= 0x39:
            continue
        if end < len(data) and 0x30 <= data[end] <= 0x39:
            continue
        digits = _digits(match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits.decode("ascii")):
            yield start, end, digits


def find_card_numbers(data: bytes) -> list[CardNumberHit]:
    """Card numbers written out in ``data`` (the scanner's rules, module docstring), in order."""
    hits = []
    for start, end, digits in _candidates(data):
        if digits[0] not in _NETWORK_FIRST_DIGITS:
            continue
        if _word_byte(data, start - 1) or _word_byte(data, end):
            continue
        if start >= 2 and data[start - 1] == 0x2E and 0x30 <= data[start - 2] <= 0x39:
            continue  # the fractional part of a decimal number
        hits.append(CardNumberHit(start, end, _mask(digits)))
    return sorted(hits, key=lambda hit: hit.start)


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


def scan_files(*roots: Path, chunk: int = 1 << 22) -> tuple[list[FoundIn], int]:
    """Card numbers in every regular file under ``roots`` (recursively; symlinks not followed),
    and how many files were read. Files are read in overlapping chunks, so a number across a
    chunk boundary is still found."""
    found: list[FoundIn] = []
    files = 0
    overlap = 64
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
                offset, tail = 0, b""
                while block := handle.read(chunk):
                    data = tail + block
                    base = offset - len(tail)
                    for hit in find_card_numbers(data):
                        # the overlap was scanned with the previous block unless it ends there
                        if hit.start >= len(tail) or hit.end > len(tail):
                            at = CardNumberHit(base + hit.start, base + hit.end, hit.masked)
                            found.append(FoundIn(str(path), at))
                    offset += len(block)
                    tail = data[-overlap:]
    return _unique(found), files


def _unique(found: list[FoundIn]) -> list[FoundIn]:
    seen: set[tuple[str, int]] = set()
    out = []
    for item in found:
        key = (item.where, item.hit.start)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
