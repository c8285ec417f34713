"""Build MediaPipe's BlazePose *full* ``.task`` bundle from the models inside a mediapipe 0.10.x wheel.

Run by ``make detector`` inside a throwaway virtual environment that has ``mediapipe==0.10.21`` (its
wheel ships ``pose_detection.tflite`` and ``pose_landmark_full.tflite``, Apache-2.0; later wheels ship
none). The Tasks runtime of mediapipe 1.2.x, which works with numpy 2, needs the landmark model to
carry image-normalisation metadata (mean 0, std 255: the model takes RGB in [0, 1]); 0.10.21's metadata
writer adds it. The bundle is a zip of ``pose_detector.tflite`` + ``pose_landmarks_detector.tflite``.

    python tools/build_pose_detector.py data/detectors/pose_landmarker_full.task

Nothing is downloaded here: the wheel was installed by pip from the package registry.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

LANDMARK_OUTPUTS = ("landmarks", "pose_flag", "segmentation", "heatmap", "world_landmarks")


def build(out: Path) -> str:
    """Write the bundle atomically to ``out``; returns its SHA-256."""
    import mediapipe
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    modules = Path(mediapipe.__file__).parent / "modules"
    detector = (modules / "pose_detection" / "pose_detection.tflite").read_bytes()
    landmark = bytearray((modules / "pose_landmark" / "pose_landmark_full.tflite").read_bytes())
    writer = metadata_writer.MetadataWriter.create(landmark)
    writer.add_general_info("pose_landmarks_detector", "BlazePose GHUM 3D, full (MediaPipe, Apache-2.0)")
    writer.add_image_input(norm_mean=[0.0], norm_std=[255.0])
    for name in LANDMARK_OUTPUTS:
        writer.add_feature_output(name=name)
    landmark_with_metadata, _ = writer.populate()

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as bundle:
        bundle.writestr("pose_detector.tflite", detector)
        bundle.writestr("pose_landmarks_detector.tflite", bytes(landmark_with_metadata))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, out)
    return hashlib.sha256(buf.getvalue()).hexdigest()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/detectors/pose_landmarker_full.task")
    digest = build(target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]})")
