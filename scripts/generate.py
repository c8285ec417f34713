"""Random mesh generation with the pre-trained masked transformer (MEGA supplementary C).

    python scripts/generate.py                                  # the quickstart's or the newest outputs/pretrain run
    python scripts/generate.py checkpoint=PATH num_samples=500 sampler.temperature=1.2

MaskGIT decoding (MEGA: T = 20 steps, cosine schedule, token temperature (A (1 - t/T))^6 with A = 1.2;
positions ranked by confidence + temperature x Gumbel noise as in MEGA's code, ``sampler.confidence_noise=1``),
decoded by the tokenizer the model was trained with. Writes into the run directory: a few ``.obj`` meshes,
``generated.npz`` (ids, vertices, joints and faces of every sample) and ``results.json``, and prints a
table of, for N meshes each:

- APD (cm): average pairwise distance between the 24 regressed joints of all pairs (MEGA's diversity);
- FD (cm^2): Fréchet distance to the held-out split in the PCA feature space of
  :mod:`mega.metrics.frechet` (fitted on training meshes): plausibility, lower is closer to the data.

Rows: held-out data (APD only: it is the reference), training data (the floor FD of N real meshes),
generated meshes and meshes decoded from uniformly random token ids (the no-prior reference).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import mega  # noqa: F401  (torchvision shim first)
from mega.atomic import write_json, write_npz, write_obj
from mega.body import load_body_model
from mega.data.motion import build_motion_dataset
from mega.engine import load_checkpoint, stream_seed
from mega.errors import entry_point
from mega.generation import (
    decode_meshes,
    generate_meshes,
    motion_meshes,
    random_token_ids,
    regress_joints,
)
from mega.metrics import apd
from mega.metrics.frechet import MeshPCAFeatures, feature_statistics, frechet_distance
from mega.samplers import SAMPLERS
from mega.stage_inputs import find_pretrained_model
from mega.tokenizers import load_tokenizer, tokenizer_hash
from mega.transformer import MaskedTokenTransformer

log = logging.getLogger("generate")

PRETRAINED_FORMAT = "mega-pretrained/1"  # written by scripts/pretrain.py
REQUIRED = ("format", "model", "transformer", "tokenizer", "body_model", "data", "splits")


def load_pretrained(path: Path, tokenizer_override: str | None, device: torch.device):
    """The model, its tokenizer (hash-checked) and the checkpoint record."""
    record = load_checkpoint(path, required=REQUIRED)
    if record["format"] != PRETRAINED_FORMAT:
        raise ValueError(f"{path}: format {record['format']!r}, expected {PRETRAINED_FORMAT!r}")
    model = MaskedTokenTransformer(**record["transformer"])
    model.load_state_dict(record["model"])
    tok_path = tokenizer_override or record["tokenizer"]["checkpoint"]
    tokenizer = load_tokenizer(tok_path, map_location=device)
    if tokenizer_hash(tokenizer) != record["tokenizer"]["sha256"]:
        raise ValueError(
            f"tokenizer {tok_path} (hash {tokenizer_hash(tokenizer)[:12]}) is not the one {path} was trained with "
            f"(hash {record['tokenizer']['sha256'][:12]}); pass tokenizer.checkpoint=<that file>"
        )
    return model.to(device).eval(), tokenizer, record


def reference_sets(record: dict, cfg: DictConfig, body, generator: torch.Generator):
    """N held-out and N training meshes (the reference rows), and the PCA feature space fitted on other
    training meshes with the held-out split's statistics in it: ``(sets, features, ref_stats, fit_frames)``."""
    n = cfg.num_samples
    heldout = build_motion_dataset(record["data"], cfg.reference_split)
    training = build_motion_dataset(record["data"], record["splits"]["train"])
    if len(heldout) < n or len(training) < n + 2:
        raise ValueError(
            f"num_samples={n} exceeds the held-out ({len(heldout)}) or training ({len(training)}) frames"
        )
    reference = motion_meshes(heldout, torch.arange(len(heldout)), body)  # (M, V, 3)
    order = torch.randperm(len(training), generator=generator)
    fit = order[n : n + min(cfg.feature_fit_samples, len(training) - n)]
    features = MeshPCAFeatures.fit(motion_meshes(training, fit, body), cfg.feature_components)
    ref_stats = feature_statistics(features(reference))
    sets = {
        "held-out": reference[torch.randperm(len(heldout), generator=generator)[:n]],
        "training data": motion_meshes(training, order[:n], body),
    }
    return sets, features, ref_stats, len(fit)


