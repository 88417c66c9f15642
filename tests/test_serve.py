"""`globalflux serve` on a demo run folder over HTTP on 127.0.0.1: the page, tiles that show the
store's values where they are, point series equal to the Zarr store, and 4xx JSON for every bad
request; plus the layer index on stores with an uncertainty band and an applicability layer."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _serve_helpers import land_pixel, serving, tiny_demo_args

pytest.importorskip("rio_tiler", reason="pip install 'globalflux[serve]'")
pytest.importorskip("tornado")



@pytest.fixture(scope="module")
def server(demo_run):
    with serving(["serve", str(demo_run), "--port", "0"]) as (url, _proc):
        yield url


def _get(url: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET ``path`` sent exactly as written (no normalisation of ``..``)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _json(url: str, path: str):
    status, headers, body = _get(url, path)
    assert status == 200, (path, status, body[:300])
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


def _png(body: bytes) -> np.ndarray:
    from PIL import Image

    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


# ----------------------------------------------------------------------------------- page


def test_page_and_vendored_leaflet_are_served_and_nothing_comes_from_a_cdn(server):
    status, headers, body = _get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "/static/vendor/leaflet/leaflet.js" in page and "/static/viewer.js" in page
    for path in ("/static/vendor/leaflet/leaflet.js", "/static/vendor/leaflet/leaflet.css",
                 "/static/viewer.js", "/static/viewer.css", "/static/vendor/leaflet/LICENSE",
                 "/static/vendor/leaflet/images/marker-icon.png"):
        status, _, content = _get(server, path)
        assert status == 200 and len(content) > 100, path
        if path.endswith((".js", ".css")) and "vendor" not in path:
            assert "http://" not in content.decode() and "https://" not in content.decode(), path
    assert "http" not in page.replace("http-equiv", "")
    # the page may load scripts only from this server
    assert "script-src 'self'" in headers["content-security-policy"]


def test_run_metadata_lists_every_map_variable_with_units_time_axis_and_synthetic(server, demo_run):
    meta = _json(server, "/api/run")
    assert meta["synthetic"] is True and "SYNTHETIC" in meta["title"]
    assert "SYNTHETIC" in meta["note"]
    rh = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    layers = {lay["id"]: lay for lay in meta["layers"]}
    for store in ("rh", "predictors"):
        ds = xr.open_zarr(demo_run / "maps" / f"{store}.zarr")
        for name, da in ds.data_vars.items():
            if {"y", "x"} <= set(da.dims):
                lay = layers[f"{store}/{name}"]
                assert lay["units"] == da.attrs["units"]
                assert lay["long_name"] == da.attrs["long_name"]
    lay = layers["rh/rh"]
    assert meta["default_layer"] == "rh/rh"
    assert lay["times"] == [f"{t:%Y-%m-%d}" for t in pd.DatetimeIndex(rh["time"].values)]
    assert lay["source"] == "cog"  # the demo's COGs hold the same pixels
    assert lay["kind"] == "continuous" and lay["vmin"] < lay["vmax"]
    assert len(lay["stops"]) > 2 and lay["units"] == "g m-2 d-1"
    if "rh_sd" in rh:  # the demo maps the trees' spread and the area of applicability
        assert lay["band"] == {"kind": "spread", "lo": "rh_sd", "hi": "rh_sd",
                               "label": "±1 " + rh["rh_sd"].attrs["long_name"]}
    if "aoa" in rh:
        assert lay["aoa"] == "rh/aoa" and layers["rh/aoa"]["is_aoa"]
        assert layers["rh/aoa"]["static"] is ("time" not in rh["aoa"].dims)
    assert layers["rh/zone"]["kind"] == "categorical"
    assert [c["value"] for c in layers["rh/zone"]["categories"]] == [0, 1, 2, 3]
    assert layers["rh/zone"]["static"] is True and layers["rh/zone"]["times"] == ["static"]
    x, y = rh["x"].values, rh["y"].values
    dx = abs(x[1] - x[0])
    np.testing.assert_allclose(meta["bbox"], [x.min() - dx / 2, y.min() - dx / 2,
                                              x.max() + dx / 2, y.max() + dx / 2], atol=1e-9)


# ----------------------------------------------------------------------------------- tiles


def _tile_pixel(lon: float, lat: float, z: int) -> tuple[int, int, int, int]:
    """Tile x, y and the pixel (column, row) of (lon, lat) in it (morecantile does the maths)."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(lon, lat, z)
    b = tms.xy_bounds(t)
    mx, my = tms.xy(lon, lat)
    col = int((mx - b.left) / (b.right - b.left) * 256)
    row = int((b.top - my) / (b.top - b.bottom) * 256)
    return t.x, t.y, col, row


