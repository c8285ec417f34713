"""Write the LiteRT reference outputs of BlazePose's landmark network that tests/test_blazepose.py compares with.

LiteRT (Google's TFLite runtime, ``pip install ai-edge-litert``) is used only here, never by the package
or the tests. The fixture holds the inputs (256 x 256 RGB uint8 crops) and, per input, the network's
outputs as LiteRT computes them from the same file (``make weights``):

    landmarks (N, 195)  presence (N, 1)  world (N, 117)  heatmap (N, 16, 16, 39)  segmentation (N, 32, 32)

(the two dense maps subsampled every 4th / 8th pixel to keep the file small). ``--mirror`` adds each
image mirrored.

    pip install -c constraints.txt ai-edge-litert==2.3.0
    python tools/blazepose_reference.py IMAGE [IMAGE ...] [--out tests/fixtures/blazepose_litert.npz]

Each IMAGE is centre-cropped to a square and resized to 256 px with PIL. The committed fixture holds two
held-out synthetic crops (a walking and a crouching body; our own renders of the free body).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from mega.atomic import atomic_path
from mega.backbones.blazepose_file import DEFAULT_PATH, MEMBER_SHA256, require_model_file, sha256


def square_crop(path: str, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: the image's centre square, resized."""
    img = Image.open(path).convert("RGB")
    s = min(img.size)
    left, top = (img.size[0] - s) // 2, (img.size[1] - s) // 2
    return np.asarray(img.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", default=DEFAULT_PATH)
    ap.add_argument("--out", default="tests/fixtures/blazepose_litert.npz")
    ap.add_argument("--mirror", action="store_true")
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    model = require_model_file(args.model)
    assert sha256(model) == MEMBER_SHA256, f"{model} is not the pinned file"
    crops = []
    for p in args.images:
        c = square_crop(p)
        crops += [c, c[:, ::-1].copy()] if args.mirror else [c]
    interp = Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("landmarks", "presence", "world", "heatmap", "segmentation")
    }
    for c in crops:
        interp.set_tensor(inp, (c.astype(np.float32) / 255.0)[None])
        interp.invoke()
        rows["landmarks"].append(interp.get_tensor(outs["Identity"])[0])
        rows["presence"].append(interp.get_tensor(outs["Identity_1"])[0])
        rows["world"].append(interp.get_tensor(outs["Identity_4"])[0])
        rows["heatmap"].append(interp.get_tensor(outs["Identity_3"])[0, ::4, ::4])
        rows["segmentation"].append(interp.get_tensor(outs["Identity_2"])[0, ::8, ::8, 0])
    with atomic_path(args.out) as tmp:
        np.savez_compressed(tmp, images=np.stack(crops), **{k: np.stack(v) for k, v in rows.items()})
    print(f"wrote {args.out}: {len(crops)} inputs, presence {np.stack(rows['presence']).ravel().round(3)}")


if __name__ == "__main__":
    main()
