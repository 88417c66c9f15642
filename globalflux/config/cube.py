"""Settings of predictor cubes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..recipe import option


@dataclass(frozen=True)
class CubeConfig:
    """Predictor cube: source, target grid, chunks and site extraction."""

    source: Literal["synthetic", "rasters", "stac", "static"] = option(
        "synthetic", doc="Where predictors come from."
    )
    chunk_time: int = option(-1, doc="Chunk length along time (-1: whole axis).", min=-1)
    chunk_y: int = option(128, doc="Chunk size along y.", min=1)
    chunk_x: int = option(128, doc="Chunk size along x.", min=1)
    extraction: Literal["nearest", "window"] = option("nearest", doc="Sampling at site coordinates.")
    window: int = option(3, doc="Window size in pixels for extraction: window.", min=1, max=99)
