"""A local web page on the demo's code path: drop in a photo or a short clip, turn the 3D bodies, download them.

    make app                                      # installs the `app` extra, then this on the quickstart's model
    python scripts/app.py checkpoint=outputs/train_hmr/<run>/hmr.pt port=8000

Gradio (the optional extra ``pip install -e .[app]``) draws the page; everything else is
:mod:`mega.demo` (people -> crops -> ``recover`` -> pictures and files, as ``scripts/demo.py``) through
:class:`mega.demo.web.Session`. The page runs offline (no analytics, no web fonts, no version check) and
binds to localhost; uploads and results live in one temporary folder, deleted when the app stops.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import signal
import tempfile
import traceback
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.demo import DemoInputError, find_checkpoint
from mega.demo.examples import build_examples
from mega.demo.inputs import QUICKSTART_CHECKPOINT
from mega.demo.web import ROTATIONS, Limits, PageError, Session, person_table
from mega.errors import UserError, entry_point

log = logging.getLogger("app")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TABLE_HEADERS = ["image", "person", "people from", "2D error px", "before refinement px", "mean SD mm"]
CSS = "#message p { font-size: 1.05em } #message.error p, .mega-error { color: #b3261e; font-weight: 600 }"


class AppError(UserError, ValueError):
    """The app cannot start (the `app` extra is missing, or a bad option)."""


def offline_workspace() -> Path:
    """Before Gradio is imported: nothing may reach the network (no analytics, telemetry, share link or
    server-side rendering), and Gradio's files go to a new temporary folder, deleted at exit (also on a
    plain `kill`)."""
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                      GRADIO_SHARE="False", GRADIO_SSR_MODE="False", DO_NOT_TRACK="1")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="mega-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")
    atexit.register(shutil.rmtree, work, True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: Gradio closes its server first
    return work


def import_gradio():
    try:
        import gradio as gr
    except ImportError as err:
        raise AppError(f"the web page needs the `app` extra ({err}): run `make app` "
                       "(or `pip install -c constraints.txt -e .[app]`)") from err  # fmt: skip
    return gr


def preset(group: str, name: str | None) -> dict | None:
    """``configs/<group>/<name>.yaml`` as a dict (None for no name or ``none``)."""
    if name in (None, "none"):
        return None
    path = CONFIGS / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise AppError(f"decodings: no {group} preset {path}; known: {known}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def decodings(choices: DictConfig) -> dict[str, dict]:
    """The page's sampler choices: ``{name: {"sampler": preset, "refiner": preset or None}}``."""
    return {
        str(k): {"sampler": preset("sampler", v.sampler), "refiner": preset("refiner", v.get("refiner"))}
        for k, v in choices.items()
    }


def detector_choice(name: str) -> str | None:
    """``auto`` -> ``blazepose`` when `make detector` was run, else None (the whole image)."""
    from mega.detection.blazepose import detector_available

    if name == "auto":
        return "blazepose" if detector_available() else None
    if name in ("none", None):
        return None
    if name != "blazepose":
        raise AppError(f"detector={name!r}: use auto, blazepose or none")
    return name


