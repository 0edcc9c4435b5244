"""``TxBatch``: transactions under construction, as parallel numpy arrays.

Stages hand these around instead of Arrow tables: integer codes (card, merchant, terminal,
channel) stay cheap to sample, sort and join; strings are only made once, in ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

GENUINE = -1  # fraud_type code of a genuine transaction (typology codes are 0..n-1)


@dataclass
class TxBatch:
    card: np.ndarray  # int64 card index
    ts: np.ndarray  # int64 epoch milliseconds (UTC)
    amount_eur: np.ndarray  # float64; converted to the merchant's currency at the end
    merchant: np.ndarray  # int64 merchant index
    terminal: np.ndarray  # int64 terminal index
    channel: np.ndarray  # int8, catalog.POS/ECOM/ATM/MOTO
    fraud_type: np.ndarray  # int8, GENUINE or the typology code
    incident: np.ndarray  # int64, fraud incident (one card, one attack); -1 when genuine

    def __len__(self) -> int:
        return int(self.card.size)

    def take(self, index: np.ndarray) -> TxBatch:
        return TxBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def empty() -> TxBatch:
        return TxBatch(
            card=np.zeros(0, np.int64),
            ts=np.zeros(0, np.int64),
            amount_eur=np.zeros(0, np.float64),
            merchant=np.zeros(0, np.int64),
            terminal=np.zeros(0, np.int64),
            channel=np.zeros(0, np.int8),
            fraud_type=np.zeros(0, np.int8),
            incident=np.zeros(0, np.int64),
        )

    @staticmethod
    def concat(batches: list[TxBatch]) -> TxBatch:
        if not batches:
            return TxBatch.empty()
        return TxBatch(
            **{
                f.name: np.concatenate([getattr(b, f.name) for b in batches])
                for f in fields(TxBatch)
            }
        )
