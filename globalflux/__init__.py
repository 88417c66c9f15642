"""globalflux: sparse soil-respiration measurements to global gridded maps.

Public API (imported lazily, so ``import globalflux`` stays light):

``load_model(path)``
    The fitted estimator of a verified model package (``RUN/model/``).
``map_cube(model, cube, *, mask=None, bbox=None, time=None, ...)``
    The model's map over a predictor cube as a lazy :class:`xarray.Dataset`.
"""
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("globalflux")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__", "load_model", "map_cube"]


def load_model(path: Any) -> Any:
    """The fitted estimator of a verified model package; see
    :func:`globalflux.io.model_package.load_model`."""
    from .io.model_package import load_model as _load

    return _load(path)


def map_cube(model: Any, cube: Any, **kwargs: Any) -> Any:
    """A lazy map of ``model`` over ``cube``; see :func:`globalflux.mapping.map_cube`."""
    from .mapping import map_cube as _map

    return _map(model, cube, **kwargs)