def test_tile_is_a_png_coloured_by_the_store_value_over_land(server, demo_run):
    from matplotlib import colormaps

    meta = _json(server, "/api/run")
    lay = next(x for x in meta["layers"] if x["id"] == "rh/rh")
    r, c, lon, lat = land_pixel(demo_run / "maps" / "rh.zarr")
    rh = xr.open_zarr(demo_run / "maps" / "rh.zarr")["rh"]
    ti = 20
    z = 12  # ~38 m tile pixels: the 500 m map pixel covers many, so its centre is unambiguous
    tx, ty, pc, pr = _tile_pixel(lon, lat, z)
    status, headers, body = _get(server, f"/tiles/rh/rh/{lay['times'][ti]}/{z}/{tx}/{ty}.png")
    assert status == 200 and headers["content-type"] == "image/png"
    img = _png(body)
    assert img.shape == (256, 256, 4)
    opaque = img[..., 3] > 0
    assert opaque.mean() > 0.5  # the tile lies over land
    assert len(np.unique(img[opaque][:, :3], axis=0)) > 5  # not one flat colour
    v = float(rh.values[ti, r, c])
    frac = np.clip((v - lay["vmin"]) / (lay["vmax"] - lay["vmin"]), 0, 1)
    expect = np.array(colormaps["viridis"](frac)[:3]) * 255
    got = img[pr, pc, :3].astype(float)
    assert img[pr, pc, 3] == 255
    assert np.abs(got - expect).max() <= 6, (got, expect, v)


def test_static_categorical_and_predictor_tiles_come_from_the_zarr_store(server):
    meta = _json(server, "/api/run")
    bbox = meta["bbox"]
    lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    tx, ty, _, _ = _tile_pixel(lon, lat, 8)
    status, _, body = _get(server, f"/tiles/rh/zone/static/8/{tx}/{ty}.png")
    assert status == 200
    img = _png(body)
    colours = {tuple(p) for p in img[img[..., 3] > 0][:, :3]}
    zone_colours = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))
                    for h in (c["color"] for lay in meta["layers"] if lay["id"] == "rh/zone"
                              for c in lay["categories"])}
    assert colours and colours <= zone_colours  # categories only, no blends
    assert len(colours) >= 2
    t = next(x for x in meta["layers"] if x["id"] == "predictors/gpp")["times"][5]
    status, _, body = _get(server, f"/tiles/predictors/gpp/{t}/8/{tx}/{ty}.png")
    assert status == 200 and (_png(body)[..., 3] > 0).any()


# ----------------------------------------------------------------------------------- series


def test_point_series_equals_the_zarr_store_at_that_pixel(server, demo_run):
    r, c, lon, lat = land_pixel(demo_run / "maps" / "rh.zarr")
    ds = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    # a click anywhere inside the pixel (not only its centre) reads that pixel
    dx = abs(float(ds["x"][1] - ds["x"][0]))
    s = _json(server, f"/api/series?layer=rh/rh&lon={lon + 0.4 * dx}&lat={lat - 0.4 * dx}")
    assert (s["row"], s["col"]) == (r, c)
    assert s["x"] == pytest.approx(lon) and s["y"] == pytest.approx(lat)
    expect = ds["rh"].values[:, r, c]
    got = np.array(s["values"], dtype="float64")
    assert np.isfinite(expect).all()
    np.testing.assert_array_equal(got.astype("float32"), expect)
    assert [p["label"] for p in s["periods"]] == [f"{t:%Y-%m-%d}" for t in
                                                  pd.DatetimeIndex(ds["time"].values)]
    assert s["units"] == "g m-2 d-1"
    if "rh_sd" in ds:  # the demo maps the trees' spread: the band is rh +- rh_sd
        sd = ds["rh_sd"].values[:, r, c].astype("float64")
        np.testing.assert_allclose(s["band"]["lo"], expect.astype("float64") - sd)
        np.testing.assert_allclose(s["band"]["hi"], expect.astype("float64") + sd)
    if "aoa" in ds:
        assert s["aoa"] == [None if np.isnan(a) else float(a) for a in ds["aoa"].values[:, r, c]]
        assert s["layer"] == "rh/rh" and "di" not in s["context"]  # time-varying: its own layer
    assert s["context"]["zone"]["value"] == float(ds["zone"].values[r, c])
    assert s["context"]["land_mask"]["label"] == "land"


