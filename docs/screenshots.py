"""Screenshots of the course taken by a real browser: 01's eps slider and 03's cluster browser in JupyterLab,
and the front page of an executed run of the series (``index.html``, read without Jupyter).

Commands (from the top of the kit; need Chromium, e.g. Debian's `apt-get install chromium`)::

    .venv/bin/python docs/screenshots.py            # all three, below
    .venv/bin/python docs/screenshots.py --which jupyterlab   # docs/screenshot_01_slider.png, screenshot_03_browser.png
    .venv/bin/python docs/screenshots.py --which index        # docs/screenshot_index.png: runs the smoke series first
    .venv/bin/python docs/screenshots.py --which index --run results/run   # ... of a run already made

What it does: builds two small notebooks in a temporary folder (the first cells of
``notebooks/01_optimal_transport_toy.ipynb`` up to its slider; and a scratch notebook that trains the
smoke profile on the digits and calls ``sela_edu.course.views.browser.browse``), starts JupyterLab
headless on 127.0.0.1 with a random token; drives headless Chromium over its DevTools protocol to open
each notebook, run all its cells in the live kernel (JupyterLab's own "Run All" command) and take a
screenshot once the widgets are drawn. Everything stays on the loopback interface,
and the server is stopped at the end. For the index: ``sela-edu run --profile smoke`` into a temporary
folder (``SELA_DATA_ROOT`` as set), then the same headless Chromium opens its ``index.html`` from disk
and shoots the whole page.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
#: user settings for the screenshot session: no "news" or update pop-ups over the notebook
QUIET_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                  '{"fetchNews": "false", "checkForUpdates": false}'}

BROWSER_CELLS = [
    "# A scratch notebook for the screenshot: a small SeLa run on the digits, then the cluster browser\n"
    "import torch\n"
    "from sela_edu.course.views.browser import browse\n"
    "from sela_edu.data import load_dataset\n"
    "from sela_edu.training import config_from_preset, train\n"
    "torch.manual_seed(0)\n"
    "data = load_dataset('digits', 'train')\n"
    "config = config_from_preset('smoke', dataset='digits', epochs=6, num_heads=2, num_clusters=[10, 20])\n"
    "result = train(config, data, progress=False)",
    "browser = browse(result.model, data, lam=config.lam, per_page=24)\n"
    "_ = browser.select(cluster=int(browser.views[0].sizes.argmax()))",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slider_notebook() -> nbformat.NotebookNode:
    """01's cells up to and including the slider (parameters, setup, the map, the exact plan, the panel)."""
    nb = nbformat.read(ROOT / "notebooks" / "01_optimal_transport_toy.ipynb", as_version=4)
    stop = next(i for i, c in enumerate(nb.cells) if "FloatLogSlider" in c.source)
    keep = [c for i, c in enumerate(nb.cells[: stop + 1]) if i < 3 or i >= stop - 1 or "C = ot.dist" in c.source]
    nb.cells = keep
    return nb


def _browser_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## 03 · The cluster browser\n\nChoose a head and a cluster; members "
                                              "are ordered by the plan's confidence (the number above each image).")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in BROWSER_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


def _wait(url: str, token: str | None = None, seconds: float = 90) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            headers = {"Authorization": f"token {token}"} if token else {}
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                if resp.status == 200:
                    return resp.read()
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer at {url} within {seconds:.0f} s")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium)")


