"""One exception hierarchy for globalflux.

Every :class:`GlobalfluxError` is a *bad input* (recipe, file, value, model state the user
controls). Its message names the input and says how to fix it. The CLI maps it to exit code 2
and prints one line; anything else is an internal error (exit code 1).

Messages are built as ``"<input>: <what is wrong>. <how to fix>"``; tests check the wording.
"""

from __future__ import annotations

__all__ = [
    "GlobalfluxError",
    "RecipeError",
    "InputFileError",
    "DataError",
    "GridError",
    "ModelError",
    "CheckpointError",
    "StoreError",
    "SchedulerError",
    "GlobalfluxWarning",
    "SyntheticDataWarning",
]


class GlobalfluxError(Exception):
    """A bad input. ``where`` names the input (file, key path, dataset), ``fix`` says what to do.

    Parameters
    ----------
    message
        What is wrong, including the bad value.
    where
        The input that is wrong: a file path, a recipe key path, a dataset or site name.
    fix
        What the user should do about it.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text = text.rstrip(".") + ". " + self.fix
        return text


class RecipeError(GlobalfluxError):
    """A recipe key, type or value is not allowed."""


class InputFileError(GlobalfluxError):
    """An input file or folder is missing, unreadable, corrupt or of the wrong layout."""


class DataError(GlobalfluxError):
    """Input data are readable but unusable (all NaN, wrong units, too short, ...)."""


class GridError(GlobalfluxError):
    """A grid, CRS or bbox problem (no CRS, bbox outside the source, mismatched axes)."""


class ModelError(GlobalfluxError):
    """A model cannot be fitted or applied with the inputs given."""


class CheckpointError(GlobalfluxError):
    """A checkpoint is missing, corrupt or from another configuration."""


class StoreError(GlobalfluxError):
    """An output store is corrupt, from another recipe, or cannot be resumed."""


class SchedulerError(GlobalfluxError):
    """A Dask scheduler address cannot be reached."""


class GlobalfluxWarning(UserWarning):
    """Warnings emitted by globalflux (turned into errors in the test suite)."""


class SyntheticDataWarning(GlobalfluxWarning):
    """Raised where synthetic data could be mistaken for real data."""
