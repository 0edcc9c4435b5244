"""Feature kernels: one pass over time-ordered events, emitting features before updating state.

``process_events`` is compiled by numba (nopython, no fastmath, so the floating-point order is
fixed and online == offline bit for bit). ``process_events_py`` is its plain-Python twin: the same
source run by the interpreter, which the property tests hold equal to the compiled path and which
``FRAUD_FEATURES_PURE_PYTHON=1`` selects for debugging.

State is struct-of-arrays, one row per slot:

* cards      ``card_f[float64, CARD_F]`` and ``card_i[int64, CARD_I]`` — 34 × 8 + 46 × 8 = 640 bytes
* merchants  ``ent_f[float64, ENT_F]`` and ``ent_i[int64, ENT_I]`` — 20 × 8 + 3 × 8 = 184 bytes
* terminals  same layout as merchants.

A row whose last activity is older than the TTL is reset when next touched, so whether a slot was
physically evicted in between (online) or not (offline) never changes a feature.

Merchant/terminal ("entity") state is bucketed by ``BUCKET_MS``: a transaction at t sees the
entity's events before floor(t / BUCKET_MS) * BUCKET_MS. A stream worker that merges all partitions
takes every event of bucket b before any of bucket b + 1, but within the open bucket it takes
transactions in arrival order, which differs between runs and from the offline replay (sorted by
time). Four rules make the result independent of that order, bit for bit:

* **Exact pending sums.** Each contribution to an entity's pending (open-bucket) values is rounded
  to a multiple of 2**-20 (``_quantized``) before it is added. Sums of such multiples are exact in
  float64 while they stay below 2**33 (~8.6e9), so they do not depend on the order of addition.
  Limit: one entity's pending sums per bucket, i.e. the amounts at one merchant or terminal within
  one second, must stay below ~8.6e9; above that, sums are rounded again and order shows through
  in the last bit (and only there).
* **Late events never move an entity backwards.** An event is added to the bucket
  max(t // BUCKET_MS, pending bucket, committed point // BUCKET_MS), decayed from its real time t to
  that bucket's end, so the pending bucket and ``EI_COMMITTED_AT`` never decrease even when a
  partition delivers an event late. Offline input is sorted, where this is always t's own bucket.
* **Idle entities expire by bucket.** An entity is reset when the start of the event's bucket is
  more than the TTL after its last activity, so all events of one bucket agree on it, whichever
  comes first (a per-millisecond test would let the first arrival decide).
* **Labels take effect at the end of their second** (``engine.label_effective_ms``): the engine
  hands the kernel a label's reported_at moved to the last millisecond of its second, where the
  worker applies it, after all transactions of that second. (Several labels of one card in one
  second then share one time, so their order does not matter either.)
"""

from __future__ import annotations

import math
import os
from typing import Any

import numba
import numpy as np

from scoring.features import catalog as cat

EMPTY = -(2**62)  # "never": an int64 timestamp no real event has

CARD_TAU = np.array([w for _, w in cat.CARD_WINDOWS], dtype=np.float64)
ENT_TAU = np.array([w for _, w in cat.ENTITY_WINDOWS], dtype=np.float64)
LABEL_TAU = np.array([w for _, w in cat.LABEL_WINDOWS], dtype=np.float64)
SHARE_TAU = np.array([w for _, w in cat.SHARE_WINDOWS], dtype=np.float64)
N_CARD_W = len(cat.CARD_WINDOWS)
N_ENT_W = len(cat.ENTITY_WINDOWS)
N_LABEL_W = len(cat.LABEL_WINDOWS)
N_SHARE_W = len(cat.SHARE_WINDOWS)
LABEL_TO_ENT = 1  # LABEL_WINDOWS[w] is ENTITY_WINDOWS[w + LABEL_TO_ENT]
assert cat.ENTITY_WINDOWS[LABEL_TO_ENT:] == cat.LABEL_WINDOWS
assert cat.LABEL_WINDOWS[:N_SHARE_W] == cat.SHARE_WINDOWS
RING = cat.RECENT_AMOUNTS
W_1D, W_7D, W_30D, W_90D = 2, 3, 4, 5  # positions in CARD_WINDOWS
UNUSUAL_RATIO = 3.0  # an amount above 3x the card's 90-day mean counts as unusual
E_7D, E_30D = 2, 3  # positions in ENTITY_WINDOWS

