"""Seeded mutation fuzzing of every reader a user feeds a file to (tests/test_fuzz_readers.py, benchmarks/fuzz.py).

For each reader a valid file is written, then mutated ``budget`` times: byte-level (truncation, bit flips,
an overwritten run, appended garbage, an empty file) and structure-aware (npz: wrong dtype, wrong
shape, NaN / inf, a huge declared array size, a missing key; JSON: values of the wrong type, NaN,
huge numbers, deleted keys; JPEG: a huge declared image size; checkpoints: tensors of another shape or
dtype, NaN, deleted keys). Each case must either read or raise the project's user error (one line,
naming the file) within a second of CPU time. Anything else is a failure: another exception type
(a raw traceback in a script), a slow case, and, seen from the parent, a crash or a hang of the
interpreter (the loop runs in a child process with a memory limit; ``RLIMIT_AS``).

    python tests/fuzz_readers.py --budget 40 --seed 0 --out results.json [--readers a,b]
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import random
import resource
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HANG_S = 30.0  # wall seconds after which a case counts as a hang (the process exits with a traceback)
sys.path[:0] = [str(REPO), str(REPO / "tests")]

# ------------------------------------------------------------------------------------------ mutations


def _bytes_mutations(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "bitflip", "overwrite", "append", "empty"])
    if kind == "truncate":
        return kind, raw[: rng.randrange(0, max(len(raw), 1))]
    if kind == "bitflip":
        out = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "overwrite":
        out = bytearray(raw)
        at, n = rng.randrange(len(out)), rng.randint(1, 64)
        out[at : at + n] = bytes(rng.randrange(256) for _ in range(min(n, len(out) - at)))
        return kind, bytes(out)
    if kind == "append":
        return kind, raw + bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
    return kind, b""


def _npy_bytes(arr: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """``arr`` as ``.npy`` bytes, optionally with a header that declares another ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    if shape is None:
        return buf.getvalue()
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": shape}
    )
    return header.getvalue() + arr.tobytes()


