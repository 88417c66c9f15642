"""A deterministic mapping job for the resume and distributed tests (importable and a script).

``python tests/_mapjob.py STORE [--scheduler ADDR] [--resume] [--local N]`` maps a seeded cube
with a seeded RandomForestRegressor into STORE with :func:`globalflux.mapping.map_to_store`.
Everything is seeded, so two runs give the same bytes.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import xarray as xr

SHAPE = (4, 48, 64)  # time, y, x
CHUNKS = {"time": 1, "y": 12, "x": 16}  # 4 x 4 x 4 = 64 blocks
FEATURES = ["a", "b", "c"]


def make_inputs():
    from sklearn.ensemble import RandomForestRegressor

    nt, ny, nx = SHAPE
    rng = np.random.default_rng(7)
    ds = xr.Dataset(
        {
            "a": (("time", "y", "x"), rng.normal(size=(nt, ny, nx))),
            "b": (("y", "x"), rng.normal(size=(ny, nx))),
            "c": (("time",), np.linspace(-1, 1, nt)),
        },
        coords={"time": np.array(["2020-01-01", "2020-01-09", "2020-01-17", "2020-01-25"],
                                 dtype="datetime64[ns]"),
                "y": 60.0 - 0.5 * np.arange(ny) - 0.25, "x": -10.0 + 0.5 * np.arange(nx) + 0.25},
    )
    import rioxarray  # noqa: F401

    ds = ds.rio.write_crs("EPSG:4326")
    land = xr.DataArray(rng.random((ny, nx)) > 0.2, dims=("y", "x"),
                        coords={"y": ds.y, "x": ds.x})
    land[:12, :16] = False
    X = rng.normal(size=(400, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + np.sin(3 * X[:, 0])
    est = RandomForestRegressor(n_estimators=60, random_state=0, n_jobs=1).fit(X, y)
    return ds, land, est


def pieces(ds, land, est):
    from globalflux.mapping import apply_to_cube

    lazy = ds.chunk(CHUNKS)
    rh = apply_to_cube(est, lazy, FEATURES, mask=land, as_frame=False, name="rh")
    rh.attrs.update(units="g C m-2 d-1", long_name="test prediction")
    zone = (lazy["b"] > 0).astype("int16").where(land, -1).astype("int16").rename("zone")
    zone.encoding["_FillValue"] = -1
    return {"rh": rh, "zone": zone}


ATTRS = {"title": "mapjob", "recipe": "name: mapjob\nworkflow: test\n", "synthetic": "true"}


def run(store, client=None, resume=False):
    from globalflux.mapping import map_to_store

    ds, land, est = make_inputs()
    import datetime

    attrs = dict(ATTRS, history=f"{datetime.datetime.now().isoformat()} mapjob")
    return map_to_store(client, pieces(ds, land, est), store, attrs=attrs, mask=land,
                        resume=resume, progress=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--scheduler", default=None)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    client = None
    if a.scheduler:
        from globalflux.cluster import connect

        client, _ = connect(a.scheduler, timeout=10)
    try:
        run(a.store, client, a.resume)
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
