"""The viewer in a real browser: Debian's headless Chromium driven by selenium loads the page
served by `globalflux serve` on a demo run folder, waits for the map's tiles, clicks a land
pixel and finds its series (values equal to the Zarr store's) in the panel; a screenshot is kept
in the test's tmp dir. Without chromium/chromedriver the test skips locally and fails in CI
(`.ci/run` installs them with apt)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _serve_helpers import land_pixel, serving

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if _in_ci():
            pytest.fail(msg + "; .ci/run must install them")
        pytest.skip(msg)
    pytest.importorskip("rio_tiler")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.add_argument("--window-size=1400,860")
    opts.binary_location = CHROMIUM
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()



def _wait(driver, script: str, timeout: float = 60.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script), what)


def _wait_for_tiles(driver) -> None:
    _wait(driver, "return document.body.getAttribute('data-ready') === 'true' && "
          "document.querySelectorAll('.gf-data img.leaflet-tile-loaded').length > 0 && "
          "document.querySelectorAll('.gf-data img:not(.leaflet-tile-loaded)').length === 0",
          what="map tiles")


def test_page_shows_the_map_and_a_clicked_land_pixel_series(driver, demo_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    store = demo_run / "maps" / "rh.zarr"
    r, c, lon, lat = land_pixel(store)
    rh = xr.open_zarr(store)["rh"].values
    with serving(["serve", str(demo_run), "--port", "0"]) as (url, _proc):
        driver.get(url)
        _wait_for_tiles(driver)
        # the page: SYNTHETIC label, a layer chooser with units, a period slider, a legend
        assert driver.find_element(By.ID, "synthetic").is_displayed()
        assert driver.find_element(By.ID, "synthetic").text == "SYNTHETIC"
        options = [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#layer option")]
        assert any(o.startswith("rh: heterotrophic respiration") and "[g m-2 d-1]" in o
                   for o in options)
        assert any(o.startswith("zone:") for o in options)
        slider = driver.find_element(By.ID, "time")
        assert int(slider.get_attribute("max")) == rh.shape[0] - 1
        legend = driver.find_element(By.ID, "legend").text
        assert "g m-2 d-1" in legend and "heterotrophic respiration" in legend
        # tiles of the data layer really are images served by us, with pixels drawn
        n_tiles = driver.execute_script(
            "return Array.from(document.querySelectorAll('.gf-data img.leaflet-tile-loaded'))"
            ".filter(function (i) { return i.naturalWidth === 256 &&"
            " i.src.indexOf(location.origin + '/tiles/rh/rh/') === 0; }).length;")
        assert n_tiles >= 1
        if "aoa" in xr.open_zarr(store):  # the applicability overlay is on, with its own tiles
            assert driver.find_element(By.ID, "aoa").is_displayed()
            assert driver.find_element(By.ID, "aoa").is_selected()
            _wait(driver, "return Array.from(document.querySelectorAll('img.leaflet-tile-loaded'))"
                  ".some(function (i) { return i.src.indexOf('style=outside') > 0; });",
                  what="applicability overlay tiles")
            assert "outside the area of applicability" in driver.find_element(By.ID, "legend").text

        # move to period 10 with the slider's keyboard, then click the land pixel
        slider.click()
        driver.execute_script("arguments[0].value = 10;"
                              "arguments[0].dispatchEvent(new Event('input'));", slider)
        _wait_for_tiles(driver)
        assert driver.execute_script("return window.gfViewer.t;") == 10
        el = driver.find_element(By.ID, "map")
        pt = driver.execute_script(
            "var p = window.gfViewer.map.latLngToContainerPoint([arguments[1], arguments[0]]);"
            "return [p.x, p.y];", lon, lat)
        w, h = el.size["width"], el.size["height"]
        ActionChains(driver).move_to_element_with_offset(
            el, int(round(pt[0] - w / 2)), int(round(pt[1] - h / 2))).click().perform()
        _wait(driver, "var s = document.getElementById('series');"
              "return s.getAttribute('data-state') === 'ready' || "
              "s.getAttribute('data-state') === 'error';", what="series panel")
        panel = driver.find_element(By.ID, "series")
        assert panel.get_attribute("data-state") == "ready", panel.text
        assert int(panel.get_attribute("data-count")) == rh.shape[0]
        got = driver.execute_script("var s = window.gfViewer.series;"
                                    "return [s.row, s.col, s.values];")
        assert (got[0], got[1]) == (r, c)
        np.testing.assert_array_equal(np.float32(got[2]), rh[:, r, c])
        shown = driver.find_element(By.ID, "series-value").text
        assert shown.endswith("g m-2 d-1")
        assert float(shown.split()[0]) == pytest.approx(float(rh[10, r, c]), rel=1e-3)
        assert "2020-03-21" in panel.text  # the period of step 10 (8-day periods from Jan 1)
        assert driver.find_elements(By.CSS_SELECTOR, "#series-chart path")
        if "rh_sd" in xr.open_zarr(store):  # the uncertainty band is drawn and quoted
            assert driver.find_elements(By.CSS_SELECTOR, "#series-chart polygon.band")
            assert "band " in panel.text and "standard deviation" in panel.text
        # a click on the chart's left end moves the period slider to the first period
        chart = driver.find_element(By.ID, "series-chart")
        ActionChains(driver).move_to_element_with_offset(
            chart, -chart.size["width"] // 2 + 56, 0).click().perform()
        _wait(driver, "return window.gfViewer.t === 0;", timeout=10, what="chart click")
        assert slider.get_attribute("value") == "0"
        assert float(driver.find_element(By.ID, "series-value").text.split()[0]) == \
            pytest.approx(float(rh[0, r, c]), rel=1e-3)
        # switching the layer keeps the point and shows that layer's value there
        driver.execute_script("var s = document.getElementById('layer'); s.value = 'rh/zone';"
                              "s.dispatchEvent(new Event('change'));")
        _wait(driver, "var s = window.gfViewer.series; return s && s.layer === 'rh/zone' && "
              "document.getElementById('series').getAttribute('data-state') === 'ready';",
              what="zone series")
        zone = xr.open_zarr(store)["zone"].values[r, c]
        assert driver.find_element(By.ID, "series-value").text.split()[0] == str(int(zone))
        time.sleep(0.3)
        shot = tmp_path / "viewer.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
        errors = [e for e in logs if e.get("level") == "SEVERE"]
        assert not errors, errors
