"""The demo's library: inputs and people (:mod:`.inputs`), one image's decode and files (:mod:`.run`),
its pictures (:mod:`.pictures`). ``scripts/demo.py`` and ``scripts/app.py`` are thin entry points on it."""

from mega.demo.inputs import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    DemoInputError,
    People,
    find_checkpoint,
    frames,
    list_inputs,
    video_frames,
)
from mega.demo.pictures import Panel, panels, picture, zoom_box
from mega.demo.run import (
    crops,
    decode,
    decoding_label,
    export_people,
    person_mesh,
    process,
    reprojection_px,
    run_sampler,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "DemoInputError",
    "Panel",
    "People",
    "crops",
    "decode",
    "export_people",
    "find_checkpoint",
    "frames",
    "list_inputs",
    "panels",
    "person_mesh",
    "picture",
    "process",
    "reprojection_px",
    "run_sampler",
    "decoding_label",
    "video_frames",
    "zoom_box",
]