class Browser:
    """Headless Chromium driven over the DevTools protocol (a websocket on 127.0.0.1), with tornado's client."""

    def __init__(self, size=(1400, 1000)):
        self.port = _free_port()
        self.profile = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={self.profile.name}", f"--window-size={size[0]},{size[1]}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={self.port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        pages = json.loads(_wait(f"http://127.0.0.1:{self.port}/json/list"))
        ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        from tornado.websocket import websocket_connect

        self.loop = asyncio.new_event_loop()
        self.ws = self._run(lambda: websocket_connect(ws_url, max_message_size=256 * 2**20))
        self.next_id = 0

    def _run(self, make):
        """Await what ``make()`` returns inside our loop (tornado ties its futures to the running loop)."""
        async def call():
            return await make()

        return self.loop.run_until_complete(call())

    def send(self, method: str, **params):
        self.next_id += 1
        message = json.dumps({"id": self.next_id, "method": method, "params": params})
        self._run(lambda: self.ws.write_message(message))
        while True:  # skip the protocol's events until our reply
            reply = json.loads(self._run(self.ws.read_message))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    def until(self, expression: str, seconds: float = 240, what: str = "") -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.js(expression):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the page did not get there within {seconds:.0f} s: {what or expression}")

    def screenshot(self, target: Path) -> None:
        target.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def screenshot_whole_page(self, target: Path, width: int = 1400) -> None:
        """The page from top to bottom: the window is made as tall as the document first."""
        height = int(self.js("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        try:
            self.screenshot(target)
        finally:
            self.send("Emulation.clearDeviceMetricsOverride")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.profile.cleanup()


def run_and_shoot(browser: Browser, url: str, name: str, target: Path, scroll_to: int | None = None) -> None:
    """Open a notebook in JupyterLab, run all its cells in the live kernel, wait for the widgets, screenshot."""
    panel = f"[...jupyterapp.shell.widgets('main')].find(w => w.context?.path === {json.dumps(name)})"
    kernel = f"{panel}?.sessionContext?.session?.kernel"
    browser.send("Page.navigate", url=url)
    browser.until(f"!!(window.jupyterapp && {kernel}?.connectionStatus === 'connected' && {kernel}?.status === 'idle')",
                  what="the notebook open with an idle kernel")
    # headless, no window has the focus: make the notebook the current one, then JupyterLab's own Run All
    browser.js(f"jupyterapp.shell.activateById({panel}.id); "
               "jupyterapp.commands.execute('notebook:run-all-cells').then(() => true)")
    done = (f"{kernel}.status === 'idle' && {panel}.content.widgets.every("
            "c => c.model.type !== 'code' || !!c.model.executionCount)")
    browser.until(done, what="every cell executed")
    browser.until("document.querySelectorAll('.jp-OutputArea .jupyter-widgets').length > 0", seconds=60,
                  what="widgets drawn")
    time.sleep(3)                                              # let the widget's last image arrive
    if scroll_to is not None:
        browser.js(f"{panel}.content.widgets[{scroll_to}].node.scrollIntoView(); true")
        time.sleep(1)
    browser.screenshot(target)


def shoot_jupyterlab(out: Path) -> None:
    """01's slider and 03's cluster browser, run live in JupyterLab."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "nb").mkdir()
        nbformat.write(_slider_notebook(), tmp / "nb" / "01_slider.ipynb")
        nbformat.write(_browser_notebook(), tmp / "nb" / "03_cluster_browser.ipynb")
        for name, text in QUIET_SETTINGS.items():
            (tmp / "user-settings" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "user-settings" / name).write_text(text)
        port, token = _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if k != "SELA_STATIC_FIGURES"}
        env.update(SELA_RESULTS_DIR=str(tmp / "results"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
        cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={tmp / 'nb'}", f"--LabApp.user_settings_dir={tmp / 'user-settings'}",
               "--LabApp.expose_app_in_browser=True"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")      # Jupyter refuses root otherwise (containers)
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        browser = None
        try:
            _wait(f"http://127.0.0.1:{port}/api", token)
            browser = Browser()
            for png, name, scroll in (("screenshot_01_slider.png", "01_slider.ipynb", -2),
                                      ("screenshot_03_browser.png", "03_cluster_browser.ipynb", None)):
                n_cells = len(nbformat.read(tmp / "nb" / name, as_version=4).cells)
                run_and_shoot(browser, f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}", name, out / png,
                              None if scroll is None else n_cells + scroll)
                print(f"{out / png} ({(out / png).stat().st_size // 1024} KB)")
        finally:
            if browser is not None:
                browser.close()
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def smoke_run(folder: Path) -> Path:
    """Run the series at the smoke profile into ``folder`` with the kit's own command; return the folder."""
    cmd = [str(Path(sys.executable).with_name("sela-edu")), "run", "--profile", "smoke", "--output", str(folder)]
    print("running", shlex.join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def shoot_index(out: Path, run: Path | None) -> None:
    """The front page of an executed run (``run``, or a smoke run made now), opened from disk."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(run).resolve() if run else smoke_run(Path(tmp) / "run")
        index = folder / "index.html"
        if not index.is_file():
            raise FileNotFoundError(f"no {index}: make it with `sela-edu site {folder}`")
        browser = Browser()
        try:
            browser.send("Page.navigate", url=index.as_uri())
            browser.until("document.readyState === 'complete' && !!document.querySelector('table')", seconds=30,
                          what="the index page loaded")
            browser.screenshot_whole_page(out / "screenshot_index.png")
        finally:
            browser.close()
    print(f"{out / 'screenshot_index.png'} ({(out / 'screenshot_index.png').stat().st_size // 1024} KB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "docs"))
    parser.add_argument("--which", choices=["all", "jupyterlab", "index"], default="all")
    parser.add_argument("--run", default=None,
                        help="for the index: a run folder already made (default: a smoke run now)")
    args = parser.parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.which in ("all", "jupyterlab"):
        shoot_jupyterlab(out)
    if args.which in ("all", "index"):
        shoot_index(out, Path(args.run) if args.run else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