def test_point_series_over_the_sea_is_empty_not_an_error(server, demo_run):
    ds = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    sea = np.argwhere(~ds["land_mask"].values.astype(bool))
    if not len(sea):
        pytest.skip("this world has no sea pixel")
    r, c = sea[0]
    s = _json(server, f"/api/series?layer=rh/rh&lon={float(ds['x'][c])}&lat={float(ds['y'][r])}")
    assert all(v is None for v in s["values"])


# ----------------------------------------------------------------------------------- errors


BAD = [
    ("/tiles/rh/nope/2020-01-01/8/135/89.png", 404, "unknown layer"),
    ("/tiles/nope/rh/2020-01-01/8/135/89.png", 404, "unknown layer"),
    ("/tiles/rh/rh/2031-01-01/8/135/89.png", 404, "not on the time axis"),
    ("/tiles/rh/rh/static/8/135/89.png", 404, "not on the time axis"),
    ("/tiles/rh/rh/2020-01-01/8/x/89.png", 400, "not a non-negative integer"),
    ("/tiles/rh/rh/2020-01-01/8/-1/89.png", 400, "not a non-negative integer"),
    ("/tiles/rh/rh/2020-01-01/31/0/0.png", 400, "zoom 31"),
    ("/tiles/rh/rh/2020-01-01/8/999/89.png", 400, "outside the zoom 8 grid"),
    ("/tiles/rh/rh/2020-01-01/8/0/0.png", 404, "holds no pixel"),
    ("/tiles/rh/rh/2020-01-01/8/135/89.png?style=bogus", 400, "unknown style"),
    ("/api/series?layer=rh/nope&lon=10.5&lat=47.9", 404, "unknown layer"),
    ("/api/series?layer=rh/rh&lon=120&lat=47.9", 400, "off the map"),
    ("/api/series?layer=rh/rh&lon=abc&lat=47.9", 400, "not a finite number"),
    ("/api/series?layer=rh/rh&lon=inf&lat=47.9", 400, "not a finite number"),
    ("/api/series?layer=rh/rh&lon=10.5", 400, "lat: missing"),
    ("/api/series?lon=10.5&lat=47.9", 400, "layer: missing"),
    ("/static/../../../../../../etc/passwd", 403, "not a file inside the static folder"),
    ("/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", 403, "not a file inside the static folder"),
    ("/static/vendor/../../app.py", 403, "not a file inside the static folder"),
    ("/static/%2e%2e/%2e%2e/index.py", 403, "not a file inside the static folder"),
    ("/static/nothing-here.js", 404, "Not Found"),
    ("/static/vendor", 403, "not a file inside the static folder"),
    ("/../../etc/passwd", 404, "no such route"),
    ("/tiles/..%2f..%2fmaps/rh/2020-01-01/8/135/89.png", 404, "unknown layer"),
    ("/api/nothing", 404, "no such route"),
]


@pytest.mark.parametrize(("path", "status", "words"), BAD)
def test_bad_requests_get_a_4xx_json_message_never_a_traceback_or_a_file(server, path, status,
                                                                         words):
    got, headers, body = _get(server, path)
    assert got == status, (path, got, body[:300])
    assert headers["content-type"].startswith("application/json")
    msg = json.loads(body)
    assert words in msg["error"] and msg["status"] == status
    text = body.decode()
    assert "Traceback" not in text and "root:" not in text and "import " not in text


def test_other_methods_and_foreign_host_headers_are_refused(server):
    u = urllib.parse.urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/api/run", body=b"{}")
    r = conn.getresponse()
    assert r.status == 405 and "error" in json.loads(r.read())
    conn.close()
    # a page on another site that rebinds its DNS name to 127.0.0.1 cannot read the API
    status, _, body = _get(server, "/api/run", headers={"Host": "evil.example:80"})
    assert status == 403 and "host" in json.loads(body)["error"]
    assert _get(server, "/api/run", headers={"Host": f"localhost:{u.port}"})[0] == 200


# ------------------------------------------------------------------ layers of other stores


