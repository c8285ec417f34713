"""Read a benchmark's original files once into the compact index that evaluation loads.

    python scripts/prepare_data.py benchmark=3dpw root=/path/to/3DPW
    python scripts/prepare_data.py benchmark=3dpw benchmark.subset=occ      # 3DPW-OCC
    python scripts/prepare_data.py benchmark=emdb benchmark.root=/path/to/EMDB
    python scripts/prepare_data.py benchmark=synthetic_images   # generates the embedded image set first

The ground-truth body (``body_model=smpl``, your SMPL files; see data/README.md) supplies the rest
pelvis that moves world-frame ground truth into the camera frame. The index goes to
``benchmark.index`` (``data/prepared/<name>_<split>_<subset>.npz``), written atomically.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.data.benchmarks import build_index
from mega.errors import entry_point

log = logging.getLogger("prepare_data")


@hydra.main(config_path="../configs", config_name="prepare_data", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    kwargs = OmegaConf.to_container(cfg.benchmark, resolve=True)
    kwargs.pop("index")
    if cfg.root:  # `root=...` is a shortcut for `benchmark.root=...`
        kwargs["root"] = cfg.root
    body = {"body_model": cfg.body_model.name, "body_model_path": cfg.body_model.path}
    if (
        cfg.benchmark.name == "synthetic_images"
    ):  # generated here on first use; its ground truth is the free body
        body = {"body_model": "free", "body_model_path": None}
    index = build_index(**kwargs, **body)
    path = index.save(cfg.output)
    n_seq = len(set(index.arrays["sequence"].tolist()))
    print(
        f"{index.dataset} ({index.split}, {index.subset}): {len(index)} samples from {n_seq} sequences -> {path}"
    )


if __name__ == "__main__":
    main()
