"""Provenance attributes carried by every output: package version, recipe, input checksums."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from collections.abc import Mapping
from typing import Any

__all__ = ["provenance_attrs", "sha256_bytes", "SYNTHETIC_NOTE"]

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: produced from globalflux.testing.synthetic, a seeded synthetic world; "
    "not a measurement or estimate of the real world."
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provenance_attrs(
    *,
    recipe: Any = None,
    inputs: Mapping[str, str] | None = None,
    synthetic: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Attributes for a Dataset or file: CF conventions, version, resolved recipe, inputs.

    Parameters
    ----------
    recipe
        The resolved :class:`globalflux.config.Recipe` (dumped as YAML text) or None.
    inputs
        Mapping of input name to checksum or item id.
    synthetic
        Mark the product as synthetic (adds ``synthetic = "true"`` and a warning note).
    """
    from . import __version__
    from .recipe import dump_recipe

    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "institution": "globalflux",
        "source": f"globalflux {__version__}",
        "globalflux_version": __version__,
        "history": f"{_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} created by globalflux "
        f"{__version__} (Python {platform.python_version()})",
        "synthetic": "true" if synthetic else "false",
    }
    if synthetic:
        attrs["comment"] = SYNTHETIC_NOTE
        attrs["title"] = "SYNTHETIC " + str(getattr(recipe, "name", "globalflux product"))
    elif recipe is not None:
        attrs["title"] = str(getattr(recipe, "name", "globalflux product"))
    if recipe is not None:
        attrs["recipe"] = dump_recipe(recipe)
    if inputs:
        attrs["input_checksums"] = json.dumps(dict(inputs), sort_keys=True)
    if extra:
        attrs.update(extra)
    return attrs
