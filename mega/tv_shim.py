"""Make ``import torchvision`` work with the CPU-only torch of these machines.

PyPI's torchvision wheels are CUDA builds: their C++ extension (``torchvision/_C.so``) links CUDA
libraries that the CPU torch lacks, so it fails to load. torchvision then still registers fake
(meta) kernels for ``torchvision::nms`` and ``torchvision::qnms`` at import time, which raises
``RuntimeError: operator torchvision::nms does not exist`` and breaks ``import torchvision`` and
everything that imports it (timm, lightning, torchmetrics).

:func:`install` runs before anything imports torchvision (``mega/__init__.py`` calls it). It first
tries to load torchvision's own extension exactly as torchvision would; where that works (a matching
CPU or CUDA build) it changes nothing. Only where the extension cannot load does it define the two
missing operator schemas (no kernels), which is all ``import torchvision`` needs. Everything in
pure Python then works (``transforms.v2``, ``models``, timm); ops that need the extension
(``ops.nms``, ``roi_pool``, ``deform_conv2d``, image decoding) keep raising torchvision's own
"Couldn't load custom C++ ops" error, so nothing fails silently. Decode images with PIL or cv2.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys

import torch

log = logging.getLogger(__name__)

_STATE: dict[str, object] = {"mode": None}
_LIBRARY: list[torch.library.Library] = []  # keeps the registration alive


def _extension_loads() -> bool:
    """True when torchvision's compiled ops load (then nothing needs shimming)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to fix
    for folder in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd")):
            try:
                torch.ops.load_library(lib)
                return True
            except (OSError, RuntimeError):
                return False
    return False


def install() -> str:
    """Register the missing torchvision op schemas if (and only if) its extension cannot load.

    Safe to call many times. Returns what was done: ``"native"`` (torchvision's own ops load, or
    torchvision is not installed), ``"shim"`` (schemas defined here), or ``"late"`` (torchvision was
    already imported before this call; nothing can be done then).
    """
    if _STATE["mode"] is not None:
        return str(_STATE["mode"])
    if "torchvision" in sys.modules:
        mode = "late"
    elif hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        mode = "native"
    elif _extension_loads():
        mode = "native"
    else:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.append(lib)
        mode = "shim"
        log.debug("torchvision extension unavailable; defined torchvision::nms/qnms schemas")
    _STATE["mode"] = mode
    return mode