def score(sets: dict[str, torch.Tensor], features, ref_stats, body, device) -> dict[str, dict]:
    """Per set of (N, V, 3) meshes: N, APD of the regressed joints (cm) and FD to the held-out split (cm^2;
    None for the held-out set itself)."""
    rows = {}
    for name, vertices in sets.items():
        joints_cm = regress_joints(vertices.to(device), body).cpu() * 100.0
        fd = (
            None
            if name == "held-out"
            else frechet_distance(*feature_statistics(features(vertices)), *ref_stats)
        )
        rows[name] = {"n": len(vertices), "apd_cm": float(apd(joints_cm[None])[0]), "fd_cm2": fd}
    return rows


def write_meshes(out_dir: Path, generated, body, num_obj: int) -> None:
    """The first ``num_obj`` generated meshes as ``.obj`` and every one in ``generated.npz``."""
    faces = body.faces.cpu().numpy()
    (out_dir / "meshes").mkdir(parents=True, exist_ok=True)
    for i in range(min(num_obj, len(generated.vertices))):
        write_obj(out_dir / "meshes" / f"generated_{i:03d}.obj", generated.vertices[i].numpy(), faces)
    write_npz(
        out_dir / "generated.npz",
        ids=generated.ids.numpy(),
        vertices=generated.vertices.numpy(),
        joints=regress_joints(generated.vertices, body.cpu()).numpy(),
        faces=faces,
    )


@hydra.main(version_base="1.3", config_path="../configs", config_name="generate")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt = find_pretrained_model(cfg.checkpoint)
    model, tokenizer, record = load_pretrained(ckpt, cfg.tokenizer.checkpoint, device)
    body = load_body_model(**record["body_model"]).to(device)
    sampler = SAMPLERS.build(**cfg.sampler)
    n = cfg.num_samples
    # One stream per role, so that the data subsets do not depend on how many draws the sampler makes.
    g = {
        role: torch.Generator().manual_seed(stream_seed(cfg.seed, 0, f"generate/{role}"))
        for role in ("sampler", "random_ids", "data")
    }
    log.info("generating %d meshes with %s from %s", n, cfg.sampler.name, ckpt)
    t0 = time.perf_counter()
    generated = generate_meshes(
        model, tokenizer, n, sampler, generator=g["sampler"], body=body, batch_size=cfg.batch_size
    )
    seconds = time.perf_counter() - t0
    random_ids = random_token_ids(n, tokenizer.num_tokens, tokenizer.codebook_size, g["random_ids"])
    real, features, ref_stats, fit_frames = reference_sets(record, cfg, body, g["data"])
    sets = {**real, "generated": generated.vertices, "random ids": decode_meshes(tokenizer, random_ids, body)}
    rows = score(sets, features, ref_stats, body, device)
    apd_ratio = rows["generated"]["apd_cm"] / rows["held-out"]["apd_cm"]
    write_meshes(out_dir, generated, body, cfg.num_obj)
    feature_space = {
        "kind": "pca",
        "components": cfg.feature_components,
        "fit_frames": fit_frames,
        "explained_variance": float(features.explained_variance.sum()),
    }
    results = {
        "checkpoint": str(ckpt),
        "tokenizer": record["tokenizer"],
        "sampler": dict(cfg.sampler),
        "num_samples": n,
        "seed": cfg.seed,
        "reference_split": cfg.reference_split,
        "rows": rows,
        "apd_ratio_generated_to_heldout": apd_ratio,
        "generation_s": seconds,
        "feature_space": feature_space,
    }
    write_json(out_dir / "results.json", results)
    print(f"\n{'set':<14} {'N':>5} {'APD (cm)':>9} {'FD (cm^2)':>10}")
    for name, row in rows.items():
        fd = "ref" if row["fd_cm2"] is None else f"{row['fd_cm2']:.3f}"
        print(f"{name:<14} {row['n']:>5} {row['apd_cm']:>9.2f} {fd:>10}")
    print(
        f"generated / held-out APD = {apd_ratio:.2f}; {n} samples in {seconds:.1f} s; results in {out_dir}\n"
    )


if __name__ == "__main__":
    main()
