"""The stream agent's batch function: bad messages become dead letters, good ones decisions."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa

from scoring.features import FEATURE_NAMES, FeatureEngine
from scoring.logs import TIMESTAMP
from scoring.messages import ERROR_HEADER, process_transactions
from scoring.pipeline import BatchScorer
from scoring.records import Decision
from scoring.wire import encode_transactions


class ConstantModel:
    version = "v-const"
    feature_names = list(FEATURE_NAMES)  # noqa: RUF012
    booster = None

    def score_many(self, X):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.full(len(X), 0.001)


def test_bad_messages_become_dead_letters_and_the_batch_goes_on() -> None:
    good = encode_transactions(
        pa.table(
            {
                "transaction_id": ["t1", "t2"],
                "card_id": ["c1", "c2"],
                "timestamp": pa.array([1_700_000_000_000, 1_700_000_001_000]).cast(TIMESTAMP),
                "amount": [10.0, 20.0],
            }
        )
    )
    values = [good[0], b"{oops", b'{"transaction_id": "t9", "card_id": "4111111111111111", '
              b'"timestamp": 1, "amount": 1}', good[1]]  # fmt: skip
    keys = [b"c1", b"x", b"y", b"c2"]
    scorer = BatchScorer(ConstantModel(), engine=FeatureEngine())
    out = process_transactions(scorer, keys, values, arrived_ms=[0, 0, 0, 0])

    assert [r.key for r in out.dead_letters] == [b"x", b"y"]
    assert out.dead_letters[0].value == b"{oops"  # original bytes kept for replay
    reasons = [dict(r.headers)[ERROR_HEADER].decode() for r in out.dead_letters]
    assert reasons[0].startswith("not JSON") and "card_id" in reasons[1]
    assert "4111111111111111" not in reasons[1]

    decisions = [Decision.model_validate_json(r.value) for r in out.decisions]
    assert [d.transaction_id for d in decisions] == ["t1", "t2"]
    assert all(d.action == "approve" and d.model_version == "v-const" for d in decisions)
    assert all(d.latency_ms > 0 for d in decisions)

    logged = [orjson.loads(r.value) for r in out.feature_log]
    assert [row["transaction_id"] for row in logged] == ["t1", "t2"]
    assert len(logged[0]["features"]) == len(FEATURE_NAMES)
    assert logged[0]["features"][FEATURE_NAMES.index("card_seconds_since_prev")] is None  # NaN
    assert math.isclose(logged[1]["features"][0], 20.0)


def test_a_batch_of_only_bad_messages_scores_nothing() -> None:
    scorer = BatchScorer(ConstantModel(), engine=FeatureEngine())
    out = process_transactions(scorer, [None], [b"[]"])
    assert out.decisions == [] and out.scored is None and len(out.dead_letters) == 1
