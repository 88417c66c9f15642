"""``globalflux serve``: a local web map of a run's layers, with time, legend and pixel series.

Public API
----------
``serve(path, *, host="127.0.0.1", port=8765) -> int``
    Index a run folder (or one Zarr store) and serve the viewer until interrupted.
``open_run(path) -> RunIndex``
    The stores, layers (units, long name, time axis, colour scale, uncertainty band,
    applicability layer) and COGs of a run, as the viewer sees them.
``make_app(index) -> tornado.web.Application``
    The HTTP application (for embedding or tests).

The page (``static/index.html``, ``static/viewer.js``) uses Leaflet, vendored from npm into
``static/vendor/leaflet/`` by ``scripts/vendor_js.sh`` and shipped in the wheel: nothing is
fetched from the network at run time. Tiles are cut by rio-tiler (install ``globalflux[serve]``).
"""

from __future__ import annotations

from typing import Any

from ..errors import GlobalfluxError

__all__ = ["serve", "open_run", "make_app", "require", "DEFAULT_PORT"]

#: the viewer's TCP port unless --port says otherwise
DEFAULT_PORT = 8765


def require() -> None:
    """Check that the viewer's optional dependencies are installed (rio-tiler, tornado)."""
    missing = []
    for mod, pkg in (("rio_tiler", "rio-tiler"), ("tornado", "tornado")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        raise GlobalfluxError(f"the viewer needs {', '.join(missing)}", where="globalflux serve",
                              fix="Install them with: pip install 'globalflux[serve]'.")


def serve(path: Any, **kwargs: Any) -> int:
    """See :func:`globalflux.serve.app.serve`."""
    require()
    from .app import serve as _serve

    return _serve(path, **kwargs)


def open_run(path: Any):
    """See :func:`globalflux.serve.index.open_run`."""
    from .index import open_run as _open_run

    return _open_run(path)


def make_app(index: Any, **kwargs: Any):
    """See :func:`globalflux.serve.app.make_app`."""
    require()
    from .app import make_app as _make_app

    return _make_app(index, **kwargs)
