"""Training speed of the browser's JavaScript engine against ConvNetJS 0.3, in headless Chromium.

Measures samples/s of a training step (forward + backward, ``Net.accumulateGradient`` in
``browser/engine``) of the CIFAR-10 demo net at a few batch sizes, and the same for ConvNetJS 0.3
(``net.forward`` + ``net.backward`` per sample, its only mode) in the same page, and the ratio.
The two run in alternating rounds and each reports its best round, as ``bench/engine.py`` does;
with ``--numpy`` the numpy engine's figure (one BLAS thread) is printed beside them.

Needs Playwright (``pip install playwright``) and Debian's Chromium at /usr/bin/chromium
(Playwright cannot download its own browser here), and ConvNetJS from npm:
``npm ci --prefix tests/js``. Run ``python bench/browser.py --help``.

The static server and the Chromium launcher here are also what ``tests/test_browser_engine.py``
uses: a ``http.server`` in a thread on 127.0.0.1, port 0, serving ``browser/`` at ``/``,
``tests/vectors`` at ``/vectors/`` and ConvNetJS's build at ``/convnetjs/``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import statistics
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "browser"
VECTORS_DIR = ROOT / "tests" / "vectors"
CONVNETJS_DIR = ROOT / "tests" / "js" / "node_modules" / "convnetjs" / "build"
CHROMIUM = "/usr/bin/chromium"
# As root in a closed network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DEFAULT_MOUNTS: dict[str, Path] = {
    "/vectors/": VECTORS_DIR,
    "/convnetjs/": CONVNETJS_DIR,
    "/": BROWSER_DIR,
}

DEMO_NET: list[dict[str, Any]] = [
    {"type": "input", "out_sx": 32, "out_sy": 32, "out_depth": 3},
    {"type": "conv", "sx": 5, "filters": 16, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 5, "filters": 20, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "conv", "sx": 5, "filters": 20, "stride": 1, "pad": 2, "activation": "relu"},
    {"type": "pool", "sx": 2, "stride": 2},
    {"type": "softmax", "num_classes": 10},
]


# -- serving and launching -------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    mounts: Mapping[str, Path] = {}
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".json": "application/json"}

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, directory in self.mounts.items():  # longest prefixes first
            if path.startswith(prefix):
                rest = path[len(prefix):]
                parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
                return str(directory.joinpath(*parts))
        return str(Path(os.devnull))

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def serve_static(mounts: Mapping[str, Path] | None = None) -> Iterator[str]:
    """Serve directories under URL prefixes on 127.0.0.1 (port 0) in a thread; yields the base
    URL. For tests and benchmarks only: the product serves browser/ from its own server."""
    table = dict(sorted((mounts or DEFAULT_MOUNTS).items(), key=lambda kv: -len(kv[0])))
    handler = type("Handler", (_Handler,), {"mounts": table})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def browser_unavailable() -> str | None:
    """Why a headless Chromium cannot be driven here, or None if it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


@contextlib.contextmanager
def open_chromium() -> Iterator[Any]:
    """A Playwright ``Browser``: Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
