"""Where globalflux may write: plain names under ``--out``, checked before the first byte.

Every command that writes (``run``, ``map``, ``query``, ``bench``, ``sites``) goes through these
helpers, so the rules are one decision in one place:

* :func:`plain_name` -- a store or file name taken from a recipe (``cube.store``, the recipe
  ``name`` in the default run folder) is one path component: no separator, no ``..``, not
  absolute, not hidden, no control characters. Anything else is a :class:`RecipeError` naming
  the key, so a recipe can never reach outside the run folder.
* :func:`check_writable_dir` -- a folder that will be created or written into: every existing
  ancestor is a folder, the nearest existing one is writable, and it is not under ``/proc``,
  ``/sys`` or ``/dev``.
* :func:`check_output_file` -- one output file (``query --out``, ``bench --out`` files): its folder
  is writable, the path is not a folder, and an existing file is replaced only when the caller
  passes ``overwrite=True``. Nothing is ever deleted here.
* :func:`atomic_write_bytes` / :func:`atomic_target` -- write to a temporary sibling, then
  ``os.replace``; :data:`TMP_PREFIX` marks those temporaries so :func:`remove_stale_temps` can clear
  the leftovers of an interrupted run on ``--resume``.
* :func:`write_error` -- an ``OSError`` raised while writing becomes an
  :class:`~globalflux.errors.InputFileError` (exit 2) naming the path.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputFileError, RecipeError

__all__ = [
    "plain_name",
    "check_writable_dir",
    "check_output_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_target",
    "remove_stale_temps",
    "write_error",
    "is_write_error",
    "writing",
    "TMP_PREFIX",
]

#: prefix of temporary siblings (``.gf-tmp-<pid>-<name>``); removed on ``--resume``
TMP_PREFIX = ".gf-tmp-"
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def plain_name(value: str, *, key: str) -> str:
    """Return ``value`` if it is a single plain file name; else a RecipeError naming ``key``.

    Parameters
    ----------
    value
        The name from a recipe or option (e.g. ``cube.store``).
    key
        The recipe key or option that holds it, named in the error.
    """
    text = str(value)
    bad = None
    if not text.strip():
        bad = "is empty"
    elif text != text.strip():
        bad = "has leading or trailing spaces"
    elif "/" in text or "\\" in text or (os.altsep and os.altsep in text):
        bad = "contains a path separator"
    elif text in (".", "..") or text.startswith(".."):
        bad = "points to a parent folder"
    elif text.startswith("."):
        bad = "is a hidden name"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text) or ":" in text:
        bad = "contains a control character or ':'"
    elif len(text.encode("utf-8")) > 200:
        bad = "is longer than 200 bytes"
    if bad:
        raise RecipeError(f"{text!r} {bad}", where=key,
                          fix="Use a plain name (letters, digits, '-', '_', '.'); every output is "
                          "written inside --out.")
    return text


def _forbidden(path: Path) -> bool:
    s = str(path.resolve() if path.is_absolute() else path.absolute())
    return any(s == r or s.startswith(r + "/") for r in _FORBIDDEN_ROOTS)


def check_writable_dir(path: str | Path, *, what: str = "--out") -> Path:
    """Check (without writing) that the folder ``path`` exists or can be created and written.

    Raises :class:`InputFileError` naming ``path`` when a part of it is a file, when the nearest
    existing folder is not writable, or when it lies under /proc, /sys or /dev.
    """
    p = Path(path)
    if _forbidden(p):
        raise InputFileError("is a system folder, not a place for outputs", where=f"{what} {p}",
                             fix="Choose a folder in your own space.")
    if p.exists() and not p.is_dir():
        raise InputFileError("exists and is not a folder", where=f"{what} {p}",
                             fix="Choose another path or remove that file yourself.")
    probe = p
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise InputFileError(f"'{probe}' is a file, not a folder", where=f"{what} {p}",
                             fix="Choose a path whose parents are folders.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputFileError(f"no write permission in '{probe}'", where=f"{what} {p}",
                             fix="Choose a folder you can write to.")
    return p


def check_output_file(path: str | Path, *, what: str = "--out", overwrite: bool = False) -> Path:
    """Check that the file ``path`` may be written; an existing file needs ``overwrite=True``."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError("is a folder, expected a file name", where=f"{what} {p}",
                             fix="Give a file path, e.g. subset.nc.")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise InputFileError("file exists", where=f"{what} {p}",
                                 fix="Choose another name, or pass --overwrite to replace it.")
        if not os.access(p, os.W_OK):
            raise InputFileError("file exists and is not writable", where=f"{what} {p}",
                                 fix="Choose another name.")
    check_writable_dir(p.parent if str(p.parent) else Path("."), what=what)
    return p


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")  # keeps the suffix


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` (file or folder).

    A folder at ``path`` is replaced only after the new one is complete; on error the temporary is
    removed and ``path`` is untouched.
    """
    p = Path(path)
    tmp = _tmp_sibling(p)
    _remove(tmp)
    try:
        yield tmp
        if p.is_dir() and not p.is_symlink() and tmp.is_dir():
            old = p.with_name(f"{TMP_PREFIX}{os.getpid()}-old-{p.name}")
            os.replace(p, old)
            os.replace(tmp, p)
            _remove(old)
        else:
            os.replace(tmp, p)
    except OSError as exc:
        _remove(tmp)
        raise write_error(exc, p) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink(missing_ok=True)


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Remove the temporaries (:data:`TMP_PREFIX`) an interrupted run left under ``root``."""
    root = Path(root)
    gone = []
    if not root.is_dir():
        return gone
    for p in sorted(root.rglob(f"{TMP_PREFIX}*"), key=lambda q: -len(q.parts)):
        if p.exists() or p.is_symlink():
            _remove(p)
            gone.append(p)
    return gone


_WHY = {
    errno.EACCES: "no write permission",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.EROFS: "read-only file system",
    errno.EEXIST: "exists",
}


def is_write_error(exc: OSError) -> bool:
    """Whether ``exc`` is about where outputs go (permission, full disk, not a folder, ...)."""
    return exc.errno in (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                         errno.EISDIR, errno.EROFS)


def write_error(exc: OSError, path: str | Path | None = None) -> InputFileError:
    """An :class:`InputFileError` (exit 2) for an ``OSError`` raised while writing ``path``."""
    where = path or exc.filename or "output"
    why = _WHY.get(exc.errno or 0, exc.strerror or exc.__class__.__name__)
    return InputFileError(f"cannot write ({why})", where=str(where),
                          fix="Choose an output folder you can write to, with free space.")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` in the block into :func:`write_error` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path) from None
