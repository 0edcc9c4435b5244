from pathlib import Path

import typer


def simulate(out: Path = typer.Option(..., help="Output directory.")) -> None:
    """Write a simulated workload (placeholder until the simulator lands)."""
    raise typer.Exit(1)
