"""Optional dependencies ("extras") and the one error that names the ``pip install`` to run.

The core install (``pip install globalflux``) runs the forest workflows with scikit-learn.
Two heavy parts are extras:

======== ===================== ============================================================
extra    packages              needed by
======== ===================== ============================================================
``lstm`` torch                 the global LSTM (``workflow: cosore_efflux_daily``, LSTM maps)
``fast`` lleaves, llvmlite     ``forest.engine: lleaves`` (LLVM-compiled; Python 3.11-3.13)
======== ===================== ============================================================

``pip install "globalflux[test]"`` pulls in both. :func:`require` imports a module of an
extra or raises :class:`MissingExtraError` (exit code 2) whose message is the command to run;
:func:`check_recipe` does so for a whole recipe before anything is written.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

from .errors import GlobalfluxError

__all__ = ["EXTRAS", "MissingExtraError", "require", "check_recipe", "has_extra"]

#: extra name -> (importable modules it provides)
EXTRAS: dict[str, tuple[str, ...]] = {
    "lstm": ("torch",),
    "fast": ("lleaves", "llvmlite"),
}

#: workflow name -> extras it always needs
WORKFLOW_EXTRAS: dict[str, tuple[str, ...]] = {
    "cosore_efflux_daily": ("lstm",),
    "efflux_daily_map": ("lstm",),
}


class MissingExtraError(GlobalfluxError):
    """An optional dependency (a globalflux extra) is not installed."""


def _fix(extra: str) -> str:
    if extra == "fast" and sys.version_info >= (3, 14):
        return ("lleaves needs llvmlite 0.44, which has no wheel for Python 3.14: use Python "
                "3.11-3.13 for it, or forest.engine: lightgbm (same forest, uncompiled) or sklearn")
    return (f'Install the extra: pip install "globalflux[{extra}]" (from a checkout: '
            f'pip install ".[{extra}]")')


def require(module: str, extra: str, *, what: str) -> ModuleType:
    """Import ``module`` of ``extra`` or raise :class:`MissingExtraError`.

    Parameters
    ----------
    module
        Importable name (``"torch"``, ``"lleaves"``).
    extra
        The globalflux extra that installs it (``"lstm"``, ``"fast"``).
    what
        What needs it, for the message (e.g. ``"the LSTM (models.lstm)"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs {module}, which is not installed ({exc})",
                                where=f"extra [{extra}]", fix=_fix(extra)) from None


def has_extra(extra: str) -> bool:
    """True when every module of ``extra`` can be imported (without importing it)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in EXTRAS[extra])


def check_recipe(recipe: Any) -> None:
    """Raise :class:`MissingExtraError` when the recipe needs an extra that is not installed:
    its workflow (the LSTM ones need ``[lstm]``) or ``forest.engine: lleaves`` (``[fast]``)."""
    needed = [(e, f"workflow '{recipe.workflow}'")
              for e in WORKFLOW_EXTRAS.get(str(recipe.workflow), ())]
    forest = getattr(recipe, "forest", None)
    if forest is not None and getattr(forest, "engine", None) == "lleaves":
        needed.append(("fast", "forest.engine: lleaves"))
    for extra, what in needed:
        if not has_extra(extra):
            missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
            raise MissingExtraError(
                f"{what} needs {', '.join(missing)} (the [{extra}] extra), which is not installed",
                where=str(getattr(recipe, "source", None) or recipe.workflow), fix=_fix(extra))
