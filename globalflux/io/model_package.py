"""Model packages: a trained model as a folder of safe, checksummed files (``RUN/model/``).

Layout
------
``model.json``
    The manifest (``format = "globalflux-model-package"``, ``manifest_version``): the model
    ``kind`` (``zoned_forest``, ``unified_forest``, ``lstm``), the globalflux version and the
    library versions that wrote it, the ``inputs`` (every predictor/driver by name, with its
    units and training minimum, maximum, mean and SD), the ``target`` (name, units, CF
    standard_name), the ``time_step``, the ``engine``, the estimator's own section (``model``:
    zone classifier, forests per zone, chosen predictors, ...), the area of applicability
    (``applicability``), the training data's checksum, the validation scores, the resolved
    recipe that trained it, and ``payloads``: each payload file with its sha256 and size.
payload files
    Only safe formats: ``.json``; ``.npz`` (numeric arrays, read with ``allow_pickle=False``);
    ``.txt`` (LightGBM model text); ``.skops`` (scikit-learn forests, read by skops with an
    explicit list of trusted types); ``.pt`` (a torch ``state_dict``, read with
    ``weights_only=True``); ``.so`` (a forest compiled by lleaves when the package was written,
    with the CPU target it was built for in the forest's ``compiled`` section: after the sha256
    check it is copied into the per-user verified cache of :mod:`globalflux.models.fast` and
    loaded from there, and only when this machine's CPU target is the recorded one; elsewhere
    the forest is compiled anew). Nothing is ever unpickled.

Reading (:func:`read_package`) checks, before building anything: the folder holds
``model.json``; the manifest parses, has this format and a manifest version this globalflux
can read; the kind is known; every payload is listed with a plain file name of a safe suffix,
exists, has the recorded size and sha256 and holds no pickle stream; no other file lies in the
folder. Any failure is a :class:`ModelPackageError` (exit code 2) naming the file. Then the
estimator is rebuilt by its class's ``from_package(section, payloads)``.

Writing (:func:`write_package`) is atomic per file (temporary name, then rename) and writes
``model.json`` last, after removing the old one, so a folder with a manifest always holds the
payloads it lists.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputFileError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "FORMAT",
    "KINDS",
    "SAFE_SUFFIXES",
    "ModelPackage",
    "ModelPackageError",
    "write_package",
    "write_lstm_package",
    "read_package",
    "load_model",
    "input_statistics",
    "table_sha256",
    "is_package",
]

MANIFEST_NAME = "model.json"
FORMAT = "globalflux-model-package"
#: the manifest version this globalflux writes and the newest it reads
MANIFEST_VERSION = 1
#: kind -> (module, class) providing ``to_package`` / ``from_package`` (imported lazily)
KINDS: dict[str, tuple[str, str]] = {
    "zoned_forest": ("globalflux.models.forest", "ZonedForestRegressor"),
    "unified_forest": ("globalflux.models.forest", "UnifiedForestRegressor"),
    "lstm": ("globalflux.models.lstm", "LSTMRegressor"),
}
#: payload suffix -> format
SAFE_SUFFIXES = {".json": "json", ".npz": "npz", ".txt": "lightgbm", ".skops": "skops",
                 ".pt": "torch state_dict", ".so": "lleaves compiled forest"}
_CLASS_KIND = {cls: kind for kind, (_, cls) in KINDS.items()}
_CLASS_KIND["LSTMEnsemble"] = "lstm"  # read back by LSTMRegressor.from_package (``members``)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_FIX = "Rebuild it with `globalflux run` (model packages are written into RUN/model/)."


class ModelPackageError(InputFileError):
    """A model package is missing, not a package, from a newer globalflux, or tampered with."""


@dataclass
class ModelPackage:
    """A verified model package.

    Attributes
    ----------
    path
        The package folder.
    manifest
        The parsed ``model.json``.
    checksum
        sha256 of ``model.json`` (which lists every payload's sha256): the model's identity,
        recorded in every map made with it.
    estimator
        The rebuilt fitted estimator.
    applicability
        The :class:`globalflux.applicability.AreaOfApplicability`, or None.
    """

    path: Path
    manifest: dict[str, Any]
    checksum: str
    estimator: Any = None
    applicability: Any = None
    payloads: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.manifest.get("target") or {})

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("inputs") or [])


# ----------------------------------------------------------------------------------- helpers


def table_sha256(table: pd.DataFrame) -> str:
    """sha256 of a table's values, index and column names (the training data's checksum)."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in table.columns]).encode())
    h.update(np.asarray(pd.util.hash_pandas_object(table, index=True)).tobytes())
    return h.hexdigest()


