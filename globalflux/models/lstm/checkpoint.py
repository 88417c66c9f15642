"""Training checkpoints: a folder of ``weights.pt`` (tensors only) and ``config.json``.

Both files are written to temporary names and renamed, so an interrupted save never leaves half
a file; weights are read with ``torch.load(weights_only=True)`` (never arbitrary unpickling).
A checkpoint made with another configuration raises :class:`CheckpointError` naming the keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError
from .network import _torch

__all__ = ["CHECKPOINT_FORMAT", "write_checkpoint", "read_checkpoint"]

CHECKPOINT_FORMAT = 1


def write_checkpoint(path: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, via ``torch.save``) and ``meta`` (JSON) into folder ``path``.

    Temporary names first, then rename: a reader never sees a half-written file.
    """
    torch = _torch()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = path / "weights.pt.tmp", path / "config.json.tmp"
    torch.save(state, tmp_w)
    tmp_c.write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
    tmp_w.replace(path / "weights.pt")
    tmp_c.replace(path / "config.json")
    return path


def read_checkpoint(path: str | Path, config: dict[str, Any]) -> tuple[dict, dict]:
    """``(state, meta)`` of checkpoint folder ``path`` whose configuration must equal ``config``."""
    return _read_checkpoint(Path(path), config)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _flatten_optimizer(osd: dict) -> dict:
    """Adam's state dict as flat tensors + JSON-able parts (all loadable with weights_only)."""
    out = {"optimizer": {"param_groups": osd["param_groups"],
                         "state": {str(k): v for k, v in osd["state"].items()}}}
    return out


def _nest_optimizer(state: dict) -> dict:
    o = state["optimizer"]
    return {"param_groups": o["param_groups"], "state": {int(k): v for k, v in o["state"].items()}}


def _read_meta(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file() or not (path / "weights.pt").is_file():
        raise CheckpointError("not a checkpoint folder (needs weights.pt and config.json)",
                              where=str(path), fix="Point to a folder written by LSTMRegressor.save "
                              "or a run's models/lstm.")
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"config.json is corrupt ({exc.__class__.__name__})", where=str(cfg),
                              fix="Delete the checkpoint and train afresh.") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}",
                              where=str(cfg), fix="Retrain with this globalflux version.")
    return meta


def _read_checkpoint(path: Path, config: dict[str, Any]) -> tuple[dict, dict]:
    """Weights (weights_only) and metadata; configuration must equal ``config``."""
    torch = _torch()
    path = Path(path)
    meta = _read_meta(path)
    saved = meta.get("config", {})
    diff = [k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}" for k in diff)
        raise CheckpointError(f"checkpoint was made with another configuration ({detail})",
                              where=str(path),
                              fix="Use the checkpoint's settings, or train afresh without it "
                              "(remove lstm.checkpoint or choose another --out).")
    try:
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the weights is a bad file
        raise CheckpointError(f"weights.pt cannot be read ({exc.__class__.__name__})",
                              where=str(path / "weights.pt"),
                              fix="Delete the checkpoint and train afresh.") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError("weights.pt holds no model state dict", where=str(path / "weights.pt"),
                              fix="Delete the checkpoint and train afresh.")
    return state, meta