def _band_store(demo_run: Path, tmp_path: Path) -> Path:
    """A run folder whose map store carries an uncertainty band (SD and quantiles) and an AOA
    layer, written by the same store writer as the pipeline (values derived from the demo)."""
    from globalflux.io.store import write_dataset

    src = xr.open_zarr(demo_run / "maps" / "rh.zarr").load()
    out = tmp_path / "run"
    (out / "maps").mkdir(parents=True)
    rh = src["rh"]
    sd = (0.1 * rh + 0.01).astype("float32").assign_attrs(
        units=rh.attrs["units"], long_name="standard deviation across trees")
    west = xr.DataArray(np.arange(src.sizes["x"]) < src.sizes["x"] // 2, dims="x")
    aoa = west.astype("float32").where(src["land_mask"]).assign_attrs(  # NaN off land
        long_name="inside the area of applicability (1) or outside (0)", units="1",
        flag_values="0 1", flag_meanings="outside inside")
    ds = xr.Dataset({"rh": rh, "rh_sd": sd, "aoa": aoa, "land_mask": src["land_mask"]},
                    attrs=src.attrs)
    ds = ds.rio.write_crs("EPSG:4326")
    write_dataset(ds, out / "maps" / "rh.zarr")
    q = xr.Dataset({"rh": rh, "rh_q05": (rh * 0.8).assign_attrs(rh.attrs),
                    "rh_q95": (rh * 1.3).assign_attrs(rh.attrs)}, attrs=src.attrs)
    write_dataset(q.rio.write_crs("EPSG:4326"), out / "maps" / "rhq.zarr")
    return out


def test_uncertainty_band_and_applicability_overlay_when_the_store_has_them(demo_run, tmp_path):
    from globalflux.serve.index import open_run
    from globalflux.serve.render import OUTSIDE_AOA, point_series, render_tile

    run = _band_store(demo_run, tmp_path)
    index = open_run(run)
    meta = index.metadata()
    lay = index.layer("rh/rh")
    assert lay.band is not None and lay.band.kind == "spread" and lay.band.lo == "rh_sd"
    assert lay.aoa == "aoa" and index.layer("rh/aoa").is_aoa
    assert meta["default_layer"] in ("rh/rh", "rhq/rh")
    assert index.layer("rhq/rh").band.to_json() == {
        "kind": "interval", "lo": "rh_q05", "hi": "rh_q95", "label": "5th-95th percentile"}
    assert not lay.cogs  # no COG holds these pixels: tiles come from the Zarr store
    ds = xr.open_zarr(run / "maps" / "rh.zarr")
    r, c, lon, lat = land_pixel(run / "maps" / "rh.zarr")
    s = point_series(index, lay, lon, lat)
    v = ds["rh"].values[:, r, c].astype("float64")
    sd = ds["rh_sd"].values[:, r, c].astype("float64")
    np.testing.assert_allclose(s["band"]["lo"], v - sd)
    np.testing.assert_allclose(s["band"]["hi"], v + sd)
    assert s["aoa"] == float(ds["aoa"].values[r, c])
    sq = point_series(index, index.layer("rhq/rh"), lon, lat)
    q = xr.open_zarr(run / "maps" / "rhq.zarr")
    np.testing.assert_array_equal(np.float32(sq["band"]["lo"]), q["rh_q05"].values[:, r, c])
    np.testing.assert_array_equal(np.float32(sq["band"]["hi"]), q["rh_q95"].values[:, r, c])
    # the overlay greys the land pixels outside the AOA (the eastern half), nothing else
    land = ds["land_mask"].values.astype(bool)
    nx = land.shape[1]
    rows, cols = np.nonzero(land)
    for want_grey, pick in ((False, cols < nx // 2 - 2), (True, cols > nx // 2 + 1)):
        k = np.nonzero(pick)[0][len(np.nonzero(pick)[0]) // 2]
        plon, plat = float(ds["x"][cols[k]]), float(ds["y"][rows[k]])
        tx, ty, pc, pr = _tile_pixel(plon, plat, 12)
        img = _png(render_tile(index, index.layer("rh/aoa"), "static", 12, tx, ty,
                               style="outside"))
        assert tuple(img[pr, pc]) == (OUTSIDE_AOA if want_grey else (0, 0, 0, 0))[:4] or (
            not want_grey and img[pr, pc, 3] == 0), (want_grey, img[pr, pc])
        assert set(np.unique(img[..., 3])) <= {0, OUTSIDE_AOA[3]}


def test_a_single_store_can_be_served_and_finds_its_cogs(demo_run):
    from globalflux.serve.index import open_run

    index = open_run(demo_run / "maps" / "rh.zarr")
    assert list(index.stores) == ["rh"] and index.root == demo_run.resolve()
    assert index.layer("rh/rh").cogs and index.synthetic


# ------------------------------------------------------------------------------------- CLI


def test_serve_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from globalflux.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: not found" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["serve", str(empty), "--port", "0"]) == 2
    assert "holds no Zarr map store" in capsys.readouterr().err
    assert main(["serve", str(empty), "--port", "70000"]) == 2
    assert "--port: port 70000 is not in 0..65535" in capsys.readouterr().err


def test_serve_on_a_taken_port_exits_2(demo_run, capsys):
    from globalflux.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", str(demo_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port: address 127.0.0.1:{port} is already in use" in err and "--port 0" in err


def test_run_serve_is_off_by_default():
    from globalflux.cli import build_parser

    args = build_parser().parse_args(["run", "recipes/demo.yaml"])
    assert args.serve is False


@pytest.mark.slow
def test_run_with_serve_starts_the_viewer_on_the_new_run_folder(tmp_path):
    out = tmp_path / "demo"
    args = [*tiny_demo_args(out), "--serve", "--serve-port", "0"]
    with serving(args) as (url, proc):
        meta = _json(url, "/api/run")
        assert meta["run"] == "demo" and meta["synthetic"] is True
        assert (out / "report.md").is_file()
    assert proc.returncode == 0  # SIGTERM stops the viewer cleanly
    assert "globalflux: viewer stopped" in proc.stdout.read()
    shutil.rmtree(out)


def test_band_and_category_detection_is_generic_over_variable_names():
    from globalflux.serve.index import _categories, _find_band, _is_aoa

    z = np.zeros((2, 3), dtype="float32")
    ds = xr.Dataset({n: (("y", "x"), z) for n in
                     ("efflux", "efflux_lower", "efflux_upper", "gpp", "gpp_uncertainty",
                      "nee", "nee_err", "tsoil")})
    ds["nee"].attrs["ancillary_variables"] = "nee_err"
    ds["gpp_uncertainty"].attrs["long_name"] = "GPP spread"
    names = set(ds.data_vars)
    assert _find_band("efflux", names, ds).to_json() == {
        "kind": "interval", "lo": "efflux_lower", "hi": "efflux_upper",
        "label": "efflux_lower .. efflux_upper"}
    assert _find_band("gpp", names, ds).label == "±1 GPP spread"
    assert _find_band("nee", names, ds).lo == "nee_err"
    assert _find_band("tsoil", names, ds) is None
    assert _is_aoa("aoa", ds["tsoil"]) and _is_aoa("rh_aoa", ds["tsoil"])
    assert _is_aoa("inside", ds["tsoil"].assign_attrs(long_name="Area of Applicability"))
    assert not _is_aoa("di", ds["tsoil"].assign_attrs(long_name="dissimilarity index"))
    flags = xr.DataArray(z.astype("uint8"), dims=("y", "x"),
                         attrs={"flag_values": [0, 1, 2], "flag_meanings": "a b c_d"})
    assert _categories(flags, np.zeros(4)) == ((0, "a"), (1, "b"), (2, "c d"))
    # a zone map with a non-CF flag_values text: its classes come from n_zones
    zone = xr.DataArray(z, dims=("y", "x"), attrs={"flag_values": "-1 = not labelled",
                                                   "n_zones": 3})
    zone.encoding["dtype"] = np.dtype("int16")
    assert _categories(zone, np.array([0.0, 2.0, np.nan])) == ((0, "0"), (1, "1"), (2, "2"))
    assert _categories(ds["tsoil"], np.array([0.5, 1.5])) is None  # floats: continuous


def test_cogs_serve_only_the_store_whose_grid_they_share(demo_run, tmp_path):
    from globalflux.io.store import write_dataset
    from globalflux.serve.index import open_run
    from globalflux.serve.render import point_series

    run = tmp_path / "run"
    (run / "maps").mkdir(parents=True)
    shutil.copytree(demo_run / "maps" / "cog", run / "maps" / "cog")
    shutil.copytree(demo_run / "maps" / "rh.zarr", run / "maps" / "rh.zarr")
    src = xr.open_zarr(demo_run / "maps" / "rh.zarr")
    coarse = src[["rh"]].coarsen(x=2, y=2).mean()  # a second map of the same variable
    coarse["rh"].attrs.update(src["rh"].attrs)
    coarse.attrs.update(src.attrs)
    write_dataset(coarse.rio.write_crs("EPSG:4326"), run / "maps" / "rh_coarse.zarr")
    index = open_run(run)
    assert len(index.layer("rh/rh").cogs) == src.sizes["time"]
    assert not index.layer("rh_coarse/rh").cogs  # same name and times, other grid: Zarr tiles
    _, _, lon, lat = land_pixel(run / "maps" / "rh.zarr")
    s = point_series(index, index.layer("rh_coarse/rh"), lon, lat)
    stored = xr.open_zarr(run / "maps" / "rh_coarse.zarr")["rh"]
    np.testing.assert_array_equal(np.float32(s["values"]), stored.values[:, s["row"], s["col"]])
    assert stored["x"].values[s["col"]] == pytest.approx(s["x"])