def input_statistics(X: pd.DataFrame, units: dict[str, str] | None = None,
                     roles: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One entry per column of the training table: name, units, role and training range."""
    out = []
    for c in X.columns:
        v = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype="float64")
        v = v[np.isfinite(v)]
        out.append({
            "name": str(c),
            "units": None if units is None else units.get(str(c)),
            "role": (roles or {}).get(str(c), "predictor"),
            "min": float(v.min()) if v.size else None,
            "max": float(v.max()) if v.size else None,
            "mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n": int(v.size),
        })
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("globalflux", "scikit-learn", "lightgbm", "skops", "numpy", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _kind_of(estimator: Any) -> str:
    kind = _CLASS_KIND.get(type(estimator).__name__)
    if kind is None:
        raise ModelPackageError(f"a {type(estimator).__name__} cannot be packaged",
                                where="model package",
                                fix=f"Package one of: {', '.join(_CLASS_KIND)}.")
    return kind


# ----------------------------------------------------------------------------------- write


def write_package(
    folder: str | Path,
    estimator: Any,
    *,
    inputs: list[dict[str, Any]] | None = None,
    target: dict[str, Any] | None = None,
    time_step: str | None = None,
    applicability: Any = None,
    training: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
    recipe: Any = None,
    synthetic: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``estimator`` as a model package into ``folder``; returns the folder.

    Parameters
    ----------
    estimator
        A fitted estimator with ``to_package()`` (see :data:`KINDS`).
    inputs
        :func:`input_statistics` of the training table (names, units, ranges).
    target
        ``{"name", "units", "standard_name", "long_name"}`` of the predicted variable.
    time_step
        ``"annual"``, ``"8-day"`` or ``"daily"``.
    applicability
        A fitted :class:`globalflux.applicability.AreaOfApplicability` or None.
    training
        E.g. ``{"sha256": table_sha256(table), "n_rows": ..., "n_sites": ...}``.
    validation
        Validation scores (JSON values), e.g. ``{"scheme": "loso", "r2": ..., "rmse": ...}``.
    recipe
        The resolved recipe (dumped as YAML text into the manifest).
    synthetic
        Mark the package as trained on SYNTHETIC data.
    """
    from .. import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = _kind_of(estimator)
    section, payloads = estimator.to_package()
    payloads = dict(payloads)
    aoa_section = None
    if applicability is not None:
        aoa_section, aoa_payloads = applicability.to_package()
        payloads.update(aoa_payloads)
    for name in payloads:
        if not _NAME.match(name) or Path(name).suffix not in SAFE_SUFFIXES or name == MANIFEST_NAME:
            raise ModelPackageError(f"payload name {name!r} is not a plain file name with a safe "
                                    f"suffix ({', '.join(SAFE_SUFFIXES)})",
                                    where=str(folder / name), fix="Report this as a bug.")
    recipe_text = None
    if recipe is not None:
        from ..recipe import dump_recipe

        recipe_text = recipe if isinstance(recipe, str) else dump_recipe(recipe)
    manifest = {
        "format": FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "globalflux_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "synthetic": bool(synthetic),
        "versions": _versions(),
        "engine": getattr(estimator, "engine", None) or kind,
        "time_step": time_step,
        "target": target or {},
        "inputs": inputs or [],
        "training": training or {},
        "validation": validation or {},
        "model": section,
        "applicability": aoa_section,
        "payloads": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                            "format": SAFE_SUFFIXES[Path(name).suffix]}
                     for name, data in sorted(payloads.items())},
        "recipe": recipe_text,
    }
    if extra:
        manifest.update(extra)
    text = json.dumps(manifest, indent=1, sort_keys=False, default=_json_default,
                      allow_nan=False) + "\n"
    mpath = folder / MANIFEST_NAME
    if mpath.exists():
        mpath.unlink()  # no manifest while payloads are being replaced
    keep = set(payloads) | {MANIFEST_NAME}
    for old in folder.iterdir():  # payloads of an earlier package in this folder
        if old.is_file() and old.name not in keep and not old.name.startswith("README"):
            old.unlink()
    for name, data in payloads.items():
        _atomic_write(folder / name, data)
    _atomic_write(mpath, text.encode("utf-8"))
    return folder


