"""Synthetic card traffic with fraud typologies and delayed labels (``fraudstream simulate``).

Modules, one job each: ``catalog`` (countries, categories, rhythms), ``population`` (banks, cards,
merchants, terminals, trips), ``legit`` (genuine traffic), ``typologies`` (one module per fraud
typology), ``schedule`` (fraud budget, mix and drift), ``labels`` (delays and sources),
``tables`` (Arrow output), ``engine`` (the pipeline), ``summary``. See docs/simulator.md.
"""

from training.simulator.config import SimulationConfig, TypologyMix
from training.simulator.engine import Progress, simulate
from training.simulator.summary import Summary, summarize

__all__ = ["Progress", "SimulationConfig", "Summary", "TypologyMix", "simulate", "summarize"]