def build_page(session: Session, examples: list[Path], banner: str):
    """The Gradio page (Blocks) for a :class:`Session`."""
    gr = import_gradio()
    font = ["ui-sans-serif", "system-ui", "sans-serif"]  # system fonts: no web-font download
    theme = gr.themes.Default(font=font, font_mono=["ui-monospace", "monospace"])

    def outputs_of(frame):
        p = frame.panels
        return (str(p["input"]), str(p["overlay"]), str(p["side"]) if "side" in p else None,
                gr.update(value=str(p["sd"]) if "sd" in p else None, visible="sd" in p),
                gr.update(value=str(frame.glb), camera_position=(None, None, frame.view_distance)))  # fmt: skip

    def run(upload, snapshot, sampler, q, rotation):
        empty = (None, None, None, gr.update(value=None, visible=False), None, None, None, gr.update(choices=[], value=None, visible=False), [])  # fmt: skip
        try:
            results, notices = session.run(upload or snapshot, sampler, int(q), rotation)
        except PageError as err:
            return (f'<p class="mega-error">{_escape(str(err))}</p>', *empty)
        except Exception as err:  # noqa: BLE001  a bug: the page gets one line, the console the traceback
            log.error("request failed:\n%s", traceback.format_exc())
            return (f'<p class="mega-error">internal error: {_escape(type(err).__name__)}: {_escape(str(err))}</p>', *empty)  # fmt: skip
        files = [str(f) for r in results for f in r.files]
        stems = [r.stem for r in results]
        people = sum(len(r.rows) for r in results)
        msg = f"{people} {'person' if people == 1 else 'people'} in {len(results)} {'image' if len(results) == 1 else 'frames'}; " + "; ".join(notices)  # fmt: skip
        return (f"<p>{_escape(msg)}</p>", *outputs_of(results[0]), person_table(results), files,
                gr.update(choices=stems, value=stems[0], visible=len(stems) > 1), results)  # fmt: skip

    def show_frame(stem, results):
        for frame in results or []:
            if frame.stem == stem:
                return outputs_of(frame)
        return None, None, None, gr.update(visible=False), None

    with gr.Blocks(title="mega: body meshes from a photo", analytics_enabled=False) as page:
        gr.Markdown(f"## mega: 3D bodies from a photo or a clip\n{banner}", elem_id="banner")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Tab("Photo or clip"):
                    upload = gr.File(label="Drop a photo or a short clip", type="filepath", elem_id="upload")
                with gr.Tab("Paste or webcam"):
                    snapshot = gr.Image(label="Paste an image or take a webcam snapshot", type="filepath",
                                        sources=["clipboard", "webcam", "upload"], elem_id="snapshot")  # fmt: skip
                names = list(session.decodings)
                sampler = gr.Radio(names, value=names[0], label="Sampler", elem_id="sampler")
                q = gr.Slider(
                    2,
                    20,
                    value=5,
                    step=1,
                    label="Q samples (stochastic; the others decode once)",
                    elem_id="q",
                )
                rotation = gr.Radio(list(ROTATIONS), value="head", label="Rotation from", elem_id="rotation",
                                    info="head: the model's heads; keypoints: solved from the 2D keypoints")  # fmt: skip
                button = gr.Button("Run", variant="primary", elem_id="run")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples")
            with gr.Column(scale=3):
                message = gr.HTML("<p>Drop in a photo or a clip and press Run.</p>", elem_id="message")
                frame = gr.Dropdown(label="Frame", choices=[], visible=False, elem_id="frame")
                with gr.Row():
                    people = gr.Image(label="People", interactive=False, elem_id="people_in")
                    overlay = gr.Image(label="Mesh", interactive=False, elem_id="overlay")
                    side = gr.Image(label="Side view", interactive=False, elem_id="side")
                    sd = gr.Image(label="SD (mm)", interactive=False, visible=False, elem_id="sd")
                view = gr.Model3D(label="3D view (drag to turn, scroll to zoom)", clear_color=(0.96, 0.96, 0.96, 1.0),
                                  height=420, elem_id="view3d")  # fmt: skip
                table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="Per person", interactive=False, elem_id="people"
                )
                files = gr.File(label="Downloads (.obj .ply .npz .json per person, .glb scene)", file_count="multiple",
                                interactive=False, elem_id="downloads")  # fmt: skip
        state = gr.State([])
        shown = [people, overlay, side, sd, view]
        button.click(run, [upload, snapshot, sampler, q, rotation],
                     [message, *shown, table, files, frame, state], concurrency_limit=1)  # fmt: skip
        # .input, not .change: Run sets the menu too, and a second send of the same 3D scene while the page
        # still loads its 3D viewer cancels that load in Gradio 6.31 (the view stays empty)
        frame.input(show_frame, [frame, state], shown)
        # one input at a time: a new file clears the snapshot and a new snapshot the file
        clear_if = lambda value: gr.update(value=None) if value else gr.update()  # noqa: E731
        upload.change(clear_if, upload, snapshot)
        snapshot.change(clear_if, snapshot, upload)
    return page, theme


def _escape(text: str) -> str:
    """A message as HTML: ``<``, ``>``, ``&`` escaped; `commands` in backticks as code."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"`([^`\n]+)`", r"<code>\1</code>", text)


@hydra.main(config_path="../configs", config_name="app", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    work = offline_workspace()
    import_gradio()  # fail early, in one line, without the extra
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    try:
        ckpt = find_checkpoint(cfg.checkpoint)
    except DemoInputError:
        ckpt = QUICKSTART_CHECKPOINT  # the page says it does not load, and how to make it
    limits = Limits(**OmegaConf.to_container(cfg.limits))
    detector = detector_choice(cfg.detector)
    ex = cfg.examples
    examples, table = build_examples(
        ex.images_root, int(ex.num_images), ex.video, int(ex.frame), work / "examples"
    )
    pictures = OmegaConf.to_container(cfg.pictures)
    session = Session(
        Path(ckpt), work, decodings(cfg.decodings), detector, table, pictures, limits, cfg.device
    )
    try:
        session.model()
        state = f"model `{ckpt}`"
    except PageError as err:
        log.warning("%s", err)
        state = f"**model not loaded:** {err}"
    people = "BlazePose" if detector else "the whole image (no detector: `make detector`)"
    banner = f"{state}; people from {people}. Files stay on this machine, in a temporary folder."
    page, theme = build_page(session, examples, banner)
    page.queue(default_concurrency_limit=1, max_size=16)
    log.info("temporary folder %s (deleted on exit)", work)
    page.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=False, inbrowser=bool(cfg.open_browser),
                max_file_size=f"{float(cfg.limits.max_upload_mb):g}mb", allowed_paths=[str(work)],
                theme=theme, css=CSS, ssr_mode=False, show_error=False, run_history=False)  # fmt: skip


if __name__ == "__main__":
    main()
