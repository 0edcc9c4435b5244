"""stream/card_scan.py scans a consumed batch as one text (parts joined by line breaks): it must
find exactly what scanning each key, value and header on its own finds (the broker side is
tests/security/test_card_data_stack.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from scoring.card_data import find_card_numbers
from stream.card_scan import _scan_batch


@dataclass
class Message:
    """The part of confluent_kafka.Message the scan reads."""

    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    _offset: int = 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers or None

    def topic(self) -> str:
        return "p.transactions"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


# Pieces that put the scanner's boundary rules to work at the edges of a part: card numbers plain
# and grouped, digits, separators, a decimal point, letters, line breaks.
PIECES = [b"4111111111111111", b"4111 1111 1111 1111", b"378282246310005", b"12", b"7", b" ",
          b"-", b".", b"0.", b"x", b"_", b"\n", b'"', b"4111", b"1111 "]  # fmt: skip
part = st.one_of(st.none(), st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join))
message = st.builds(
    Message, part, part, st.lists(st.tuples(st.sampled_from(["h", "x-id"]), part), max_size=2)
)


def one_by_one(batch: list[Message]) -> list[tuple[str, int, str]]:
    out = []
    for m in batch:
        parts = [("key", m.key()), ("value", m.value())]
        parts += [(f"header {k}", v) for k, v in m._headers]
        for name, data in parts:
            hits = find_card_numbers(data or b"")
            out += [(f"0/{m.offset()} {name}", h.start, h.masked) for h in hits]
    return sorted(out)


@given(st.lists(message, max_size=8))
@settings(max_examples=400)
# Joined by a space, the first would be "12 4111 1111 1111 1111" (a list of numbers); joined by
# nothing, the second "0.4111111111111111" (a decimal): neither is a card number any more.
@example([Message(b"k", b"n 12"), Message(b"4111 1111 1111 1111", b"v")])
@example([Message(b"k", b"0."), Message(b"4111111111111111", None)])
def test_a_batch_finds_what_part_by_part_scanning_finds(batch: list[Message]) -> None:
    for i, m in enumerate(batch):
        m._offset = i
    found = [(f.where.split("/", 1)[1], f.hit.start, f.hit.masked) for f in _scan_batch(batch)]
    assert sorted(found) == one_by_one(batch)


def test_a_clean_batch_is_one_scan_and_a_hit_is_placed() -> None:
    clean = [Message(b"tok_k1_abc", b'{"amount": 12.5, "ts": 1767571200000}') for _ in range(3)]
    assert _scan_batch(clean) == []
    dirty = [*clean, Message(b"k", b'{"card_id": "4111111111111111"}', [], 3)]
    [hit] = _scan_batch(dirty)
    assert (hit.where, hit.hit.start, hit.hit.masked) == (
        "p.transactions/0/3 value",
        13,
        "4111********1111",
    )
