"""The web page (``scripts/app.py``) driven in headless Chromium: Debian's ``chromium`` package through
playwright (the optional extra ``.[browser]``; nothing downloads a browser build).

Used by the browser test (``tests/test_app_browser.py``, ``make test-app``) and by
``tools/app_screenshot.py`` (the README's picture of the page, and the time from pressing Run to the
results on screen). :class:`AppProcess` starts the app on a free localhost port; :func:`open_page`,
:func:`upload`, :func:`choose` and :func:`run_and_wait` are what a visitor does.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MEGA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",  # WebGL on the CPU
    "--enable-unsafe-swiftshader",
    "--use-fake-device-for-media-stream",  # a test-pattern webcam
    "--use-fake-ui-for-media-stream",
]


class BrowserError(RuntimeError):
    """Chromium or playwright is missing, or the app did not start."""


def launch_chromium(playwright, path: str | Path = CHROMIUM):
    """Debian's Chromium at ``path`` (headless, WebGL on the CPU, a fake webcam) from a playwright handle."""
    if not Path(path).is_file():
        raise BrowserError(
            f"{path} not found: install Debian's chromium (`make chromium`: apt-get install chromium)"
        )
    return playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)


def sync_playwright():
    """playwright's ``sync_playwright()``, or a :class:`BrowserError` saying how to install it."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError as err:
        raise BrowserError(
            f"playwright is missing ({err}): `make test-app` installs the extras .[app,browser]"
        ) from err
    return start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``scripts/app.py`` (with Hydra ``overrides``) in a subprocess on a free localhost port, run in
    ``cwd``, its output in ``log`` (default: next to ``cwd``, ``<cwd>.log``); ready when the constructor
    returns."""

    def __init__(
        self,
        cwd: Path,
        *overrides: str,
        log: Path | None = None,
        python: str = sys.executable,
        timeout: float = 240,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        cmd = [python, str(ROOT / "scripts" / "app.py"), f"port={self.port}", *overrides]
        self.log = Path(log) if log else self.cwd.parent / f"{self.cwd.name}.log"
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(
                    f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise BrowserError(f"the app did not start in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> str:
        """Stop the app (SIGTERM, then SIGKILL after 20 s); returns its log."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text()


def open_page(browser, url: str, width: int = 1400, height: int = 1000, timeout_ms: int = 180_000):
    """A fresh page (its own context) at ``url``; ``page.outside`` collects every request that leaves
    localhost, ``page.errors`` the console's errors."""
    ctx = browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True, permissions=["camera"]
    )
    page = ctx.new_page()
    page.set_default_timeout(timeout_ms)  # a loaded 2-core machine renders WebGL on the CPU slowly
    page.outside = []
    page.errors = []  # the browser console's errors (JavaScript exceptions included)
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    local = ("127.0.0.1", "localhost")
    page.on(
        "request",
        lambda r: (
            urlparse(r.url).hostname not in local
            and not r.url.startswith(("data:", "blob:"))
            and page.outside.append(r.url)
        ),
    )
    page.goto(url, timeout=timeout_ms)
    page.wait_for_selector("#run")
    return page


def upload(page, path: Path) -> None:
    """Put ``path`` in the page's file drop zone (clearing a file already there)."""
    clear = page.locator("#upload button[aria-label=Clear]")
    if clear.count():  # a file is there already: the drop zone comes back once it is cleared
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f'#upload td.filename[aria-label="{Path(path).name}"]')


def choose(page, sampler: str | None = None, q: int | None = None, rotation: str | None = None) -> None:
    """Set the sampler (its label, exactly), the number of samples Q and the rotation source."""
    if sampler is not None:
        page.locator("#sampler label").filter(has_text=re.compile(rf"^\s*{re.escape(sampler)}\s*$")).click()
    if q is not None:
        box = page.locator("#q input[type=number]")
        box.fill(str(q))
        box.press("Enter")
    if rotation is not None:
        page.locator("#rotation label", has_text=rotation).first.click()


def canvas_pixels(page) -> np.ndarray:
    """The 3D view as it is on screen, grey levels (H, W) float32."""
    from PIL import Image

    canvas = page.locator("#view3d canvas")
    shot = page.screenshot(clip=canvas.bounding_box())
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L"), np.float32)


def drawn(view: np.ndarray, label_px: int = 40) -> bool:
    """Whether a 3D view's pixels (H, W grey levels) show a body: more than 0.2 % of them, below the view's
    label, clearly darker than the light background (the empty view is white, then the clear colour)."""
    return bool((view[label_px:] < 200).mean() > 0.002)


def cut_off(view: np.ndarray, band: int = 4) -> bool:
    """Whether a 3D view's pixels (H, W grey levels) show the body touching the view's top edge (in the
    middle, clear of the view's label and buttons) or its bottom edge."""
    h, w = view.shape
    top = view[:band, int(0.38 * w) : int(0.88 * w)]
    return bool((top < 200).any() or (view[h - band :] < 200).any())


@dataclass
class RunTimes:
    """One press of Run: seconds until the overlay picture had loaded (or an error showed), seconds until
    the 3D view drew the body (None after an error), and the page's message."""

    overlay_s: float
    view_s: float | None
    message: str


def run_and_wait(page, timeout_s: float = 180.0, poll_s: float = 0.1) -> RunTimes:
    """Press Run on a page without results yet; wait until the overlay picture has loaded and the 3D view
    draws the body (:func:`drawn`), or an error message shows (its text starts the message)."""
    page.click("#run")
    t0 = time.perf_counter()
    done = (
        "() => { const img = document.querySelector('#overlay img');"
        " return (img && img.complete && img.naturalWidth > 0) || document.querySelector('.mega-error'); }"
    )
    page.wait_for_function(done, timeout=timeout_s * 1000, polling=int(poll_s * 1000))
    overlay_s = time.perf_counter() - t0
    message = page.locator("#message").inner_text().strip()
    if page.locator(".mega-error").count():
        return RunTimes(overlay_s, None, message)
    page.wait_for_selector("#view3d canvas", timeout=timeout_s * 1000)
    page.locator("#view3d canvas").scroll_into_view_if_needed()
    while not drawn(canvas_pixels(page)):
        if time.perf_counter() - t0 > timeout_s:
            raise BrowserError(f"the 3D view drew nothing in {timeout_s:.0f} s")
        time.sleep(poll_s)
    return RunTimes(overlay_s, time.perf_counter() - t0, message)
