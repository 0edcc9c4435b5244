"""BatchScorer: features -> model -> policy -> Decision records with reasons and cost."""

from __future__ import annotations

import json
from typing import ClassVar

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from scoring.decision import DecisionPolicy, policy_from
from scoring.features import FEATURE_NAMES, FeatureEngine
from scoring.logs import TIMESTAMP
from scoring.pipeline import BatchScorer
from scoring.records import Decision
from scoring.settings import Settings


class BoosterModel:
    """A model version backed by LightGBM itself (the compiled scorer's oracle)."""

    version = "v-test"
    feature_names: ClassVar[list[str]] = list(FEATURE_NAMES)

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        X = rng.normal(size=(3000, len(FEATURE_NAMES)))
        X[:, 0] = rng.lognormal(3, 1.5, size=3000)  # feature 0 is the amount
        y = (X[:, 0] > 500).astype(int)
        self.booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                                 lgb.Dataset(X, y), num_boost_round=10)  # fmt: skip

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X)


def _batch() -> pa.Table:
    return pa.table(
        {
            "transaction_id": ["t1", "t2", "t3"],
            "card_id": ["c1", "c2", "c1"],
            "bank_id": ["b1", "b1", None],
            "timestamp": pa.array([1_000, 2_000, 3_000], pa.int64()).cast(TIMESTAMP),
            "amount": [20.0, 900.0, 950.0],
        }
    )


def test_records_follow_the_decision_contract() -> None:
    scorer = BatchScorer(BoosterModel(), DecisionPolicy(), engine=FeatureEngine(),
                         cpu_second_usd=0.01)  # fmt: skip
    batch = scorer.score(_batch())
    records = batch.records(latency_ms=np.array([1.0, 2.0, 3.0]))
    decisions = [Decision.model_validate(r) for r in records]  # the contract validates them
    assert [d.transaction_id for d in decisions] == ["t1", "t2", "t3"]
    assert decisions[0].action == "approve" and decisions[0].reasons == []
    flagged = [d for d in decisions if d.action != "approve"]
    assert flagged, "large amounts should be flagged by this model"
    for d in flagged:
        assert d.reasons and d.reasons[0].feature == "amount"
    assert all(d.cost.compute_usd > 0 for d in decisions)
    assert decisions[2].bank_id is None and decisions[1].latency_ms == 2.0
    json.dumps(records)  # serialisable as is


def test_model_swap_takes_effect_on_the_next_batch() -> None:
    scorer = BatchScorer(BoosterModel(), engine=FeatureEngine())
    other = BoosterModel()
    other.version = "v-next"
    assert scorer.score(_batch()).model_version == "v-test"
    scorer.swap_model(other)
    assert scorer.score(_batch()).model_version == "v-next"


def test_policy_from_settings_applies_bank_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_SCORING__REVIEW_COST", "7")
    monkeypatch.setenv(
        "FRAUD_SCORING__BANKS", '{"b1": {"block_cards": ["c9"], "friction_share": 0}}'
    )
    policy = policy_from(Settings())
    assert policy.default.review_cost == 7
    assert policy.for_bank("b1").review_cost == 7  # inherited
    assert policy.for_bank("b1").friction_share == 0
    assert policy.for_bank("b1").block_cards == {"c9"}
    assert policy.for_bank("other") is policy.default


def test_approvals_can_go_out_before_the_flagged_rows_are_explained() -> None:
    """What the stream does: decide without reasons, send the approvals, then explain the review
    and decline rows. Same decisions as one pass; the explanation's CPU is charged to the rows it
    explained."""
    features = FeatureEngine().process(_batch())
    one_pass = BatchScorer(BoosterModel(), DecisionPolicy(), cpu_second_usd=1.0)
    whole = one_pass.decide(_batch(), features)
    scorer = BatchScorer(BoosterModel(), DecisionPolicy(), cpu_second_usd=1.0)
    scored = scorer.decide(_batch(), features, explain=False)
    assert scored.reasons == [[], [], []] and "reasons" not in scored.stage_seconds
    flagged = scorer.explain_flagged(scored)
    rows = np.flatnonzero(whole.decisions.action_names() != "approve")
    assert rows.size and flagged.transactions.num_rows == rows.size
    assert flagged.transactions.column("transaction_id").to_pylist() == [
        ["t1", "t2", "t3"][i] for i in rows
    ]
    assert flagged.reasons == [whole.reasons[i] for i in rows]
    assert np.array_equal(flagged.scores, whole.scores[rows])
    assert list(flagged.decisions.action_names()) == list(whole.decisions.action_names()[rows])
    assert flagged.stage_seconds["reasons"] > 0
    # the flagged rows' share of the batch, plus their explanation
    assert flagged.cpu_seconds > scored.cpu_seconds * rows.size / 3
    assert flagged.compute_usd_per_transaction > scored.compute_usd_per_transaction
    approvals = scored.take(np.flatnonzero(scored.decisions.action_names() == "approve"))
    assert approvals.compute_usd_per_transaction == scored.compute_usd_per_transaction
    assert approvals.reasons == [[] for _ in range(approvals.transactions.num_rows)]


def test_a_batch_is_explained_with_the_model_that_scored_it() -> None:
    """The stream explains on a thread of its own while the loop goes on, so a model may be
    swapped in between scoring and explaining: the explanation uses the scoring model, and a
    mismatched one is refused."""
    features = FeatureEngine().process(_batch())
    scoring_model = BoosterModel()
    scorer = BatchScorer(scoring_model, DecisionPolicy(), cpu_second_usd=1.0)
    whole = scorer.decide(_batch(), features)
    scored = scorer.decide(_batch(), features, explain=False)
    newer = BoosterModel()
    newer.version = "v-newer"
    scorer.swap_model(newer)
    with pytest.raises(ValueError, match="v-test explained with v-newer"):
        scorer.explain_flagged(scored)
    flagged = scorer.explain_flagged(scored, scoring_model)
    rows = np.flatnonzero(whole.decisions.action_names() != "approve")
    assert flagged.reasons == [whole.reasons[i] for i in rows]
