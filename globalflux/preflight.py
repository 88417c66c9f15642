"""One preflight: everything about a recipe that can be checked without computing.

``globalflux validate`` and the start of ``globalflux run`` call :func:`preflight` before the
first byte is written. The recipe loader already checked types and numeric bounds (NaN and inf
refused); this adds the checks that need more than one key or the file system:

* names that become paths (``name``, ``cube.store``) are plain names (:func:`~globalflux.io.paths.plain_name`);
* byte sizes (``mapping.memory_limit``) parse;
* CRS strings (``cube.grid.crs``, ``cube.rasters.*.crs``) are known to pyproj, and the grid holds
  at least one pixel;
* input paths exist and are of the right kind (file or folder);
* the sources match the workflow (e.g. ``static_cube`` needs ``cube.source: static``);
* the output folder can be written (when given).

Each failure is a :class:`~globalflux.errors.GlobalfluxError` naming the key and the fix.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from .errors import GridError, InputFileError, RecipeError
from .io.paths import check_writable_dir, plain_name

__all__ = ["preflight", "check_crs", "check_bytes", "WORKFLOW_SOURCES"]

#: which ``sites.source`` / ``cube.source`` values each workflow accepts, and how to fix another
WORKFLOW_SOURCES: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "synthetic_zoned_rh": {"cube": (("synthetic",), "The synthetic_zoned_rh workflow builds its own cube: "
                                    "use 'synthetic'.")},
    "srdb_rh_annual": {"sites": (("srdb", "gsbe"), "The srdb_rh_annual workflow reads SRDB: use 'srdb' "
                                 "(or 'gsbe')."),
                       "cube": (("static",), "The srdb_rh_annual workflow samples the real static cube: "
                                "use 'static'.")},
    "cosore_rh": {"sites": (("cosore",), "The cosore_rh workflow reads COSORE: use 'cosore'."),
                  "cube": (("static",), "The cosore_rh workflow samples the real static cube: use 'static'.")},
    "cosore_efflux_daily": {"sites": (("cosore",), "Workflow cosore_efflux_daily reads COSORE: set "
                                      "sites.source: cosore.")},
    "static_cube": {"cube": (("static",), "The static_cube workflow builds source: static; use stac_cube "
                             "for rasters/stac.")},
    "stac_cube": {"cube": (("stac", "rasters"), "The stac_cube workflow builds source: stac or rasters; "
                           "use static_cube for the static grids.")},
}

_SINUSOIDAL = ("modis-sinusoidal", "modis_sinusoidal", "sinusoidal")


def check_crs(value: str, *, key: str) -> str:
    """``value`` if pyproj knows it (or it is ``modis-sinusoidal``); else GridError naming ``key``."""
    if str(value).lower() in _SINUSOIDAL:
        return value
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(value)
    except (CRSError, TypeError, ValueError):
        raise GridError(f"{value!r} is not a CRS pyproj knows", where=key,
                        fix="Use an EPSG code (e.g. EPSG:4326), WKT, a PROJ string or "
                        "'modis-sinusoidal'.") from None
    return value


def check_bytes(value: str, *, key: str) -> int | str:
    """A Dask byte size (``2GiB``, ``500MB``, ``auto``); else RecipeError naming ``key``."""
    text = str(value).strip()
    if text.lower() == "auto":
        return "auto"
    from dask.utils import parse_bytes

    try:
        n = parse_bytes(text)
    except (ValueError, TypeError, KeyError):
        n = None
    if n is None or n <= 0:
        raise RecipeError(f"got {value!r}, not a byte size", where=key,
                          fix="Write a size such as 2GiB, 512MB or 'auto'.")
    return int(n)


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _need(path: str | None, *, key: str, kind: str, missing: str = "does not exist") -> None:
    """An input path that must exist: ``kind`` is 'file', 'dir', 'any' or 'glob'."""
    if path is None:
        return
    text = str(path)
    if _is_url(text):
        return
    if kind == "glob" and any(c in text for c in "*?["):
        if not glob.glob(text):
            raise InputFileError("the pattern matches no file", where=f"{key} {text}",
                                 fix="Check the folder and the pattern (relative to the current folder).")
        return
    p = Path(text)
    if not p.exists():
        raise InputFileError(missing, where=f"{key} {text}",
                             fix="Check the path (relative paths start from the current folder).")
    if kind == "dir" and not p.is_dir():
        raise InputFileError("is a file, expected a folder", where=f"{key} {text}",
                             fix="Give the folder that holds the data.")
    if kind == "file" and not p.is_file():
        raise InputFileError("is a folder, expected a file", where=f"{key} {text}",
                             fix="Give the file itself.")


def _sources(recipe) -> None:
    want = WORKFLOW_SOURCES.get(recipe.workflow, {})
    for section, (allowed, fix) in want.items():
        cfg = getattr(recipe, section, None)
        if cfg is None:
            continue
        if cfg.source not in allowed:
            raise RecipeError(f"{section}.source is {cfg.source!r}", where=f"{section}.source", fix=fix)


def _inputs(recipe) -> None:
    s = getattr(recipe, "sites", None)
    if s is not None:
        if s.source == "srdb":
            _need(s.srdb_path, key="sites.srdb_path", kind="any", missing="SRDB data file not found")
        elif s.source == "cosore":
            _need(s.cosore_path, key="sites.cosore_path", kind="dir", missing="COSORE folder not found")
        elif s.source == "gsbe":
            _need(s.gsbe_path, key="sites.gsbe_path", kind="dir", missing="gsbe folder not found")
    c = getattr(recipe, "cube", None)
    if c is not None:
        if c.source == "static":
            _need(c.static_root, key="cube.static_root", kind="dir", missing="static grids folder not found")
        if c.source == "rasters":
            if not c.rasters:
                raise RecipeError("no raster sources", where="cube.rasters",
                                  fix="Add at least one source: cube.rasters.NAME.path.")
            for name, r in c.rasters.items():
                _need(r.path, key=f"cube.rasters.{name}.path", kind="glob")
                _need(r.qc_path, key=f"cube.rasters.{name}.qc_path", kind="glob")
                if r.crs is not None:
                    check_crs(r.crs, key=f"cube.rasters.{name}.crs")
                if r.valid_range is not None and r.valid_range[0] > r.valid_range[1]:
                    raise RecipeError(f"got {list(r.valid_range)}", where=f"cube.rasters.{name}.valid_range",
                                      fix="Write it as [min, max] with min <= max.")
        if c.source == "stac" and not _is_url(c.stac.catalog):
            _need(c.stac.catalog, key="cube.stac.catalog", kind="file")
        _need(c.sites, key="cube.sites", kind="file")
    syn = getattr(recipe, "synthetic", None)
    if syn is not None:
        _need(getattr(syn, "sites_file", None), key="synthetic.sites_file", kind="file")
    lstm = getattr(recipe, "lstm", None)
    if lstm is not None and set(getattr(lstm, "statics", ())) & {"mat", "map", "soc"}:
        _need(lstm.static_grids_path, key="lstm.static_grids_path", kind="dir")


def _grid(recipe) -> None:
    c = getattr(recipe, "cube", None)
    if c is None:
        return
    check_crs(c.grid.crs, key="cube.grid.crs")
    w, s, e, n = c.grid.bbox
    if not (w < e and s < n):
        raise GridError(f"got {list(c.grid.bbox)}", where="cube.grid.bbox",
                        fix="Write it as [W, S, E, N] with W < E and S < N.")
    if str(c.grid.crs).upper() in ("EPSG:4326", "WGS84", "OGC:CRS84") and not (
        -180 <= w and e <= 180 and -90 <= s and n <= 90
    ):
        raise GridError(f"got {list(c.grid.bbox)}, outside -180..180, -90..90", where="cube.grid.bbox",
                        fix="Give longitudes in -180..180 and latitudes in -90..90.")
    from .grid import make_grid

    make_grid(c.grid.crs, c.grid.resolution, c.grid.bbox)


def preflight(recipe, out: str | Path | None = None) -> Any:
    """Check a resolved recipe (and the output folder ``out``) before anything is written.

    Returns the recipe unchanged; raises a :class:`~globalflux.errors.GlobalfluxError` naming
    the first bad key, path or value.
    """
    plain_name(recipe.name, key="name")
    c = getattr(recipe, "cube", None)
    if c is not None:
        plain_name(c.store, key="cube.store")
    m = getattr(recipe, "mapping", None)
    if m is not None:
        check_bytes(m.memory_limit, key="mapping.memory_limit")
        host = getattr(m, "dashboard_host", "127.0.0.1")
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::") and not _looks_like_ip(host):
            raise RecipeError(f"got {host!r}", where="mapping.dashboard_host",
                              fix="Use 127.0.0.1 (default, this machine only) or an IP address.")
    _sources(recipe)
    _grid(recipe)
    _inputs(recipe)
    if out is not None:
        check_writable_dir(out, what="--out")
    return recipe


def _looks_like_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
