"""globalflux: sparse soil-respiration measurements to global gridded maps."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("globalflux")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
