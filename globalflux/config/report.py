"""Report settings."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import option


@dataclass(frozen=True)
class ReportConfig:
    """Figures and the markdown report written into the run folder."""

    figures: bool = option(True, doc="Write PNG figures under OUT/figures.")
    dpi: int = option(110, doc="Resolution of PNG figures.", min=30, max=600)
    min_test_days: int = option(
        60, doc="Site-level differences between models (wins, losses, largest differences) are "
        "ranked only over sites with at least this many test days.", min=1, max=100000,
        units="d")