# ------------------------------------------------------------------------------------ read


def is_package(path: str | Path) -> bool:
    """True if ``path`` is a folder holding a ``model.json``."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST_NAME).is_file()


def _looks_pickled(data: bytes) -> bool:
    # protocol 2+ starts with PROTO (0x80); joblib's zlib/gzip/lzma/bz2 wrappers
    return data[:1] == b"\x80" or data[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda",
                                                b"\x1f\x8b", b"BZ") or data[:6] == b"\xfd7zXZ\x00"


def read_package(path: str | Path, *, build: bool = True) -> ModelPackage:
    """Verify a model package and rebuild its estimator (see the module docstring).

    Raises
    ------
    ModelPackageError
        Naming the file that is missing, unreadable, of a newer manifest version, unknown,
        pickled, truncated or altered.
    """
    folder = Path(path)
    if not folder.exists():
        raise ModelPackageError("does not exist", where=str(folder),
                                fix="Give the model/ folder of a run (RUN/model).")
    if not folder.is_dir():
        raise ModelPackageError("is a file, not a model package folder", where=str(folder),
                                fix="Give the folder that holds model.json (RUN/model).")
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise ModelPackageError(f"is not a model package (no {MANIFEST_NAME})", where=str(folder),
                                fix="Give the model/ folder of a run (RUN/model). " + _FIX)
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"is not valid JSON ({exc})", where=str(mpath), fix=_FIX) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelPackageError(f"is not a globalflux model manifest (format is not {FORMAT!r})",
                                where=str(mpath), fix=_FIX)
    version = manifest.get("manifest_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelPackageError(f"manifest_version {version!r} is not a positive integer",
                                where=str(mpath), fix=_FIX)
    if version > MANIFEST_VERSION:
        raise ModelPackageError(
            f"manifest_version {version} is newer than this globalflux reads "
            f"(<= {MANIFEST_VERSION}; written by globalflux {manifest.get('globalflux_version')})",
            where=str(mpath), fix="Upgrade globalflux to read this model package.")
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise ModelPackageError(f"unknown model kind {kind!r}", where=str(mpath),
                                fix=f"Known kinds: {', '.join(KINDS)}. " + _FIX)
    listed = manifest.get("payloads")
    if not isinstance(listed, dict):
        raise ModelPackageError("has no payload list", where=str(mpath), fix=_FIX)
    payloads: dict[str, bytes] = {}
    for name, entry in listed.items():
        where = str(folder / str(name))
        if not isinstance(name, str) or not _NAME.match(name) or name == MANIFEST_NAME:
            raise ModelPackageError(f"payload name {name!r} is not a plain file name",
                                    where=str(mpath), fix=_FIX)
        if Path(name).suffix not in SAFE_SUFFIXES:
            raise ModelPackageError(f"unknown payload format {Path(name).suffix!r} (safe formats: "
                                    f"{', '.join(SAFE_SUFFIXES)})", where=where, fix=_FIX)
        fpath = folder / name
        if not fpath.is_file() or fpath.is_symlink():
            raise ModelPackageError("payload listed in model.json is missing", where=where,
                                    fix=_FIX)
        data = fpath.read_bytes()
        if _looks_pickled(data):
            raise ModelPackageError("holds a pickle/joblib stream; globalflux never unpickles",
                                    where=where, fix=_FIX)
        if not isinstance(entry, dict) or len(data) != entry.get("bytes"):
            raise ModelPackageError(f"has {len(data)} bytes, model.json records "
                                    f"{entry.get('bytes') if isinstance(entry, dict) else '?'} "
                                    "(truncated or replaced)", where=where, fix=_FIX)
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ModelPackageError("sha256 does not match model.json (altered or corrupt)",
                                    where=where, fix=_FIX)
        payloads[name] = data
    for p in sorted(folder.iterdir()):
        if p.name in payloads or p.name == MANIFEST_NAME or p.name.startswith("README"):
            continue
        raise ModelPackageError("is not listed in model.json (unknown file in a model package)",
                                where=str(p), fix="Remove it. " + _FIX)
    pkg = ModelPackage(path=folder, manifest=manifest,
                       checksum=hashlib.sha256(raw).hexdigest(), payloads=payloads)
    if build:
        module, cls_name = KINDS[kind]
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except (ImportError, AttributeError) as exc:
            raise ModelPackageError(f"model kind {kind!r} needs {module}.{cls_name}, which is not "
                                    f"available here ({exc})", where=str(mpath),
                                    fix="Install the globalflux version that wrote it.") from None
        if not hasattr(cls, "from_package"):
            raise ModelPackageError(f"{module}.{cls_name} cannot read model packages yet",
                                    where=str(mpath),
                                    fix="Install the globalflux version that wrote it.")
        try:
            pkg.estimator = cls.from_package(manifest["model"], payloads)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelPackageError(f"model section cannot be read ({exc.__class__.__name__}: "
                                    f"{exc})", where=str(mpath), fix=_FIX) from None
        if manifest.get("applicability"):
            from ..applicability import AreaOfApplicability

            try:
                pkg.applicability = AreaOfApplicability.from_package(manifest["applicability"],
                                                                     payloads)
            except (KeyError, TypeError) as exc:
                raise ModelPackageError(f"applicability section cannot be read ({exc})",
                                        where=str(mpath), fix=_FIX) from None
    return pkg


def load_model(path: str | Path) -> Any:
    """The fitted estimator of a verified model package.

    The estimator carries its verified package as ``estimator.package_``
    (:class:`ModelPackage`: manifest, checksum, area of applicability) so that
    :func:`globalflux.mapping.map_cube` can check a cube's variables and units against it.
    """
    pkg = read_package(path)
    est = pkg.estimator
    pkg.payloads = {}
    est.package_ = pkg
    return est


# ------------------------------------------------------------------ LSTM packages


def _json_number(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def write_lstm_package(model: Any, folder: Path, *, train: Any, units: dict[str, str],
                        target: dict[str, Any], summary: pd.DataFrame, train_ids: list[str],
                        hold_ids: list[str], train_fraction: float, recipe: Any,
                        synthetic: bool) -> Path:
    """Write the fitted LSTM (or seed ensemble) as a model package (``kind: lstm``) into
    ``folder`` through :func:`write_package` (used by every LSTM workflow).

    The manifest names every driver and static with its units and its range over the training
    data (``train``: the training parts only, as the scalers saw them), the target, the daily
    time step, the median site scores per split (``summary``), the training data's checksum
    and the resolved recipe. The weights are torch state dicts (read with
    ``weights_only=True``); nothing is pickled.
    """
    base = getattr(model, "members_", [model])[0]
    drivers, statics = list(base.drivers), list(base.statics)
    roles = {**{v: "driver" for v in drivers}, **{v: "static" for v in statics}}
    inputs: list[dict[str, Any]] = []
    for v in drivers + statics:
        vals = np.asarray(train[v].values, dtype="float64").ravel()
        inputs += input_statistics(pd.DataFrame({v: vals}), units, roles)
    y = train[base.target].values
    table = train[[base.target] + drivers + statics].to_dataframe().reset_index()
    scores = {str(r["split"]): {"sites": int(r["sites"]), "median_nse": _json_number(r["nse"]),
                                "median_kge": _json_number(r["kge"]),
                                "median_r": _json_number(r["r"])}
              for r in summary.to_dict("records")}
    return write_package(
        folder, model, inputs=inputs, target=target, time_step="daily",
        training={"sha256": table_sha256(table), "n_sites": len(train_ids),
                  "n_observations": int(np.isfinite(y).sum()), "sites": list(train_ids),
                  "holdout_sites": list(hold_ids), "target_variable": str(base.target)},
        validation={"scheme": f"temporal split of each training site's observed days "
                    f"({train_fraction:.0%} train / {1 - train_fraction:.0%} test) and held-out "
                    "sites scored over their whole record", **scores},
        recipe=recipe, synthetic=synthetic,
        extra={"lstm": {"members": len(getattr(model, "members_", [model])),
                        "site_variable": str(base.target)}})
