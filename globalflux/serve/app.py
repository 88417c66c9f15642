"""The viewer's HTTP server (tornado): one page, its static files, and a small JSON/PNG API.

Routes (all GET)
----------------
``/``                                   the page (``static/index.html``)
``/static/<file>``                      the page's JavaScript/CSS and the vendored Leaflet
``/api/run``                            run metadata: title, SYNTHETIC flag, bbox, stores with
                                        their periods, layers with units, long name, time axis,
                                        colour scale, uncertainty band and applicability layer
``/api/series?layer=S/V&lon=X&lat=Y``   the layer's values at the pixel holding (lon, lat), one
                                        per period, with the band (read from the Zarr store)
``/tiles/S/V/T/Z/X/Y.png[?style=outside]``  a 256 px Web Mercator tile of layer ``S/V`` at time
                                        label ``T`` (``static`` for a map without time)

Every bad request gets a 4xx status and a JSON body ``{"error": "...", "status": N}``: an unknown
layer, time step or route (404), a point off the map, a tile outside the zoom grid or a value
that is not a number (400), a tile with no pixel of the map (404), a static path outside the
static folder (403/404), another method (405), or a Host header that is not this machine's (403,
which stops DNS-rebinding pages from reading the API). No traceback is ever sent; an unexpected
error gives 500 with the exception's class name and is logged. Only files listed when the server
started (the run's stores and COGs, the package's static files) are ever read.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ..errors import DataError, GlobalfluxError, GridError
from . import DEFAULT_PORT
from .index import SAFE_NAME, RunIndex, open_run
from .render import TileOutside, point_series, render_tile

__all__ = ["make_app", "serve", "STATIC_DIR", "DEFAULT_PORT"]

log = logging.getLogger("globalflux")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'")


class _ApiError(tornado.web.HTTPError):
    """A bad request: the status line keeps the standard reason, the JSON body has ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


class _BaseHandler(tornado.web.RequestHandler):
    """JSON errors, a Host check and safe headers for every route."""

    def initialize(self, index: RunIndex | None = None) -> None:
        self.index = index

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("Referrer-Policy", "no-referrer")

    def prepare(self) -> None:
        allowed = self.settings.get("allowed_hosts")
        if allowed is not None and self.request.host_name.lower() not in allowed:
            raise _ApiError(403, "host not allowed: the viewer answers requests to "
                                 "127.0.0.1/localhost only")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info is not None:
            exc = exc_info[1]
            if isinstance(exc, _ApiError):
                message = exc.message
            elif isinstance(exc, tornado.web.HTTPError):
                message = exc.reason or message
                if status_code == 403 and message == "Forbidden":
                    message = "forbidden: not a file inside the static folder"
            elif status_code >= 500:
                message = (f"internal error ({exc.__class__.__name__}); see the server's log and "
                           "report it")
        self.clear_header("Content-Type")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": str(message), "status": status_code}))

    def fail(self, status: int, message: str) -> None:
        raise _ApiError(status, _one_line(message))

    def send_json(self, obj: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj, allow_nan=False))

    async def in_thread(self, fn, *args, **kwargs):
        """Run blocking reads (Zarr, GDAL) in the server's thread pool."""
        pool = self.settings["pool"]
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kwargs))

    def layer_or_404(self, layer_id: str):
        if not layer_id:
            self.fail(400, "layer: missing. Give layer=STORE/VAR (see /api/run).")
        try:
            return self.index.layer(layer_id)
        except DataError as exc:
            self.fail(404, str(exc))


def _one_line(text: str) -> str:
    """A message on one line, at most 1000 characters."""
    return " ".join(str(text).split())[:1000]


def _number(handler: _BaseHandler, name: str, text: str | None) -> float:
    if text is None:
        handler.fail(400, f"{name}: missing. Give {name}=<decimal number>.")
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        handler.fail(400, f"{name}: {text!r} is not a finite number. Give a decimal number.")
    return v


def _integer(handler: _BaseHandler, name: str, text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        handler.fail(400, f"tile {name}: {text!r} is not a non-negative integer.")
    return int(text)


class PageHandler(_BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC_DIR / "index.html").read_bytes())


class StaticHandler(tornado.web.StaticFileHandler, _BaseHandler):
    """The package's static files; tornado refuses paths leaving the folder (403)."""

    def initialize(self, path: str, default_filename: str | None = None) -> None:  # type: ignore[override]
        super().initialize(path, default_filename)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


class RunHandler(_BaseHandler):
    def get(self) -> None:
        self.send_json(self.settings["metadata"])


class SeriesHandler(_BaseHandler):
    async def get(self) -> None:
        layer = self.layer_or_404(self.get_query_argument("layer", ""))
        lon = _number(self, "lon", self.get_query_argument("lon", None))
        lat = _number(self, "lat", self.get_query_argument("lat", None))
        try:
            out = await self.in_thread(point_series, self.index, layer, lon, lat)
        except GridError as exc:
            self.fail(400, str(exc))
        self.send_json(out)


