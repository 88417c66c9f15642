"""Screenshot of `globalflux serve` on a run folder, taken with headless Chromium (Debian's
`chromium` + `chromium-driver`, driven by selenium). Made docs/viewer.png:

    python scripts/viewer_screenshot.py demo-out docs/viewer.png --time 24 --click 10.45,47.45

It starts the viewer on a free 127.0.0.1 port, waits for the map's tiles, moves the period
slider to ``--time``, clicks the pixel at ``--click`` (a land pixel near the map's centre when not
given), waits for the series panel and saves the window as PNG.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage")


def start_server(run: str | Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``globalflux serve RUN --port 0`` in a child process; returns it and the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "globalflux.cli", "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("globalflux serve did not start:\n" + "".join(lines))


def chromium(profile_dir: str | Path, size=(1400, 860)):
    """A headless Chromium driven by /usr/bin/chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir}")
    opts.add_argument(f"--window-size={size[0]},{size[1]}")
    opts.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for_map(driver, timeout: float = 60.0) -> None:
    """Until the page has read /api/run and the data layer shows loaded tiles."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return document.body.getAttribute('data-ready') === 'true' && "
        "document.querySelectorAll('.gf-data img.leaflet-tile-loaded').length > 0 && "
        "document.querySelectorAll('.gf-data img:not(.leaflet-tile-loaded)').length === 0"))


def click_lonlat(driver, lon: float, lat: float) -> None:
    """A real mouse click on the map at (lon, lat)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.ID, "map")
    pt = driver.execute_script(
        "var p = window.gfViewer.map.latLngToContainerPoint([arguments[1], arguments[0]]);"
        "return [p.x, p.y];", lon, lat)
    w, h = el.size["width"], el.size["height"]
    ActionChains(driver).move_to_element_with_offset(el, int(round(pt[0] - w / 2)),
                                                     int(round(pt[1] - h / 2))).click().perform()


def wait_for_series(driver, timeout: float = 30.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "var s = document.getElementById('series').getAttribute('data-state');"
        "return s === 'ready' || s === 'error';"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--time", type=int, default=0, help="period index to show")
    ap.add_argument("--click", default=None, metavar="LON,LAT")
    ap.add_argument("--layer", default=None, help="layer id STORE/VAR (default: the page's)")
    args = ap.parse_args(argv)
    proc, url = start_server(args.run)
    try:
        with tempfile.TemporaryDirectory() as prof:
            driver = chromium(prof)
            try:
                driver.get(url)
                wait_for_map(driver)
                if args.layer:
                    driver.execute_script("var s = document.getElementById('layer');"
                                          "s.value = arguments[0];"
                                          "s.dispatchEvent(new Event('change'));", args.layer)
                driver.execute_script("var t = document.getElementById('time'); t.value = "
                                      "arguments[0]; t.dispatchEvent(new Event('input'));",
                                      args.time)
                time.sleep(0.3)
                wait_for_map(driver)
                if args.click:
                    lon, lat = (float(v) for v in args.click.split(","))
                else:
                    b = driver.execute_script("return window.gfViewer.meta.bbox;")
                    lon, lat = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                click_lonlat(driver, lon, lat)
                wait_for_series(driver)
                time.sleep(0.5)
                driver.save_screenshot(args.out)
            finally:
                driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
