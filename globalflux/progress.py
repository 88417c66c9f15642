"""Progress bars for long steps (mapping blocks, validation folds, epochs, ingestion).

One switch for all of them: :func:`set_progress` (the CLI's ``--quiet`` turns bars off); every
public function that shows a bar also takes ``progress=`` (True/False, or None to follow the
switch). Bars are `tqdm <https://tqdm.github.io>`_ bars on stderr, so they show in a terminal,
in Jupyter (``tqdm.auto``) and in the CLI alike; on a Dask cluster the mapping bar counts the
finished blocks as their futures complete.

>>> from globalflux.progress import set_progress
>>> set_progress(False)   # no bars from here on, e.g. in a batch job
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["set_progress", "progress_enabled", "progress_bar", "track"]

T = TypeVar("T")
_ENABLED: bool | None = None  # None: on, unless GLOBALFLUX_PROGRESS=0


def set_progress(enabled: bool | None) -> None:
    """Turn every progress bar on (True) or off (False); None restores the default (on unless
    the environment variable ``GLOBALFLUX_PROGRESS`` is ``0``)."""
    global _ENABLED
    _ENABLED = None if enabled is None else bool(enabled)


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether a bar is shown: the call's ``progress`` when given, else the global switch."""
    if progress is not None:
        return bool(progress)
    if _ENABLED is not None:
        return _ENABLED
    return os.environ.get("GLOBALFLUX_PROGRESS", "1").lower() not in ("0", "false", "no")


class _NoBar:
    """Stands in for a tqdm bar when bars are off (same ``update``/``close`` methods)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def progress_bar(total: int | None, desc: str, *, enabled: bool | None = None,
                 **kwargs: Any) -> Iterator[Any]:
    """A tqdm bar (or a silent stand-in when bars are off), closed on exit.

    Parameters
    ----------
    total
        Number of steps (None: unknown).
    desc
        What is counted, e.g. ``"LOSO folds"``.
    enabled
        Show it (True/False); None follows :func:`set_progress`.
    kwargs
        Passed to ``tqdm`` (``unit``, ``unit_scale`` ...).
    """
    if not progress_enabled(enabled):
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None,
          enabled: bool | None = None, **kwargs: Any) -> Iterator[T]:
    """Iterate ``items`` with a bar (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with progress_bar(total, desc, enabled=enabled, **kwargs) as bar:
        for item in items:
            yield item
            bar.update(1)
