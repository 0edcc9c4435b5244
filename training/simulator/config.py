"""``SimulationConfig``: every knob of the simulator, validated (pydantic v2).

Defaults give a month of traffic of 10,000 cards (~400k transactions) with a fraud rate around
0.5–0.65 % whose typology mix drifts over the month. docs/simulator.md explains each knob.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TYPOLOGIES: tuple[str, ...] = (
    "card_testing",
    "account_takeover",
    "compromised_terminal",
    "stolen_card_abroad",
    "high_value",
)
NEW_TYPOLOGIES: tuple[str, ...] = ("bin_attack",)


class TypologyMix(BaseModel):
    """Relative weights of the established typologies in the fraud budget (normalised to 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card_testing: float = Field(default=0.30, ge=0)
    account_takeover: float = Field(default=0.20, ge=0)
    compromised_terminal: float = Field(default=0.20, ge=0)
    stolen_card_abroad: float = Field(default=0.20, ge=0)
    high_value: float = Field(default=0.10, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> TypologyMix:
        if sum(self.weights()) <= 0:
            raise ValueError("at least one typology needs a positive weight")
        return self

    def weights(self) -> list[float]:
        return [float(getattr(self, name)) for name in TYPOLOGIES]


# Card testing falls out of favour over the month while account takeover and fraud abroad grow:
# the drift a model trained on the first weeks has to cope with.
DEFAULT_MIX_END = TypologyMix(
    card_testing=0.18,
    account_takeover=0.27,
    compromised_terminal=0.20,
    stolen_card_abroad=0.22,
    high_value=0.13,
)


class SimulationConfig(BaseModel):
    """What to simulate. Same config (seed included) → byte-identical output files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(default=30, ge=1, le=3660, description="Simulated days.")
    cards: int = Field(default=10_000, ge=10, le=10_000_000, description="Number of cards.")
    merchants: int | None = Field(
        default=None,
        ge=100,
        le=5_000_000,
        description="Number of merchants; unset: max(200, cards // 5).",
    )
    banks: int = Field(default=3, ge=1, le=99, description="Issuing banks (tenants).")
    seed: int = Field(default=42, ge=0, description="Seed of every random stream.")
    start: datetime = Field(
        default=datetime(2026, 1, 5, tzinfo=UTC),
        description="First simulated day (UTC). Default is a Monday.",
    )
    transactions_per_card_day: float = Field(
        default=1.3, gt=0, le=50, description="Median genuine transactions per card per day."
    )
    trips_per_card_year: float = Field(
        default=4.0, ge=0, le=52, description="Genuine trips (travel abroad) per card per year."
    )

    fraud_rate: float = Field(
        default=0.005, gt=0, le=0.05, description="Target share of fraudulent transactions, day 0."
    )
    fraud_rate_drift: float = Field(
        default=0.25,
        ge=-0.5,
        le=1.0,
        description="Relative change of the fraud rate by the last day (linear).",
    )
    mix_start: TypologyMix = Field(default_factory=TypologyMix)
    mix_end: TypologyMix = Field(default=DEFAULT_MIX_END)

    new_typology: Literal["bin_attack"] = Field(
        default="bin_attack", description="The typology switched on at new_typology_day."
    )
    new_typology_day: int | None = Field(
        default=None,
        ge=0,
        description="Day index (0-based) from which the new typology runs; unset: never.",
    )
    new_typology_share: float = Field(
        default=0.2, gt=0, lt=1, description="Its share of the fraud budget once ramped up."
    )

    amounts: Literal["local", "billing"] = Field(
        # The issuer (our user) scores in the card's billing currency, so the default is billing:
        # amount features and the cost model then compare like with like.
        default="billing",
        description="billing (default): converted to the card's home currency (what the issuer "
        "sees and the cardholder is billed), so amounts compare across countries without a rate "
        "table. local: amount and currency of the merchant's country (what the terminal sends).",
    )

    genuine_label_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Share of genuine transactions with an explicit is_fraud=false label.",
    )
    label_all: bool = Field(
        default=False,
        description="Also label every other genuine transaction at timestamp + maturity.",
    )
    max_label_delay_days: float = Field(default=60, gt=0, le=365)
    label_maturity_days: float = Field(
        default=60, gt=0, le=365, description="After this, an unlabelled transaction is genuine."
    )

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start needs a UTC offset, e.g. 2026-01-05T00:00:00Z")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        if self.new_typology_day is not None and self.new_typology_day >= self.days:
            raise ValueError(f"new_typology_day must be < days ({self.days})")
        if self.label_maturity_days < self.max_label_delay_days:
            # Otherwise a fraud could be reported after its transaction was declared genuine.
            raise ValueError("label_maturity_days must be >= max_label_delay_days")
        return self

    @property
    def merchant_count(self) -> int:
        return self.merchants if self.merchants is not None else max(200, self.cards // 5)

    @property
    def start_ms(self) -> int:
        return round(self.start.timestamp() * 1000)
