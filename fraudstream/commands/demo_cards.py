"""The demo's card numbers: a synthetic card number (PAN) per simulated card of the API bank, and
that bank's traffic tokenized with the run's key, so that ``up``/``demo`` exercise tokenization end
to end (issue 9; docs/up.md, "Card numbers").

* The simulator's cards have opaque ids (``card_000123``). For the API bank, each gets a
  deterministic, Luhn-valid card number of a real network's shape, derived from its id. The numbers
  exist only in the memory of the ``up``/``demo`` process; nothing writes them anywhere.
* The bank's transactions get ``card_id = tokenize(card number)`` under the run's key before
  anything else sees them (the data files, the first model's training, the history replay into
  Kafka): a bank producing to Kafka tokenizes with the same key as the API (docs/api.md). Its
  live transactions then go to ``POST /v1/transactions`` with the raw number in ``card_number``;
  the API replaces it by the same token, so a card's live traffic continues its history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from scoring.records import luhn_valid

if TYPE_CHECKING:
    import pyarrow as pa

    from scoring.tokenize import CardTokenizer

# (first digits, length): Visa 16/13/19, Mastercard 5- and 2-series, Amex 15, Discover, JCB,
# Diners 14, UnionPay 19. All start with 2-6, the card networks' major industry identifiers, which
# the scanner requires (scoring/card_data.py): a number it could not see would prove nothing.
NETWORKS: tuple[tuple[str, int], ...] = (
    ("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16),
    ("3530", 16), ("36", 14), ("62", 19),
)  # fmt: skip
_DOMAIN = b"fraudstream/demo-card-number/v1\x00"


def with_check_digit(body: str) -> str:
    """``body`` followed by the digit that makes it pass the Luhn check."""
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def synthetic_card_number(card_id: str, attempt: int = 0) -> str:
    """The card number of a simulated card: a network's prefix and length, digits from a hash of
    the id (``attempt`` > 0 only to step past a collision), a valid check digit."""
    digest = hashlib.sha256(_DOMAIN + f"{attempt}\x00{card_id}".encode()).digest()
    prefix, length = NETWORKS[digest[0] % len(NETWORKS)]
    digits = str(int.from_bytes(digest[1:], "big"))  # ~75 digits; the last ones are uniform
    return with_check_digit(prefix + digits[len(digits) - (length - len(prefix) - 1) :])


def card_numbers_for(card_ids: Sequence[str]) -> dict[str, str]:
    """A distinct synthetic card number per card id (a collision, never seen at demo sizes, moves
    the later card to its next attempt)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for card_id in sorted(set(card_ids)):
        attempt = 0
        number = synthetic_card_number(card_id)
        while number in taken:
            attempt += 1
            number = synthetic_card_number(card_id, attempt)
        out[card_id] = number
        taken.add(number)
    return out


def tokenize_bank_cards(
    transactions: pa.Table, bank: str, tokenizer: CardTokenizer
) -> tuple[pa.Table, dict[str, str]]:
    """``transactions`` with ``bank``'s card ids replaced by the tokens of their synthetic card
    numbers, and the card number of each such token (for the API client). Other banks' rows are
    unchanged."""
    import pyarrow as pa

    cards = transactions["card_id"].to_pylist()
    banks = transactions["bank_id"].to_pylist()
    numbers = card_numbers_for([c for c, b in zip(cards, banks, strict=True) if b == bank])
    token_of = {card: tokenizer.tokenize(number) for card, number in numbers.items()}
    column = pa.array(
        [token_of[c] if b == bank else c for c, b in zip(cards, banks, strict=True)], pa.string()
    )
    index = transactions.column_names.index("card_id")
    field = transactions.schema.field("card_id")
    table = transactions.set_column(index, field, column)
    return table, {token_of[card]: number for card, number in numbers.items()}
