"""The web page end to end in a real browser: `scripts/app.py` on a tiny random model, driven in headless
Chromium (Debian's package, through playwright; nothing downloads a browser). Run by `make test-app` (CI:
.ci/run); deselected from the plain `make test` because it needs the `app` extras and Chromium, and it fails
(never skips) when they are missing.

Upload a held-out synthetic image, press Run, wait for the overlay and the 3D view; the overlay is a real
picture, a drag turns the 3D view, the GLB downloads and loads in trimesh with the body's vertex count; a
text file uploaded as an image shows its message in the page; a webcam snapshot (Chromium's fake camera)
runs; no request leaves localhost; a checkpoint that does not load is said in the page.
A screenshot of the page after the run is written (``MEGA_APP_SCREENSHOT``, default under tmp_path).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from fixtures_models import heldout_set, save_tiny_hmr
from PIL import Image

from mega.demo.browser import (
    CHROMIUM,
    AppProcess,
    BrowserError,
    canvas_pixels,
    cut_off,
    launch_chromium,
    open_page,
)
from mega.demo.browser import sync_playwright as start_playwright
from mega.demo.browser import upload as upload_file
from mega.demo.web import Session

pytestmark = pytest.mark.browser


class App(AppProcess):
    """``scripts/app.py`` on one torch thread, in an empty working folder (to check it writes nothing there)."""

    def __init__(self, cwd: Path, *overrides: str) -> None:
        try:
            super().__init__(cwd, "threads=1", *overrides)
        except BrowserError as err:
            raise AssertionError(str(err)) from err


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (`make test-app` does: apt-get install chromium)"
        )
    try:
        playwright = start_playwright()
    except BrowserError as err:
        pytest.fail(str(err))
    with playwright as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, free_body):
    root = tmp_path_factory.mktemp("app_browser")
    return {
        "root": root,
        "ckpt": save_tiny_hmr(root, free_body),
        "images": heldout_set(root),
        "vertices": free_body.num_vertices,
    }


def upload_and_run(page, path: Path) -> None:
    upload_file(page, path)
    page.click("#run")


def test_page_upload_run_turn_download(browser, assets, tmp_path):
    app = App(
        tmp_path / "cwd",
        f"checkpoint={assets['ckpt']}",
        f"examples.images_root={assets['images']}",
        "examples.video=null",
        "pictures.panel_height=240",
    )
    page = None
    try:
        page = open_page(browser, app.url)
        assert page.locator("text=Examples").count() >= 1  # the held-out images are bundled
        heldout = sorted((assets["images"] / "images" / "test").iterdir())[0]
        page.locator("#sampler label", has_text="stochastic").first.click()
        upload_and_run(page, heldout)
        t0 = time.perf_counter()
        page.wait_for_selector("#overlay img")
        page.wait_for_selector("#view3d canvas")
        print(f"Run -> overlay and 3D view: {time.perf_counter() - t0:.1f} s")
        assert "held-out example" in page.locator("#message").inner_text()
        # the overlay is a real picture: its size, and not one flat colour
        src = page.locator("#overlay img").get_attribute("src")
        data = page.request.get(src if src.startswith("http") else app.url.rstrip("/") + src).body()
        overlay = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert overlay.shape[0] == 240 and overlay.shape[1] > 50 and overlay.std() > 10
        assert page.locator("#sd img").count() == 1  # Q > 1: the SD map with its colour bar
        table = page.locator("#people").inner_text()
        assert "coco_json" in table and "px" in table
        # the 3D scene downloads and loads with one node per person and the body's vertices
        link = page.locator('#downloads a[download$=".glb"]').first
        with page.expect_download() as info:
            link.click()
        glb = tmp_path / "scene.glb"
        info.value.save_as(glb)
        scene = trimesh.load(glb)
        assert list(scene.geometry) == ["person_0"]
        assert len(scene.geometry["person_0"].vertices) == assets["vertices"]
        names = [a.get_attribute("download") for a in page.locator("#downloads a[download]").all()]
        assert sorted(Path(n).suffix for n in names) == [".glb", ".json", ".npz", ".obj", ".ply"], names
        # turn the body: a drag on the 3D view changes what it shows
        canvas = page.locator("#view3d canvas")
        canvas.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)  # the scene's first frames
        box = canvas.bounding_box()
        grab = lambda: np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("L"), np.float32)  # noqa: E731
        before = grab()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        page.wait_for_timeout(1000)
        after = grab()
        assert before.std() > 5, "the 3D view shows nothing"
        assert not cut_off(canvas_pixels(page)), "the 3D view cuts the body off at its top or bottom"
        assert np.abs(after - before).mean() > 1.0, "dragging did not turn the 3D view"
        shot = Path(os.environ.get("MEGA_APP_SCREENSHOT", tmp_path / "page.png"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert Image.open(shot).size[0] >= 1000
        # a text file uploaded as an image: a message in the page, no stack trace
        notes = tmp_path / "notes.png"
        notes.write_text("this is text, not a picture")
        upload_and_run(page, notes)
        page.wait_for_function(
            "document.querySelector('#message').innerText.includes('not an image')", timeout=180_000
        )
        text = page.locator("#message").inner_text()
        assert "notes.png is not an image that can be read" in text and "Traceback" not in text
        # a webcam snapshot (Chromium's fake camera) replaces the file and runs as the whole image
        page.get_by_role("tab", name="Paste or webcam").click()
        page.locator("#snapshot button[aria-label='Capture from camera']").click()
        page.get_by_text("Click to Access Webcam").click()
        # the fake camera's stream may start after the first click: capture again until a picture shows
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        for attempt in range(6):
            page.locator("#snapshot button[aria-label='capture photo']").click()
            try:
                page.wait_for_selector("#snapshot img", timeout=20_000)
                break
            except PlaywrightTimeout:
                if attempt == 5:
                    raise
        page.wait_for_selector('#upload td.filename[aria-label="notes.png"]', state="detached")
        page.click("#run")
        page.wait_for_function(
            "document.querySelector('#message').innerText.includes('whole image')", timeout=180_000
        )
        assert page.locator("#overlay img").count() == 1 and page.locator("#sd img").count() == 1
        assert page.outside == [], page.outside  # offline: nothing but localhost was asked for
    except Exception:
        if page is not None:  # what the page showed, for the failure report (best effort)
            try:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                print(f"page at the failure: {tmp_path / 'failure.png'}")
                print(page.locator("body").inner_text(timeout=10_000)[:3000])
            except Exception as err:  # noqa: BLE001
                print(f"no failure screenshot: {err}")
        raise
    finally:
        if page is not None:
            page.context.close()
        log = app.stop()
    assert "Traceback" not in log, log[-3000:]
    assert list(app.cwd.iterdir()) == []  # the app wrote nothing outside its temporary folder ...
    work = Path(re.search(r"temporary folder (\S+) \(deleted on exit\)", log).group(1))
    assert work.name.startswith("mega-app-") and not work.exists()  # ... and that is gone once it stops


def test_checkpoint_that_does_not_load_is_said_in_the_page(browser, assets, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    app = App(tmp_path / "cwd", f"checkpoint={broken}", "examples.images_root=null", "examples.video=null")
    page = None
    try:
        page = open_page(browser, app.url)
        assert "model not loaded" in page.locator("#banner").inner_text()
        image = tmp_path / "gray.png"
        Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(image)
        upload_and_run(page, image)
        page.wait_for_function(
            "document.querySelector('#message').innerText.includes('does not load')", timeout=180_000
        )
        assert "make quickstart" in page.locator("#message").inner_text()
    finally:
        if page is not None:
            page.context.close()
        app.stop()


def test_run_sends_the_3d_scene_once(tmp_path):
    """No event that Run's outputs trigger (a `change`) writes the 3D view again: Gradio 6.31's viewer loads
    its code lazily on the first scene, and a second send of the same scene during that load cancels it
    for good (the view stayed empty in about 1 run in 20 on a fresh page; the frame menu's `change` did it)."""
    spec = importlib.util.spec_from_file_location(
        "app_script", Path(__file__).resolve().parents[1] / "scripts" / "app.py"
    )
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    decodings = {"deterministic": {"sampler": {"name": "deterministic"}, "refiner": None}}
    page, _ = app.build_page(Session(Path("hmr.pt"), tmp_path, decodings), [], "banner")
    config = page.get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    deps = config["dependencies"]
    (run,) = [d for d in deps if [ids[t] for t, _ in d["targets"]] == ["run"]]
    assert "view3d" in [ids[o] for o in run["outputs"]]
    for d in deps:
        for target, event in d["targets"]:
            if target in run["outputs"] and event == "change":
                assert "view3d" not in [ids[o] for o in d["outputs"]], (ids[target], event)
    menu = [d for d in deps if [ids[t] for t, _ in d["targets"]] == ["frame"]]
    assert [d["targets"][0][1] for d in menu] == ["input"]  # a clip's frames: chosen by the visitor
