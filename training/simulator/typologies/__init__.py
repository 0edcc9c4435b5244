"""Fraud typologies, one module each. ``ALL`` fixes their order, which is their fraud_type code."""

from __future__ import annotations

from training.simulator.typologies import (
    account_takeover,
    bin_attack,
    card_testing,
    compromised_terminal,
    high_value,
    stolen_card_abroad,
)
from training.simulator.typologies.base import FraudContext, Typology

# The established typologies (config.TYPOLOGIES order), then the ones switched on mid-period.
ESTABLISHED: tuple[Typology, ...] = (
    card_testing.TYPOLOGY,
    account_takeover.TYPOLOGY,
    compromised_terminal.TYPOLOGY,
    stolen_card_abroad.TYPOLOGY,
    high_value.TYPOLOGY,
)
NEW: dict[str, Typology] = {"bin_attack": bin_attack.TYPOLOGY}
ALL: tuple[Typology, ...] = ESTABLISHED + tuple(NEW.values())
NAMES: tuple[str, ...] = tuple(t.name for t in ALL)

__all__ = ["ALL", "ESTABLISHED", "NAMES", "NEW", "FraudContext", "Typology"]