N_MERCHANTS, N_TERMINALS, N_COUNTRIES, N_MCCS = 16, 8, 4, 8

# card_f columns
CF_COUNT = 0
CF_SUM = CF_COUNT + N_CARD_W
CF_SUMSQ_30D = CF_SUM + N_CARD_W
CF_MAX_1D = CF_SUMSQ_30D + 1
CF_MAX_30D = CF_MAX_1D + 1
CF_FRAUD_30D = CF_MAX_30D + 1
CF_RATIO_MAX_7D = CF_FRAUD_30D + 1
CF_UNUSUAL_7D = CF_RATIO_MAX_7D + 1
CF_RING = CF_UNUSUAL_7D + 1
CARD_F = CF_RING + RING

# card_i columns
CI_LAST_TS = 0
CI_TOTAL = 1
CI_FIRST_COUNTRY = 2
CI_CHANNELS = 3
CI_LABEL_AS_OF = 4
CI_LAST_FRAUD_LABEL = 5
CI_MERCHANT_POS = 6
CI_TERMINAL_POS = 7
CI_COUNTRY_POS = 8
CI_MCC_POS = 9
CI_MERCHANTS = 10
CI_TERMINALS = CI_MERCHANTS + N_MERCHANTS
CI_COUNTRIES = CI_TERMINALS + N_TERMINALS
CI_MCCS = CI_COUNTRIES + N_COUNTRIES
CARD_I = CI_MCCS + N_MCCS

# merchant / terminal columns
# Entity state is bucketed (see the module docstring and _entity_transaction): "committed" values
# hold every event of buckets that are over, decayed to COMMITTED_AT; "pending" values hold the open
# bucket's events, each decayed to the bucket's end and quantised to a multiple of 2**-20, so their
# sum is exact and does not depend on the order they arrived in.
EV_COUNT = 0
EV_SUM_7D = EV_COUNT + N_ENT_W
EV_FRAUD = EV_SUM_7D + 1
EV_LABELS = EV_FRAUD + N_LABEL_W
ENT_VALUES = EV_LABELS + N_SHARE_W
EF_COMMITTED = 0
EF_PENDING = ENT_VALUES
ENT_F = 2 * ENT_VALUES
EI_LAST_TS = 0  # last event of any kind (for the TTL)
EI_COMMITTED_AT = 1  # time the committed values are decayed to (a bucket end), or EMPTY
EI_PENDING_BUCKET = 2  # bucket index of the pending values, or EMPTY
ENT_I = 3
ENT_TAUS = np.concatenate([ENT_TAU, ENT_TAU[E_7D : E_7D + 1], LABEL_TAU, SHARE_TAU])

# output columns (must follow catalog.FEATURE_NAMES)
_I = cat.INDEX
O_AMOUNT = _I["amount"]
O_HOUR = _I["hour_of_day"]
O_DOW = _I["day_of_week"]
O_CHANNEL = _I["channel"]
O_CARD_PRESENT = _I["card_present"]
O_MCC = _I["mcc"]
O_CARD_COUNT = _I["card_count_10m"]
O_CARD_SUM = _I["card_amount_sum_10m"]
O_CARD_MEAN_1D = _I["card_amount_mean_1d"]
O_CARD_MAX_1D = _I["card_amount_max_1d"]
O_SINCE_PREV = _I["card_seconds_since_prev"]
O_TOTAL = _I["card_tx_total"]
O_TO_MEAN = _I["amount_to_mean_30d"]
O_TO_MEAN_90D = _I["amount_to_mean_90d"]
O_RATIO_MAX_7D = _I["card_amount_ratio_max_7d"]
O_UNUSUAL_7D = _I["card_unusual_count_7d"]
O_TO_MEDIAN = _I["amount_to_median_recent"]
O_ZSCORE = _I["amount_zscore_30d"]
O_NEW_MERCHANT = _I["card_new_merchant"]
O_NEW_TERMINAL = _I["card_new_terminal"]
O_NEW_COUNTRY = _I["card_new_country"]
O_NEW_CHANNEL = _I["card_new_channel"]
O_NEW_MCC = _I["card_new_mcc"]
O_NOT_FIRST_COUNTRY = _I["card_country_not_first"]
O_MERCHANT = _I["merchant_count_1h"]
O_TERMINAL = _I["terminal_count_1h"]
O_CARD_FRAUD = _I["card_fraud_labels_30d"]
O_SINCE_FRAUD = _I["card_seconds_since_fraud_label"]
ENTITY_BLOCK = N_ENT_W + 1 + 2 * N_LABEL_W + N_SHARE_W  # features per merchant/terminal
assert cat.FEATURE_NAMES[O_TERMINAL] == "terminal_count_1h"
assert O_TERMINAL - O_MERCHANT == ENTITY_BLOCK
assert cat.NUM_FEATURES == O_SINCE_FRAUD + 1

