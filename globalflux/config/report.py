"""Report settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..recipe import option


@dataclass(frozen=True)
class ReportConfig:
    """Figures and the markdown report written into the run folder."""

    figures: bool = option(True, doc="Write PNG figures under OUT/figures.")
    dpi: int = option(110, doc="Resolution of PNG figures.", min=30, max=600)
