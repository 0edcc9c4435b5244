"""A small synthetic file in the layout of the Kaggle Sparkov dataset (fraudTrain.csv), built from
the project's simulator so that it has fraud worth learning — with Luhn-valid card numbers in
``cc_num`` and personal columns, as the real file has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from scoring.records import luhn_valid
from training.simulator import SimulationConfig, simulate

COLUMNS = ("", "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "first", "last",
           "gender", "street", "city", "state", "zip", "lat", "long", "city_pop", "job", "dob",
           "trans_num", "unix_time", "merch_lat", "merch_long", "is_fraud")  # fmt: skip
POS_CATEGORY = {"5411": "grocery_pos", "5812": "food_dining", "5541": "gas_transport"}


def card_number(index: int) -> str:
    """A Luhn-valid 16-digit number; every 7th card a 12-digit one (the real file has some)."""
    body = f"4{index:014d}" if index % 7 else f"6304{index:07d}"
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


def write_sparkov_csv(path: Path, *, cards: int, days: int, seed: int) -> dict[str, object]:
    transactions, labels = simulate(SimulationConfig(cards=cards, days=days, seed=seed))
    n = transactions.num_rows
    frauds = labels.filter(pc.equal(labels["is_fraud"], True))["transaction_id"]
    is_fraud = pc.is_in(transactions["transaction_id"], value_set=frauds).to_numpy(
        zero_copy_only=False
    )
    card_codes = transactions["card_id"].combine_chunks().dictionary_encode()
    numbers = [card_number(i + 1) for i in range(len(card_codes.dictionary))]
    cc_num = [numbers[i] for i in card_codes.indices.to_pylist()]
    channel = transactions["channel"].to_pylist()
    mcc = transactions["mcc"].to_pylist()
    category = [
        "shopping_net" if ch == "ecom" else POS_CATEGORY.get(m or "", "misc_pos")
        for ch, m in zip(channel, mcc, strict=True)
    ]
    ts = transactions["timestamp"].to_pylist()
    table = pa.table(
        {
            "": pa.array(range(n)),
            "trans_date_trans_time": [t.strftime("%Y-%m-%d %H:%M:%S") for t in ts],
            "cc_num": cc_num,
            "merchant": pc.binary_join_element_wise("fraud_", transactions["merchant_id"], ""),
            "category": category,
            "amt": transactions["amount"],
            "first": ["Jennifer"] * n, "last": ["Banks"] * n, "gender": ["F"] * n,
            "street": ["561 Perry Cove"] * n, "city": ["Moravian Falls"] * n, "state": ["NC"] * n,
            "zip": ["28654"] * n, "lat": [36.0788] * n, "long": [-81.1781] * n,
            "city_pop": [3495] * n, "job": ["Psychologist, counselling"] * n,
            "dob": ["1988-03-09"] * n,
            "trans_num": [f"{i:032x}" for i in range(n)],
            "unix_time": [int(t.timestamp()) - 220_000_000 for t in ts],  # offset, as the real one
            "merch_lat": [36.011293] * n, "merch_long": [-82.048315] * n,
            "is_fraud": np.asarray(is_fraud, dtype=np.int64),
        }
    )  # fmt: skip
    assert tuple(table.column_names) == COLUMNS
    pacsv.write_csv(table, path)
    return {"rows": n, "frauds": int(np.sum(is_fraud)), "card_numbers": sorted(set(numbers))}