# Merchant/terminal features see events of earlier buckets of this length (see _entity_transaction).
BUCKET_MS = cat.ENTITY_BUCKET_MS

KIND_TRANSACTION = 0
KIND_LABEL = 1
DAY_MS = float(cat.DAY_MS)
HOUR_MS = float(cat.HOUR_MS)


def reset_card(card_f: np.ndarray, card_i: np.ndarray, c: int) -> None:
    card_f[c, :] = 0.0
    card_i[c, :] = 0
    card_i[c, CI_LAST_TS] = EMPTY
    card_i[c, CI_LABEL_AS_OF] = EMPTY
    card_i[c, CI_LAST_FRAUD_LABEL] = EMPTY


def reset_entity(ent_f: np.ndarray, ent_i: np.ndarray, m: int) -> None:
    ent_f[m, :] = 0.0
    ent_i[m, EI_LAST_TS] = EMPTY
    ent_i[m, EI_COMMITTED_AT] = EMPTY
    ent_i[m, EI_PENDING_BUCKET] = EMPTY


def _card_last_activity(card_i: np.ndarray, c: int) -> int:
    return max(card_i[c, CI_LAST_TS], card_i[c, CI_LABEL_AS_OF])


def expire_card(card_f: np.ndarray, card_i: np.ndarray, c: int, t: int, ttl: int) -> None:
    last = _card_last_activity(card_i, c)
    if last != EMPTY and t - last > ttl:
        reset_card(card_f, card_i, c)


