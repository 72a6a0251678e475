"""Training speed of the browser's JavaScript engine against ConvNetJS 0.3, in headless Chromium.

Measures samples/s of a training step (forward + backward, ``Net.accumulateGradient`` in
``mlitb/browser/engine``) of the CIFAR-10 demo net at a few batch sizes, and the same for ConvNetJS 0.3
(``net.forward`` + ``net.backward`` per sample, its only mode) in the same page, and the ratio.
The two run in alternating rounds and each reports its best round, as ``mlitb/bench/engine.py`` does;
with ``--numpy`` the numpy engine's figure (one BLAS thread) is printed beside them.

Needs Playwright (``pip install playwright``) and Debian's Chromium at /usr/bin/chromium
(Playwright cannot download its own browser here), and ConvNetJS from npm:
``npm ci --prefix tests/js``. Run ``python -m mlitb.bench.browser --help``.

The static server and the Chromium launcher here are also what ``tests/test_browser_engine.py``
uses: a ``http.server`` in a thread on 127.0.0.1, port 0, serving ``mlitb/browser/`` at ``/``,
``tests/vectors`` at ``/vectors/`` and ConvNetJS's build at ``/convnetjs/``.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.resources
import json
import os
import statistics
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mlitb.datasets import CIFAR10_SPEC

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/ is not in the wheel)
BROWSER_DIR = Path(str(importlib.resources.files("mlitb.browser")))
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

DEMO_NET = CIFAR10_SPEC  # the CIFAR-10 demo net of the paper (22,466 parameters)


# -- serving and launching -------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    mounts: ClassVar[Mapping[str, Path]] = {}
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
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
    URL. For tests and benchmarks only: the product serves mlitb/browser/ from its own server."""
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
def open_chromium(extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """A Playwright ``Browser``: Debian's headless Chromium (``CHROMIUM_ARGS`` + ``extra_args``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


# -- measurement in the page -----------------------------------------------------------------------
# Installs window.__bench: make(engine, batch) builds a net and a batch of random data; rate(s)
# trains on it back to back for about s seconds and returns samples/s. Engines: "mlitb" (SIMD
# products where the browser has them), "mlitb-js" (plain JavaScript), "convnetjs".
_PAGE_SETUP = """async ([spec, chunk]) => {
  const E = await import('/engine/index.js');
  const random = new E.Random(1);
  let step = null, batch = 0;
  window.__bench = {
    simd: (await import('/engine/simd.js')).supported,
    fma: (await import('/engine/simd.js')).fusedSupported,
    make(engine, n) {
      batch = n;
      const x = new Float32Array(n * 3072).map(() => random.random() - 0.5);
      const y = Int32Array.from({length: n}, (_, i) => i % 10);
      if (engine === 'convnetjs') {
        const net = new convnetjs.Net();
        net.makeLayers(JSON.parse(JSON.stringify(spec)));  // it writes into the definitions
        const vols = [];
        for (let s = 0; s < n; s++) {  // ConvNetJS's Vol is (x, y, depth): HWC
          const v = new convnetjs.Vol(32, 32, 3, 0.0);
          for (let c = 0; c < 3; c++) for (let p = 0; p < 1024; p++) v.w[p * 3 + c] = x[s * 3072 + c * 1024 + p];
          vols.push(v);
        }
        step = () => { for (let s = 0; s < n; s++) { net.forward(vols[s], true); net.backward(y[s]); } };
      } else {
        const net = new E.Net(JSON.parse(JSON.stringify(spec)), {seed: 1, chunk, simd: engine === 'mlitb'});
        step = () => net.accumulateGradient(x, y);
      }
      step();  // compile and warm
    },
    rate(seconds) {
      let samples = 0;
      const t0 = performance.now();
      let t = t0;
      while (t - t0 < seconds * 1000) { step(); samples += batch; t = performance.now(); }
      return samples / ((t - t0) / 1000);
    },
  };
  return {simd: window.__bench.simd, fma: window.__bench.fma, userAgent: navigator.userAgent};
}"""

ENGINES = ("mlitb", "mlitb-js", "convnetjs")


@dataclass
class Row:
    batch: int
    rates: dict[str, float] = field(default_factory=dict)  # engine -> best samples/s
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, a: str, b: str) -> float | None:
        return self.rates[a] / self.rates[b] if self.rates.get(a) and self.rates.get(b) else None

    def median_ratio(self, a: str, b: str) -> float | None:
        """Median over rounds of a/b measured back to back: a check on the best-of ratio."""
        if not self.rounds.get(a) or not self.rounds.get(b):
            return None
        return statistics.median(x / y for x, y in zip(self.rounds[a], self.rounds[b]))


def measure(batch_sizes: Sequence[int], seconds: float, rounds: int, engines: Sequence[str],
            chunk: int, with_numpy: bool, browser: Any = None,
            base: str | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Best samples/s per engine and batch size. Starts its own server and Chromium unless
    given a Playwright ``browser`` and the ``base`` URL of a ``serve_static()``."""
    if browser is None or base is None:
        with serve_static() as url, open_chromium() as chromium:
            return measure(batch_sizes, seconds, rounds, engines, chunk, with_numpy, chromium, url)
    env: dict[str, Any] = {"seconds": seconds, "rounds": rounds, "chunk": chunk}
    rows = [Row(batch=b) for b in batch_sizes]
    env["chromium"] = browser.version
    page = browser.new_page()
    try:
        page.goto(base + "/engine/test.html?vectors=none")  # any page of the origin will do
        if "convnetjs" in engines:
            page.add_script_tag(url=base + "/convnetjs/convnet.js")
        env.update(page.evaluate(_PAGE_SETUP, [DEMO_NET, chunk]))
        for row in rows:
            for r in range(rounds):
                # Alternate the order so a slow spell of the machine hurts every engine alike.
                order = list(engines) if r % 2 == 0 else list(reversed(engines))
                for engine in order:
                    page.evaluate("([e, n]) => window.__bench.make(e, n)", [engine, row.batch])
                    rate = page.evaluate("(s) => window.__bench.rate(s)", seconds)
                    row.rounds.setdefault(engine, []).append(rate)
            row.rates = {e: max(v) for e, v in row.rounds.items()}
    finally:
        page.close()
    if with_numpy:
        _measure_numpy(rows, seconds, rounds, env)
    return rows, env


def _measure_numpy(rows: list[Row], seconds: float, rounds: int, env: dict[str, Any]) -> None:
    """The numpy engine on one BLAS thread, as mlitb/bench/engine.py measures it (no PyTorch)."""
    from mlitb.bench.engine import blas_info, make_steps, one_thread, rate

    with one_thread() as how:
        env["numpy"] = {**blas_info(), "pinned_by": how}
        for row in rows:
            step, _ = make_steps(row.batch, with_torch=False)
            rate(step, row.batch, min(0.5, seconds))
            row.rounds["numpy"] = [rate(step, row.batch, seconds) for _ in range(rounds)]
            row.rates["numpy"] = max(row.rounds["numpy"])


# -- reporting -------------------------------------------------------------------------------------
LABELS = {"mlitb": "mlitb JS (SIMD)", "mlitb-js": "mlitb JS (no SIMD)", "convnetjs": "ConvNetJS 0.3",
          "numpy": "mlitb.nn (numpy)"}


def report(rows: list[Row], env: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"env": env, "rows": [
            {**asdict(r), "ratio_vs_convnetjs": r.ratio("mlitb", "convnetjs"),
             "median_ratio_vs_convnetjs": r.median_ratio("mlitb", "convnetjs"),
             "ratio_vs_numpy": r.ratio("mlitb", "numpy")} for r in rows]}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    engines = [e for e in (*ENGINES, "numpy") if any(e in r.rates for r in rows)]
    table = Table(title="Training samples/s, CIFAR-10 demo net, headless Chromium, one thread "
                        f"(best of {env['rounds']} rounds of {env['seconds']:g} s)")
    table.add_column("batch", justify="right")
    for e in engines:
        table.add_column(LABELS[e], justify="right")
    table.add_column("SIMD / ConvNetJS", justify="right")
    table.add_column("median round ratio", justify="right")
    table.add_column("SIMD / numpy", justify="right")

    def fmt(v: float | None, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        table.add_row(str(r.batch), *(fmt(r.rates.get(e)) for e in engines),
                      fmt(r.ratio("mlitb", "convnetjs"), ".1f"),
                      fmt(r.median_ratio("mlitb", "convnetjs"), ".1f"),
                      fmt(r.ratio("mlitb", "numpy"), ".2f"))
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(f"Chromium {env['chromium']}, wasm SIMD {'yes' if env['simd'] else 'NO'}, "
                  f"fused multiply-add {'yes' if env['fma'] else 'no'}, engine chunk {env['chunk']}",
                  highlight=False)
    if "numpy" in env:
        n = env["numpy"]
        console.print(f"numpy {n['numpy']} with {n.get('blas', '?')} ({n.get('core_type', '?')}), "
                      f"{n.get('blas_threads', '?')} BLAS thread(s)", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from mlitb.bench.engine import parse_batch_sizes

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds per engine and batch size; best counts (default 3)")
    parser.add_argument("--chunk", type=int, default=4, help="the JS engine's chunk (default 4)")
    parser.add_argument("--no-convnetjs", action="store_true", help="skip ConvNetJS")
    parser.add_argument("--no-plain-js", action="store_true", help="skip the engine without SIMD")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy engine")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        sizes = parse_batch_sizes(args.batch_sizes)
    except ValueError as exc:
        parser.error(str(exc))
    reason = browser_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    engines = ["mlitb"]
    if not args.no_plain_js:
        engines.append("mlitb-js")
    if not args.no_convnetjs:
        if not (CONVNETJS_DIR / "convnet.js").exists():
            print("ConvNetJS is missing: npm ci --prefix tests/js (or pass --no-convnetjs)",
                  file=sys.stderr)
            return 2
        engines.append("convnetjs")
    rows, env = measure(sizes, args.seconds, args.rounds, engines, args.chunk,
                        with_numpy=not args.no_numpy)
    report(rows, env, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