def _npz_mutation(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    key = rng.choice(sorted(arrays))
    arr = arrays[key]
    kind = rng.choice(["dtype", "shape", "nonfinite", "huge", "missing", "scalar"])
    members = {k: _npy_bytes(v) for k, v in arrays.items()}
    if kind == "dtype":
        members[key] = _npy_bytes(
            rng.choice([arr.astype(str), np.zeros(arr.shape, np.int8), np.zeros(arr.shape, np.complex64)])
        )
    elif kind == "shape":
        flat = arr.reshape(-1)
        members[key] = _npy_bytes(
            rng.choice([flat, flat[: max(len(flat) // 2, 1)], flat.reshape(1, -1), arr[..., None]])
        )
    elif kind == "nonfinite" and arr.dtype.kind == "f" and arr.size:
        bad = arr.copy()
        bad.reshape(-1)[rng.randrange(bad.size)] = rng.choice([np.nan, np.inf, -np.inf])
        members[key] = _npy_bytes(bad)
    elif kind == "huge":
        members[key] = _npy_bytes(arr, (rng.choice([2**31, 2**40, 10**12]), *arr.shape[1:]))
    elif kind == "missing":
        members.pop(key)
    else:
        members[key] = _npy_bytes(np.array(rng.choice([0, 1.5, "x"])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for k, v in members.items():
            zf.writestr(f"{k}.npy", v)
    return f"npz:{kind}:{key}", out.getvalue()


_WEIRD = [None, "x", -1, 0, 1e308, float("nan"), float("inf"), [], {}, [1, 2], {"a": 1}, True, 2**70]


def _json_mutation(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    data = json.loads(raw)
    # collect paths to every container slot
    slots: list[tuple[object, object]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                slots.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                slots.append((node, i))
                walk(v)

    walk(data)
    if not slots:
        return "json:whole", json.dumps(rng.choice(_WEIRD)).encode()
    parent, key = rng.choice(slots)
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[key]
        kind = "delete"
    elif isinstance(parent, list) and rng.random() < 0.2:
        parent[:] = parent * rng.choice([0, 3])
        kind = "resize"
    else:
        parent[key] = rng.choice(_WEIRD)
        kind = "value"
    return f"json:{kind}", json.dumps(data).encode()


def _jpeg_mutation(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    at = raw.find(b"\xff\xc0")
    if at < 0:
        return _bytes_mutations(rng, raw)
    out = bytearray(raw)
    size = rng.choice([0, 1, 65535])
    out[at + 5 : at + 9] = size.to_bytes(2, "big") * 2  # height, width
    return f"jpeg:size{size}", bytes(out)


def _checkpoint_mutation(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    import torch

    from mega.engine import save_checkpoint

    record = torch.load(io.BytesIO(raw), weights_only=True)
    record.pop("integrity", None)
    state = record["model"] if "model" in record else record.get("state_dict", record)
    key = rng.choice(sorted(k for k, v in state.items() if isinstance(v, torch.Tensor)))
    kind = rng.choice(["shape", "dtype", "nan", "delete", "meta"])
    if kind == "shape":
        state[key] = torch.zeros(*state[key].shape, 2) if state[key].dim() < 4 else state[key].flatten()
    elif kind == "dtype":
        state[key] = state[key].to(torch.int8)
    elif kind == "nan":
        state[key] = torch.full_like(state[key].float(), float("nan"))
    elif kind == "delete":
        del state[key]
    else:
        meta = rng.choice(
            [k for k, v in record.items() if not isinstance(v, torch.Tensor) and k not in ("model",)]
        )
        record[meta] = rng.choice([None, "x", -1, [], {}])
        key = meta
    buf_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz_ckpt_{os.getpid()}.pt"
    save_checkpoint(buf_path, record)  # a valid hash over the changed content
    data = buf_path.read_bytes()
    buf_path.unlink()
    return f"checkpoint:{kind}:{key}", data


# ------------------------------------------------------------------------------------------ readers


class Reader:
    """A reader under test: ``make(folder) -> valid file``, ``read(path)``, structure-aware mutation."""

    def __init__(
        self, make: Callable[[Path], Path], read: Callable[[Path], object], structured: Callable | None = None
    ) -> None:
        self.make, self.read, self.structured = make, read, structured


def _image_npz(folder: Path) -> Path:
    from fixtures_images import write_npz_dataset

    write_npz_dataset(folder, n=3)
    return folder / "ours.npz"


def _read_image_npz(path: Path) -> None:
    from mega.data.images.npz import read_image_npz

    read_image_npz(path)


def _amass(folder: Path) -> Path:
    from mega.data.motion.amass import write_amass_npz

    rng = np.random.default_rng(0)
    n = 12
    path = folder / "walk_poses.npz"
    write_amass_npz(
        path,
        rng.normal(size=(n, 3)) * 0.1,
        rng.normal(size=(n, 63)) * 0.1,
        np.zeros((n, 90)),
        rng.normal(size=(n, 3)),
        rng.normal(size=16),
        "female",
        60.0,
    )
    return path


def _read_amass(path: Path) -> None:
    from mega.data.motion.amass import load_motion_npz

    load_motion_npz(path)


def _coco(folder: Path) -> Path:
    kp = [v for j in range(17) for v in (10.0 + j, 20.0 + 2 * j, 2)]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 1, "keypoints": kp, "bbox": [5, 5, 40, 60], "num_keypoints": 17},
            {"image_id": 2, "keypoints": kp, "num_keypoints": 17},
        ],
    }
    path = folder / "person_keypoints.json"
    path.write_text(json.dumps(data))
    return path


def _openpose(folder: Path) -> Path:
    kp = [v for j in range(25) for v in (10.0 + j, 20.0 + 2 * j, 0.9)]
    path = folder / "frame_0001_keypoints.json"
    path.write_text(
        json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": kp}, {"pose_keypoints_2d": kp}]})
    )
    return path


def _read_detections(path: Path) -> None:
    from mega.detection.keypoint_files import read_detections

    read_detections(path)


def _jpeg(folder: Path) -> Path:
    from fixtures_images import draw_dots, save_image

    path = folder / "photo.jpg"
    save_image(draw_dots(np.array([[20.0, 30.0], [40.0, 50.0]]), size=(64, 48)), path)
    return path


def _read_image(path: Path) -> None:
    from mega.data.crop import decode_image

    decode_image(path.read_bytes(), name=str(path))
    decode_image(path)


def _video(folder: Path) -> Path:
    import cv2

    path = folder / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(6):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    import mega.demo.inputs  # noqa: F401  (imported here, not timed in the first case)

    return path


def _read_video(path: Path) -> None:
    from mega.demo.inputs import video_frames

    for _ in video_frames(path, every_n=1, max_frames=None):
        pass


def _hmr(folder: Path) -> Path:
    from test_inference import _checkpoint

    from mega.body import load_body_model

    return _checkpoint(folder, load_body_model("free"), "mesh")


def _read_hmr(path: Path) -> None:
    from mega.inference import load_hmr

    load_hmr(path)


def _tokenizer(folder: Path) -> Path:
    return _hmr(folder).with_name("tokenizer_mesh.pt")


def _read_tokenizer(path: Path) -> None:
    from mega.tokenizers import load_tokenizer

    load_tokenizer(path)


def _motion_manifest(folder: Path) -> Path:
    from mega.data.motion.synth import GENERATOR_VERSION, MANIFEST, activity_weights, generator_fingerprint

    wanted = {
        "version": GENERATOR_VERSION,
        "fingerprint": generator_fingerprint(),
        "seed": 0,
        "sequences": {"train": 2, "val": 1, "test": 1},
        "activities": activity_weights(None),
    }
    root = folder / "motion"
    root.mkdir()
    (root / MANIFEST).write_text(json.dumps(wanted))
    return root / MANIFEST


def _read_motion_manifest(path: Path) -> None:
    from mega.data.motion import ensure_synthetic_motion

    ensure_synthetic_motion(path.parent, seed=0, sequences={"train": 2, "val": 1, "test": 1})


def _image_manifest(folder: Path) -> Path:
    from mega.data.images.synthetic import MANIFEST

    root = folder / "images"
    root.mkdir()
    (root / MANIFEST).write_text(
        json.dumps({"version": 0, "seed": 0, "sizes": {"train": 1}, "scene": {}, "motion": {}})
    )
    return root / MANIFEST


def _read_image_manifest(path: Path) -> None:
    from mega.data.images.synthetic import ensure_synthetic_images

    ensure_synthetic_images(path.parent, sizes={"train": 1, "val": 1, "test": 1}, progress=False)


READERS = {
    "image-label npz": Reader(_image_npz, _read_image_npz, _npz_mutation),
    "AMASS npz": Reader(_amass, _read_amass, _npz_mutation),
    "COCO JSON": Reader(_coco, _read_detections, _json_mutation),
    "OpenPose JSON": Reader(_openpose, _read_detections, _json_mutation),
    "image bytes": Reader(_jpeg, _read_image, _jpeg_mutation),
    "video file": Reader(_video, _read_video, None),
    "hmr.pt": Reader(_hmr, _read_hmr, _checkpoint_mutation),
    "tokenizer .pt": Reader(_tokenizer, _read_tokenizer, _checkpoint_mutation),
    "motion manifest": Reader(_motion_manifest, _read_motion_manifest, _json_mutation),
    "image manifest": Reader(_image_manifest, _read_image_manifest, _json_mutation),
}


# ------------------------------------------------------------------------------------------ the loop


def classify(err: BaseException | None, path: Path) -> str:
    """``read`` | ``user error`` | a failure label."""
    from mega.errors import format_user_error, is_user_error

    if err is None:
        return "read"
    if not is_user_error(err):
        return f"FAIL raw {type(err).__name__}: {str(err)[:120]}"
    message = format_user_error(err)
    if "\n" in message:
        return f"FAIL multi-line user error: {message[:120]!r}"
    if path.name not in message:
        return f"FAIL user error without the file: {message[:120]}"
    return "user error"


def fuzz(name: str, budget: int, seed: int, folder: Path, progress: Path | None = None) -> list[dict]:
    """Run ``budget`` mutated cases of reader ``name``; one dict per case (mutation, outcome, seconds)."""
    reader = READERS[name]
    folder.mkdir(parents=True, exist_ok=True)
    path = reader.make(folder)
    raw = path.read_bytes()
    rng = random.Random(f"{seed}/{name}")
    cases = []
    for case in range(budget):
        structured = reader.structured is not None and rng.random() < 0.5
        mutation, data = (reader.structured if structured else _bytes_mutations)(rng, raw)
        path.write_bytes(data)
        if progress is not None:  # the parent names this case if the interpreter dies in it
            progress.write_text(json.dumps({"reader": name, "case": case, "mutation": mutation}))
        wall, cpu = time.perf_counter(), time.process_time()
        err = None
        faulthandler.dump_traceback_later(
            HANG_S, exit=True
        )  # a hang ends the process: the parent names the case
        try:
            reader.read(path)
        except Exception as e:  # noqa: BLE001 (classified below)
            err = e
        finally:
            faulthandler.cancel_dump_traceback_later()
        cpu = time.process_time() - cpu
        outcome = classify(err, path)
        if cpu > 1.0:
            outcome = f"FAIL slow ({cpu:.2f} s CPU): {outcome}"
        cases.append(
            {
                "reader": name,
                "case": case,
                "mutation": mutation,
                "outcome": outcome,
                "cpu_s": cpu,
                "wall_s": time.perf_counter() - wall,
            }
        )
    path.write_bytes(raw)
    return cases


def summarise(cases: list[dict]) -> dict[str, Counter]:
    """reader -> Counter of outcome classes (``read``, ``user error``, ``FAIL ...`` first words)."""
    out: dict[str, Counter] = {}
    for c in cases:
        label = c["outcome"] if not c["outcome"].startswith("FAIL") else "FAIL"
        out.setdefault(c["reader"], Counter())[label] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit above the start")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import tempfile

    import torch

    import mega  # noqa: F401

    torch.set_num_threads(1)
    faulthandler.enable()
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    limit = vm + int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.readers.split(","):
            cases += fuzz(
                name,
                args.budget,
                args.seed,
                Path(tmp) / name.replace(" ", "_"),
                args.out.with_suffix(".progress"),
            )
    args.out.write_text(json.dumps(cases, indent=1))
    fails = [c for c in cases if c["outcome"].startswith("FAIL")]
    print(f"{len(cases)} cases, {len(fails)} failures, max CPU {max(c['cpu_s'] for c in cases):.3f} s")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