def expire_entity(ent_f: np.ndarray, ent_i: np.ndarray, m: int, t: int, ttl: int) -> None:
    """Reset an entity idle for longer than the TTL at the start of t's bucket: every event of a
    bucket takes the same decision, whichever of them arrives first."""
    last = ent_i[m, EI_LAST_TS]
    if last != EMPTY and (t // BUCKET_MS) * BUCKET_MS - last > ttl:
        reset_entity(ent_f, ent_i, m)


def _decayed(value: float, as_of: int, t: int, tau: float) -> float:
    if as_of == EMPTY:
        return 0.0
    return value * math.exp(-max(t - as_of, 0) / tau)


def _in_set(card_i: np.ndarray, c: int, start: int, size: int, value: int) -> bool:
    for j in range(size):  # noqa: SIM110 -- numba cannot compile any() over a generator
        if card_i[c, start + j] == value:
            return True
    return False


def _remember(card_i: np.ndarray, c: int, start: int, size: int, pos_col: int, value: int) -> None:
    """First-in-first-out set of the card's last distinct values (0 marks an empty place)."""
    pos = card_i[c, pos_col]
    card_i[c, start + pos] = value
    card_i[c, pos_col] = (pos + 1) % size


def _novelty(card_i: np.ndarray, c: int, start: int, size: int, pos_col: int, value: int) -> float:
    if value == 0:  # field absent
        return np.nan
    if _in_set(card_i, c, start, size, value):
        return 0.0
    _remember(card_i, c, start, size, pos_col, value)
    return 1.0


def _median_recent(card_f: np.ndarray, c: int, n: int, scratch: np.ndarray) -> float:
    for j in range(n):
        scratch[j] = card_f[c, CF_RING + j]
    # insertion sort: n <= 16, cheaper than a general sort and allocation-free
    for j in range(1, n):
        x = scratch[j]
        k = j - 1
        while k >= 0 and scratch[k] > x:
            scratch[k + 1] = scratch[k]
            k -= 1
        scratch[k + 1] = x
    if n % 2 == 1:
        return scratch[n // 2]
    return 0.5 * (scratch[n // 2 - 1] + scratch[n // 2])


def _card_transaction(
    card_f: np.ndarray,
    card_i: np.ndarray,
    c: int,
    t: int,
    amount: float,
    merchant_hash: int,
    terminal_hash: int,
    country: int,
    channel: int,
    mcc: int,
    scratch: np.ndarray,
    row: np.ndarray,
) -> None:
    last = card_i[c, CI_LAST_TS]
    total = card_i[c, CI_TOTAL]
    dt = 0.0 if last == EMPTY else float(max(t - last, 0))
    for w in range(N_CARD_W):
        d = math.exp(-dt / CARD_TAU[w])
        row[O_CARD_COUNT + w] = card_f[c, CF_COUNT + w] * d
        row[O_CARD_SUM + w] = card_f[c, CF_SUM + w] * d
    for k, w in enumerate((W_1D, W_7D, W_30D, W_90D)):
        count = row[O_CARD_COUNT + w]
        row[O_CARD_MEAN_1D + k] = row[O_CARD_SUM + w] / count if total > 0 else np.nan
    d_1d = math.exp(-dt / CARD_TAU[W_1D])
    d_30d = math.exp(-dt / CARD_TAU[W_30D])
    row[O_CARD_MAX_1D] = card_f[c, CF_MAX_1D] * d_1d
    row[O_CARD_MAX_1D + 1] = card_f[c, CF_MAX_30D] * d_30d
    row[O_SINCE_PREV] = dt / 1000.0 if total > 0 else np.nan
    row[O_TOTAL] = float(total)

    mean_30d = row[O_CARD_MEAN_1D + 2]
    row[O_TO_MEAN] = amount / mean_30d if total > 0 else np.nan
    mean_90d = row[O_CARD_MEAN_1D + 3]
    ratio_90d = amount / mean_90d if total > 0 else np.nan
    row[O_TO_MEAN_90D] = ratio_90d
    d_7d = math.exp(-dt / CARD_TAU[W_7D])
    row[O_RATIO_MAX_7D] = card_f[c, CF_RATIO_MAX_7D] * d_7d
    row[O_UNUSUAL_7D] = card_f[c, CF_UNUSUAL_7D] * d_7d
    n_recent = min(total, RING)
    row[O_TO_MEDIAN] = (
        amount / _median_recent(card_f, c, n_recent, scratch) if n_recent > 0 else np.nan
    )
    if total >= 2:
        count_30d = row[O_CARD_COUNT + W_30D]
        variance = card_f[c, CF_SUMSQ_30D] * d_30d / count_30d - mean_30d * mean_30d
        std = math.sqrt(variance) if variance > 0.0 else 0.0
        row[O_ZSCORE] = (amount - mean_30d) / std if std > 1e-9 else np.nan
    else:
        row[O_ZSCORE] = np.nan

    row[O_NEW_MERCHANT] = _novelty(
        card_i, c, CI_MERCHANTS, N_MERCHANTS, CI_MERCHANT_POS, merchant_hash
    )
    row[O_NEW_TERMINAL] = _novelty(
        card_i, c, CI_TERMINALS, N_TERMINALS, CI_TERMINAL_POS, terminal_hash
    )
    row[O_NEW_COUNTRY] = _novelty(card_i, c, CI_COUNTRIES, N_COUNTRIES, CI_COUNTRY_POS, country)
    row[O_NEW_MCC] = _novelty(card_i, c, CI_MCCS, N_MCCS, CI_MCC_POS, mcc + 1 if mcc >= 0 else 0)
    if channel >= 0:
        bit = 1 << channel
        row[O_NEW_CHANNEL] = 0.0 if card_i[c, CI_CHANNELS] & bit else 1.0
        card_i[c, CI_CHANNELS] |= bit
    else:
        row[O_NEW_CHANNEL] = np.nan
    if country > 0:
        first = card_i[c, CI_FIRST_COUNTRY]
        if first == 0:
            card_i[c, CI_FIRST_COUNTRY] = country
            first = country
        row[O_NOT_FIRST_COUNTRY] = 0.0 if first == country else 1.0
    else:
        row[O_NOT_FIRST_COUNTRY] = np.nan

    row[O_CARD_FRAUD] = _decayed(
        card_f[c, CF_FRAUD_30D], card_i[c, CI_LABEL_AS_OF], t, LABEL_TAU[N_LABEL_W - 1]
    )
    last_fraud = card_i[c, CI_LAST_FRAUD_LABEL]
    row[O_SINCE_FRAUD] = np.nan if last_fraud == EMPTY else max(t - last_fraud, 0) / 1000.0

    # update, after the features were emitted
    for w in range(N_CARD_W):
        d = math.exp(-dt / CARD_TAU[w])
        card_f[c, CF_COUNT + w] = card_f[c, CF_COUNT + w] * d + 1.0
        card_f[c, CF_SUM + w] = card_f[c, CF_SUM + w] * d + amount
    card_f[c, CF_SUMSQ_30D] = card_f[c, CF_SUMSQ_30D] * d_30d + amount * amount
    card_f[c, CF_MAX_1D] = max(card_f[c, CF_MAX_1D] * d_1d, amount)
    card_f[c, CF_MAX_30D] = max(card_f[c, CF_MAX_30D] * d_30d, amount)
    if total > 0:  # a first transaction has no baseline to be unusual against
        card_f[c, CF_RATIO_MAX_7D] = max(card_f[c, CF_RATIO_MAX_7D] * d_7d, ratio_90d)
        card_f[c, CF_UNUSUAL_7D] = card_f[c, CF_UNUSUAL_7D] * d_7d + (
            1.0 if ratio_90d > UNUSUAL_RATIO else 0.0
        )
    card_f[c, CF_RING + total % RING] = amount
    card_i[c, CI_TOTAL] = total + 1
    card_i[c, CI_LAST_TS] = max(t, last)


def _entity_fold(ent_f: np.ndarray, ent_i: np.ndarray, m: int, bucket: int) -> None:
    """Commit the pending bucket once a later bucket starts."""
    pending = ent_i[m, EI_PENDING_BUCKET]
    if pending == EMPTY or pending >= bucket:
        return
    end = (pending + 1) * BUCKET_MS
    committed_at = ent_i[m, EI_COMMITTED_AT]
    for v in range(ENT_VALUES):
        old = _decayed(ent_f[m, EF_COMMITTED + v], committed_at, end, ENT_TAUS[v])
        ent_f[m, EF_COMMITTED + v] = old + ent_f[m, EF_PENDING + v]
        ent_f[m, EF_PENDING + v] = 0.0
    ent_i[m, EI_COMMITTED_AT] = end
    ent_i[m, EI_PENDING_BUCKET] = EMPTY


def _entity_value(ent_f: np.ndarray, ent_i: np.ndarray, m: int, v: int, t: int) -> float:
    return _decayed(ent_f[m, EF_COMMITTED + v], ent_i[m, EI_COMMITTED_AT], t, ENT_TAUS[v])


def _quantized(x: float) -> float:
    """x rounded to a multiple of 2**-20. Sums of such values are exact in float64 while below
    2**33 (~8.6e9): the same for any order of addition."""
    return math.floor(x * 1048576.0 + 0.5) / 1048576.0


def _entity_add(ent_f: np.ndarray, m: int, v: int, t: int, bucket: int, amount: float) -> None:
    """Add an event at t to the pending values of ``bucket`` (t's bucket or, late, a later one),
    decayed to the bucket's end and quantised, so the pending sum does not depend on arrival
    order."""
    end = (bucket + 1) * BUCKET_MS
    ent_f[m, EF_PENDING + v] += _quantized(amount * math.exp(-(end - t) / ENT_TAUS[v]))


def _entity_bucket(ent_i: np.ndarray, m: int, t: int) -> int:
    """The bucket an event at t joins (after the fold): its own, or for a late event the entity's
    newer pending bucket or committed point, so the entity never moves backwards in time."""
    bucket = t // BUCKET_MS
    pending = ent_i[m, EI_PENDING_BUCKET]
    if pending != EMPTY and pending > bucket:
        bucket = pending
    committed_at = ent_i[m, EI_COMMITTED_AT]
    if committed_at != EMPTY and committed_at // BUCKET_MS > bucket:
        bucket = committed_at // BUCKET_MS
    return bucket


def _entity_transaction(
    ent_f: np.ndarray, ent_i: np.ndarray, m: int, t: int, amount: float, row: np.ndarray, out: int
) -> None:
    """Features from the entity's events of earlier buckets only (a transaction at t sees events
    before floor(t / BUCKET_MS) * BUCKET_MS): the view a stream worker can have of a merchant
    whose transactions arrive on every partition. Then this transaction joins the open bucket."""
    if m < 0:
        for j in range(ENTITY_BLOCK):
            row[out + j] = np.nan
        return
    _entity_fold(ent_f, ent_i, m, t // BUCKET_MS)
    bucket = _entity_bucket(ent_i, m, t)
    for w in range(N_ENT_W):
        row[out + w] = _entity_value(ent_f, ent_i, m, EV_COUNT + w, t)
    count_7d = row[out + E_7D]
    sum_7d = _entity_value(ent_f, ent_i, m, EV_SUM_7D, t)
    row[out + N_ENT_W] = sum_7d / count_7d if count_7d > 0.0 else np.nan
    for w in range(N_LABEL_W):
        fraud = _entity_value(ent_f, ent_i, m, EV_FRAUD + w, t)
        row[out + N_ENT_W + 1 + w] = fraud
        row[out + N_ENT_W + 1 + N_LABEL_W + w] = fraud / (1.0 + row[out + LABEL_TO_ENT + w])
    for w in range(N_SHARE_W):
        labels = _entity_value(ent_f, ent_i, m, EV_LABELS + w, t)
        fraud = row[out + N_ENT_W + 1 + w]
        share = fraud / labels if labels > 1e-12 else np.nan
        row[out + N_ENT_W + 1 + 2 * N_LABEL_W + w] = share
    for w in range(N_ENT_W):
        _entity_add(ent_f, m, EV_COUNT + w, t, bucket, 1.0)
    _entity_add(ent_f, m, EV_SUM_7D, t, bucket, amount)
    ent_i[m, EI_PENDING_BUCKET] = bucket
    ent_i[m, EI_LAST_TS] = max(t, ent_i[m, EI_LAST_TS])


def _entity_label(ent_f: np.ndarray, ent_i: np.ndarray, m: int, r: int, fraud: bool) -> None:
    _entity_fold(ent_f, ent_i, m, r // BUCKET_MS)
    bucket = _entity_bucket(ent_i, m, r)
    for w in range(N_LABEL_W):
        _entity_add(ent_f, m, EV_FRAUD + w, r, bucket, 1.0 if fraud else 0.0)
    for w in range(N_SHARE_W):
        _entity_add(ent_f, m, EV_LABELS + w, r, bucket, 1.0)
    ent_i[m, EI_PENDING_BUCKET] = bucket
    ent_i[m, EI_LAST_TS] = max(r, ent_i[m, EI_LAST_TS])


def _card_fraud_label(card_f: np.ndarray, card_i: np.ndarray, c: int, r: int) -> None:
    as_of = card_i[c, CI_LABEL_AS_OF]
    tau = LABEL_TAU[N_LABEL_W - 1]
    card_f[c, CF_FRAUD_30D] = _decayed(card_f[c, CF_FRAUD_30D], as_of, r, tau) + 1.0
    card_i[c, CI_LABEL_AS_OF] = max(r, as_of)
    card_i[c, CI_LAST_FRAUD_LABEL] = max(r, card_i[c, CI_LAST_FRAUD_LABEL])


def process_events(
    kind: np.ndarray,  # int8: KIND_TRANSACTION | KIND_LABEL
    ts: np.ndarray,  # int64 ms: transaction time, or a label's engine.label_effective_ms
    amount: np.ndarray,  # float64
    card: np.ndarray,  # int64 slot, -1 = unknown (labels only)
    merchant: np.ndarray,  # int64 slot, -1 = absent
    terminal: np.ndarray,  # int64 slot, -1 = absent
    merchant_hash: np.ndarray,  # int64, 0 = absent
    terminal_hash: np.ndarray,  # int64, 0 = absent
    country: np.ndarray,  # int64 code > 0, 0 = absent
    channel: np.ndarray,  # int64 0..3, -1 = absent
    mcc: np.ndarray,  # int64 0..9999, -1 = absent
    card_present: np.ndarray,  # int8 0/1, -1 = absent
    is_fraud: np.ndarray,  # int8 (labels)
    out_row: np.ndarray,  # int64 row of ``out`` for each transaction event
    card_f: np.ndarray,
    card_i: np.ndarray,
    merchant_f: np.ndarray,
    merchant_i: np.ndarray,
    terminal_f: np.ndarray,
    terminal_i: np.ndarray,
    ttl_ms: int,
    scratch: np.ndarray,
    out: np.ndarray,
) -> None:
    """Consume events in the given (time) order; write each transaction's features to ``out``."""
    for e in range(kind.shape[0]):
        t = ts[e]
        c = card[e]
        m = merchant[e]
        k = terminal[e]
        if c >= 0:
            expire_card(card_f, card_i, c, t, ttl_ms)
        if m >= 0:
            expire_entity(merchant_f, merchant_i, m, t, ttl_ms)
        if k >= 0:
            expire_entity(terminal_f, terminal_i, k, t, ttl_ms)
        if kind[e] == KIND_LABEL:
            fraud = is_fraud[e] != 0
            if fraud and c >= 0:
                _card_fraud_label(card_f, card_i, c, t)
            if m >= 0:
                _entity_label(merchant_f, merchant_i, m, t, fraud)
            if k >= 0:
                _entity_label(terminal_f, terminal_i, k, t, fraud)
            continue
        row = out[out_row[e]]
        a = amount[e]
        row[O_AMOUNT] = a
        in_day = t % cat.DAY_MS
        row[O_HOUR] = in_day / HOUR_MS
        row[O_DOW] = float((t // cat.DAY_MS + 3) % 7)  # 1970-01-01 was a Thursday
        row[O_CHANNEL] = float(channel[e]) if channel[e] >= 0 else np.nan
        row[O_CARD_PRESENT] = float(card_present[e]) if card_present[e] >= 0 else np.nan
        row[O_MCC] = float(mcc[e]) if mcc[e] >= 0 else np.nan
        _card_transaction(
            card_f,
            card_i,
            c,
            t,
            a,
            merchant_hash[e],
            terminal_hash[e],
            country[e],
            channel[e],
            mcc[e],
            scratch,
            row,
        )
        _entity_transaction(merchant_f, merchant_i, m, t, a, row, O_MERCHANT)
        _entity_transaction(terminal_f, terminal_i, k, t, a, row, O_TERMINAL)


# The Python twin is the very same source, interpreted. Helpers are compiled one by one so the
# compiled entry point calls compiled helpers, while the twin's globals stay plain Python.
process_events_py = process_events
_JIT = numba.njit(cache=True, nogil=True, fastmath=False)
_HELPERS = (
    "reset_card",
    "reset_entity",
    "_card_last_activity",
    "expire_card",
    "expire_entity",
    "_decayed",
    "_in_set",
    "_remember",
    "_novelty",
    "_median_recent",
    "_card_transaction",
    "_entity_fold",
    "_entity_value",
    "_quantized",
    "_entity_add",
    "_entity_bucket",
    "_entity_transaction",
    "_entity_label",
    "_card_fraud_label",
)


def _compile() -> Any:
    import types

    # A copy of this module's globals where helpers are jitted; the twin keeps the originals.
    compiled_globals = dict(globals())
    for name in _HELPERS:
        function = globals()[name]
        clone = types.FunctionType(function.__code__, compiled_globals, name)
        compiled_globals[name] = _JIT(clone)
    entry = types.FunctionType(process_events.__code__, compiled_globals, "process_events")
    return _JIT(entry)


PURE_PYTHON = os.environ.get("FRAUD_FEATURES_PURE_PYTHON") == "1"
process_events_nb = _compile()
