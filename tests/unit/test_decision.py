"""Cost-minimising decisions and rules."""

import numpy as np
import pyarrow as pa

from scoring.decision import APPROVE, DECLINE, REVIEW, BankPolicy, DecisionPolicy


def _batch(amounts: list[float], **columns: list) -> pa.Table:
    n = len(amounts)
    return pa.table({"amount": amounts, "card_id": columns.get("card_id", ["c"] * n),
                     "bank_id": columns.get("bank_id", [None] * n),
                     "merchant_id": columns.get("merchant_id", [None] * n),
                     "country": columns.get("country", [None] * n)})  # fmt: skip


def test_action_minimises_expected_cost() -> None:
    policy = DecisionPolicy(
        default=BankPolicy(review_cost=5, review_miss_rate=0.1, friction_share=0.02)
    )
    scores = np.array([0.001, 0.2, 0.99, 0.5])
    amounts = [100.0, 100.0, 100.0, 10.0]
    d = policy.decide_many(_batch(amounts), scores)
    # p=0.001: approve costs 0.1, review 5.01, decline 1.998 -> approve
    # p=0.2:   approve 20, review 7, decline 1.6 -> decline
    # p=0.99:  decline costs 0.02 -> decline
    # p=0.5, A=10: approve 5, review 5.5, decline 0.1 -> decline
    assert d.action.tolist() == [APPROVE, DECLINE, DECLINE, DECLINE]
    assert d.expected_fraud_loss[0] == 0.001 * 100
    assert d.friction_cost[1] == (1 - 0.2) * 0.02 * 100
    assert d.rule == [None] * 4


def test_review_wins_when_friction_is_expensive() -> None:
    policy = DecisionPolicy(
        default=BankPolicy(review_cost=2, review_miss_rate=0.0, friction_share=0.5)
    )
    d = policy.decide_many(_batch([100.0]), np.array([0.3]))
    # approve 30, review 2, decline 35 -> review
    assert d.action.tolist() == [REVIEW]
    assert d.review_cost.tolist() == [2.0]


def test_banks_have_their_own_costs() -> None:
    policy = DecisionPolicy(banks={"strict": BankPolicy(friction_share=0.0)})
    d = policy.decide_many(
        _batch([50.0, 50.0], bank_id=["strict", "other"]), np.array([0.01, 0.01])
    )
    assert d.action.tolist() == [DECLINE, APPROVE]


def test_rules_run_before_the_model() -> None:
    bank = BankPolicy(allow_cards={"vip"}, block_cards={"stolen"}, block_merchants={"bad"},
                      block_countries={"XX"}, max_amount=1000)  # fmt: skip
    policy = DecisionPolicy(banks={"b": bank})
    batch = _batch(
        [10.0, 10.0, 10.0, 10.0, 5000.0, 10.0],
        card_id=["vip", "stolen", "c", "c", "c", "c"],
        merchant_id=[None, None, "bad", None, None, None],
        country=[None, None, None, "XX", None, None],
        bank_id=["b"] * 6,
    )
    d = policy.decide_many(batch, np.array([0.99, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert d.rule == ["allow_list:card", "block_list:card", "block_list:merchant",
                      "block_list:country", "hard_limit:amount", None]  # fmt: skip
    assert d.action.tolist() == [APPROVE, DECLINE, DECLINE, DECLINE, DECLINE, APPROVE]
