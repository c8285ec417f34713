"""Screenshots of the web page (``scripts/app.py``) after a run, and the time from pressing Run to the results
on screen (the overlay loaded and the 3D view drawing the body), in headless Debian Chromium.

    python tools/app_screenshot.py            # after `make quickstart`: docs/app_page.png, the README's picture
    python tools/app_screenshot.py --url http://127.0.0.1:7860/ --images a.jpg b.png \\
        --samplers deterministic stochastic pose_guided --runs 5 --out /tmp/shots

Starts the app in the current folder as `make app` does (its examples, the checkpoint ``--checkpoint``,
default the quickstart's model), or drives one already running (``--url``); then for every image and sampler
makes ``--runs`` runs, each on a fresh page: upload, choose, press Run, wait. Prints each time, the median and
range per image and sampler, and the load average. The page after the last run of each pair is written as a
PNG (``--out``: that file for one pair, else ``<out>/<image>_<sampler>.png``), cut to the page's content,
scaled to ``--width`` and reduced to 256 colours (the README's picture stays small). Needs the extras
``.[app,browser]`` and Debian's chromium (``make test-app`` installs them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mega.atomic import atomic_path  # noqa: E402
from mega.demo.browser import (  # noqa: E402
    AppProcess,
    canvas_pixels,
    choose,
    cut_off,
    launch_chromium,
    open_page,
    run_and_wait,
    sync_playwright,
    upload,
)

DEFAULT_IMAGE = (
    "data/synthetic_images_cpu/images/test/000000.jpg"  # held out; one of the app's bundled examples
)


def save_small(png: bytes, out: Path, width: int) -> tuple[int, int]:
    """A page screenshot cut to its non-white content, scaled to ``width`` and reduced to 256 colours,
    written to ``out``; returns its size in pixels."""
    import io

    import numpy as np
    from PIL import Image

    page = Image.open(io.BytesIO(png)).convert("RGB")
    ink = np.asarray(page.convert("L")) < 250
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    pad = 12
    box = (
        max(0, cols[0] - pad),
        max(0, rows[0] - pad),
        min(page.width, cols[-1] + pad + 1),
        min(page.height, rows[-1] + pad + 1),
    )
    page = page.crop(box)
    if page.width > width:
        page = page.resize((width, round(page.height * width / page.width)), Image.LANCZOS)
    small = page.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(out) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    return small.size


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--checkpoint", default="outputs/quickstart/train_hmr/hmr.pt", help="hmr.pt the app loads"
    )
    ap.add_argument("--url", help="drive an app already running at this address instead of starting one")
    ap.add_argument("--images", nargs="+", default=[DEFAULT_IMAGE], help="images (or clips) to upload")
    ap.add_argument("--samplers", nargs="+", default=["stochastic"], help="the page's sampler choices to run")
    ap.add_argument("--q", type=int, default=5, help="Q samples (the samplers that draw at random)")
    ap.add_argument(
        "--runs", type=int, default=1, help="timed runs per image and sampler, each on a fresh page"
    )
    ap.add_argument("--out", default="docs/app_page.png", help="PNG (one image and sampler) or a folder")
    ap.add_argument("--width", type=int, default=1000, help="the screenshots' width in pixels")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the app this starts")
    ap.add_argument(
        "--python", default=sys.executable, help="the Python that runs the app (e.g. .venv/bin/python)"
    )
    args = ap.parse_args(argv)
    for f in [Path(args.checkpoint)] * (args.url is None) + [Path(p) for p in args.images]:
        if not f.is_file():
            raise SystemExit(
                f"error: {f} not found (`make quickstart` makes the model and the held-out images)"
            )
    return args


def one_run(browser, url: str, image: Path, sampler: str, q: int, label: str, shot: Path | None, width: int):
    """Upload, choose, press Run and wait on a fresh page; prints the times (and writes ``shot``)."""
    page = open_page(browser, url)
    try:
        upload(page, image)
        choose(page, sampler, q=q)
        t = run_and_wait(page)
        view = "error" if t.view_s is None else f"{t.view_s:.2f} s"
        print(f"{label}: overlay {t.overlay_s:.2f} s, 3D view {view}  ({t.message})", flush=True)
        if shot is not None:
            page.wait_for_timeout(1500)  # the 3D view settles
            if t.view_s is not None and cut_off(canvas_pixels(page)):
                print("  warning: the 3D view cuts the body off at its top or bottom")
            size = save_small(page.screenshot(full_page=True), shot, width)
            print(f"  screenshot {shot} {size[0]} x {size[1]} px, {shot.stat().st_size / 1e3:.0f} kB")
        if page.outside:
            print(f"  requests that left localhost: {page.outside}")
        return t
    except Exception:  # what the page showed, then the error
        failed = Path(tempfile.mkdtemp(prefix="app-shot-failure-")) / "page.png"
        page.screenshot(path=str(failed), full_page=True)
        print(f"  {label} failed; the page: {failed}; console errors: {page.errors}")
        raise
    finally:
        page.context.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pairs = [(Path(i), s) for i in args.images for s in args.samplers]
    out = Path(args.out)
    app = None
    if args.url is None:  # as `make app` there: the examples and relative paths from the current folder
        log = Path(tempfile.mkdtemp(prefix="app-shot-")) / "app.log"
        overrides = [f"checkpoint={args.checkpoint}", f"threads={args.threads}"]
        app = AppProcess(Path.cwd(), *overrides, log=log, python=args.python)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            for image, sampler in pairs:
                shot = out if len(pairs) == 1 else out / f"{image.stem}_{sampler}.png"
                times = [
                    one_run(
                        browser,
                        args.url or app.url,
                        image,
                        sampler,
                        args.q,
                        f"{image.name} {sampler} run {run + 1}",
                        shot if run == args.runs - 1 else None,
                        args.width,
                    )
                    for run in range(args.runs)
                ]
                rows.append((image.name, sampler, times))
            browser.close()
    finally:
        if app is not None:
            app.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nseconds from pressing Run: median (min-max)")
    print("| image | sampler | runs | overlay shown | overlay and 3D view shown |\n|---|---|---|---|---|")
    for name, sampler, t in rows:
        print(
            f"| {name} | {sampler} | {len(t)} | {_spread([x.overlay_s for x in t])} | "
            f"{_spread([x.view_s for x in t if x.view_s is not None])} |"
        )
    return 0


def _spread(values: list[float]) -> str:
    """``median (min-max)`` of seconds, or ``-`` for none."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    sys.exit(main())