class TileHandler(_BaseHandler):
    async def get(self, store: str, var: str, t: str, z: str, x: str, y: str) -> None:
        if not (SAFE_NAME.match(store) and SAFE_NAME.match(var) and SAFE_NAME.match(t)):
            self.fail(404, f"unknown layer {store}/{var} or time {t!r}")
        layer = self.layer_or_404(f"{store}/{var}")
        zi, xi, yi = _integer(self, "z", z), _integer(self, "x", x), _integer(self, "y", y)
        style = self.get_query_argument("style", "colour")
        try:
            png = await self.in_thread(render_tile, self.index, layer, t, zi, xi, yi, style=style)
        except GridError as exc:
            self.fail(400, str(exc))
        except DataError as exc:
            self.fail(404 if "time" in (exc.where or "") else 400, str(exc))
        except TileOutside as exc:
            self.fail(404, str(exc))
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "max-age=300")
        self.finish(png)


class NotFoundHandler(_BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        self.fail(404, f"no such route {self.request.path!r}; see / for the viewer, /api/run "
                       "for the API")


def make_app(index: RunIndex, *, host: str = "127.0.0.1", workers: int = 4) -> tornado.web.Application:
    """The tornado Application serving ``index`` (see the module docstring for the routes)."""
    # bound to loopback: only loopback Host headers (a DNS-rebinding page cannot read the API);
    # bound to another address on purpose: the user chose to reach it by any name
    allowed = set(_LOOPBACK) if host in _LOOPBACK else None
    seg = r"([^/]+)"
    return tornado.web.Application(
        [
            (r"/", PageHandler, {"index": index}),
            (r"/static/(.*)", StaticHandler, {"path": str(STATIC_DIR)}),
            (r"/api/run", RunHandler, {"index": index}),
            (r"/api/series", SeriesHandler, {"index": index}),
            (rf"/tiles/{seg}/{seg}/{seg}/{seg}/{seg}/([^/]+)\.png", TileHandler, {"index": index}),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args={"index": index},
        metadata=index.metadata(),
        pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="globalflux-serve"),
        allowed_hosts=allowed,
        serve_traceback=False,
        compress_response=True,
    )


def _bind(host: str, port: int) -> list:
    """Listening sockets on ``host:port``; a taken port or a foreign address is a bad input."""
    try:
        return bind_sockets(port, address=host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise GlobalfluxError(f"address {host}:{port} is already in use", where="--port",
                                  fix="Choose another port with --port, or --port 0 for a free "
                                  "one.") from None
        raise GlobalfluxError(f"cannot bind {host}:{port} ({exc.strerror})", where="--host",
                              fix="Use --host 127.0.0.1 or an address of this machine.") from None


def serve(path: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          out=sys.stdout) -> int:
    """Serve the viewer of a run folder (or store) until interrupted; returns 0.

    Parameters
    ----------
    path
        A run folder written by ``globalflux run`` (its ``maps/*.zarr`` and ``maps/cog``), its
        ``maps/`` folder, or one ``.zarr`` store.
    host
        Address to bind; ``127.0.0.1`` (this machine only) by default. The viewer has no
        authentication: bind another address only on a network you trust.
    port
        TCP port; 0 picks a free one. The URL is printed once the server listens.

    Raises
    ------
    InputFileError
        The path holds no map store. ``GlobalfluxError``: the port is taken.
    """
    if not Path(path).expanduser().exists():  # the cheap checks first, then the port
        open_run(path)
    sockets = _bind(host, port)  # a taken port fails before the (longer) indexing
    try:
        t0 = time.perf_counter()
        index = open_run(path)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    log.info("serve: indexed %d store(s), %d layer(s) in %.1f s", len(index.stores),
             len(index.layers), time.perf_counter() - t0)
    if host not in _LOOPBACK:
        log.warning("serve: binding %s makes the viewer (no authentication) reachable from other "
                    "machines", host)

    async def main() -> None:
        app = make_app(index, host=host)
        server = HTTPServer(app, xheaders=False)
        server.add_sockets(sockets)
        bound = sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        print(f"globalflux: serving {index.root} ({len(index.layers)} layers) at "
              f"http://{shown}:{bound[1]}/  (Ctrl-C stops)", file=out, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a service manager: stop cleanly
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                pass  # not the main thread, or a platform without them: Ctrl-C still interrupts
        try:
            await stop.wait()
        finally:
            server.stop()
            app.settings["pool"].shutdown(wait=False, cancel_futures=True)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    print("globalflux: viewer stopped", file=out, flush=True)
    return 0
