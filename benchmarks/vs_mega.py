"""Side by side with MEGA's official code at the paper configuration: seconds per task and our / their ratio.

    python benchmarks/vs_mega.py --mega /path/to/MEGA --mesh-vq-vae /path/to/Mesh-VQ-VAE \
        --connections /path/to/MeshConvolution/train/0223_GraphAE27_compare/connections/dfaust2
    python benchmarks/vs_mega.py ... --rounds 3 --tasks det,q16,train8 --threads 2

Both models at the paper configuration with random weights (speed only): HRNet-W48 at 224 px fused to
7 x 7 x 720, transformer width 1024, 12 encoder + 4 decoder layers, 4 heads, 54 tokens over 512 codes, an
SMPL-sized body (6,890 vertices; ours: the synthetic SMPL-format file, no licensed asset), our
``configs/tokenizer/mesh_conv.yaml`` against their Mesh-VQ-VAE (``config_medium``'s layers over the
``dfaust2`` connection files, test mode as MEGA's scripts build it), MEGA's stochastic defaults (T = 5,
temperature 1, cosine). Tasks (batch 1 image unless said):

    det      deterministic: image -> all-masked pass -> argmax ids -> mesh decoder -> rotated mesh (fp32)
    det_compiled  the same with our backbone compiled (``eval.py compile=true``; MEGA's code has no such
             option and runs as in ``det``); the compile itself (~30 s) is not timed
    det_bf16 the same under bf16 autocast (both sides)
    q1, q16  stochastic MaskGIT decoding, T = 5, Q = 1 / 16 hypotheses of one image, meshes decoded
    train8   one training step at batch 8: target ids from ground-truth meshes, forward, CE + rotation +
             2D reprojection through the decoded mesh, backward, AdamW (ours: mega.losses.HMRObjective)
    train8_bf16  the same with forward and loss under bf16 autocast (both sides): what train_hmr.py runs by
             default (``engine.precision: auto``) on bf16 hardware (A100s, AMX CPUs); MEGA's code trains fp32
    dec1, dec16  the mesh decoder alone on 1 / 16 id sequences (reported per mesh)
    encdec8  tokenizer encode + decode of 8 meshes (what a training step needs for its target ids)

Each side runs as its code base runs it: ours with what ``load_hmr`` gives ``eval.py`` and the demo (BatchNorm
folded into HRNet's convolutions, channels-last maps) and what ``train_hmr.py`` builds (``build_optimizer``:
fused AdamW); theirs as MEGA's scripts build it. Each (side, task) runs in its own process (``--one``), which builds the model, runs the task once to warm
up and reports the median of ``--reps`` timed runs and the process's peak RSS. Rounds interleave the two
sides (the order alternates per round); before each pair the 1-minute load average is read and, if above
``--idle-load``, waited on for up to ``--idle-wait`` s; the load seen is printed with the pair. Ratios are
medians over rounds of (ours / theirs) within a round. MEGA's code is imported from the given checkouts,
never copied: its packages' ``__init__`` files (datasets, trainers, renderers) are skipped, ``.cuda()`` is
a no-op while the Mesh-VQ-VAE is built, ``yacs`` is replaced by a dict-like stand-in when not installed,
and their losses are written here (their training code imports pytorch3d and data sets).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TASKS = ["det", "det_compiled", "det_bf16", "q1", "q16", "train8", "train8_bf16", "dec1", "dec16", "encdec8"]
PER_MESH = {"dec16": 16, "encdec8": 8}
TARGETS = {"det": 0.6, "det_compiled": 0.6, "q16": 0.5, "train8": 0.7, "dec16": 1.0}
#: a task name + this suffix: ours with the CNN backbone compiled (``eval.py compile=true``); theirs as is
COMPILED = "_compiled"


# ---------------------------------------------------------------------- shared
def _synthetic_smpl():
    from mega.body import load_body_model
    from mega.body.synthetic import write_synthetic_smpl

    tmp = tempfile.mkdtemp()
    write_synthetic_smpl(tmp, genders=("neutral",))
    return load_body_model("smpl", path=tmp, gender="neutral").eval()


def _meshes(body, b: int) -> torch.Tensor:
    """(b, 6890, 3) canonical meshes of random poses."""
    from mega.body.rotations import axis_angle_to_matrix
    from mega.tokenizers.mesh_vqvae import canonical_mesh

    g = torch.Generator().manual_seed(b)
    with torch.no_grad():
        pose = axis_angle_to_matrix(torch.randn(b, 23, 3, generator=g) * 0.3)
        return canonical_mesh(body, pose, torch.randn(b, 10, generator=g))[0]


def _images(b: int) -> torch.Tensor:
    return torch.randn(b, 3, 224, 224, generator=torch.Generator().manual_seed(b))


# ---------------------------------------------------------------------- ours
def _our_model():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    sys.path.insert(0, str(REPO / "scripts"))
    from train_hmr import build_model

    from mega.engine import register_resolvers
    from mega.tokenizers import build_tokenizer

    body = _synthetic_smpl()
    tok_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "tokenizer" / "mesh_conv.yaml"))
    torch.manual_seed(0)
    tok = build_tokenizer(**{**tok_cfg, "num_vertices": body.num_vertices})
    tok.attach(body)
    tok.eval()
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train_hmr", overrides=["experiment=mega_hrnet"])
    return cfg, tok, body, build_model


def ours(task: str):
    """A zero-argument callable that runs ``task`` on our model."""
    from omegaconf import OmegaConf

    from mega.inference import recover
    from mega.samplers import SAMPLERS

    compiled = task.endswith(COMPILED)
    task = task.removesuffix(COMPILED)
    cfg, tok, body, build_model = _our_model()
    if task in ("dec1", "dec16", "encdec8"):
        b = {"dec1": 1, "dec16": 16, "encdec8": 8}[task]
        ids = torch.randint(0, 512, (b, 54), generator=torch.Generator().manual_seed(0))
        meshes = _meshes(body, b)
        if task == "encdec8":
            return torch.no_grad()(lambda: tok.decode(tok.encode(meshes)))
        return torch.no_grad()(lambda: tok.decode(ids))
    model, _ = build_model(cfg, tok, body)
    if task in ("train8", "train8_bf16"):
        bf16 = task == "train8_bf16"
        sys.path.insert(0, str(REPO / "benchmarks"))
        from hmr import random_batch

        from mega.engine import build_optimizer
        from mega.losses import HMRObjective

        model.train()
        # 2D keypoints: SMPL's 24 joints (the synthetic SMPL file ships no COCO-17 regressor; MEGA's step
        # projects regressed joints too)
        objective = HMRObjective(OmegaConf.to_container(cfg.loss.weights), total_steps=1000,
                                 gumbel=OmegaConf.to_container(cfg.loss.gumbel), keypoints=["smpl24"])  # fmt: skip
        data = random_batch(8, 224, "cpu")
        opt = build_optimizer(model, lr=1e-4, weight_decay=1e-4)  # what train_hmr.py builds (fused AdamW)

        def step():  # as mega.engine.step: forward and loss under autocast, backward outside
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = objective(model, data)
            loss.backward()
            opt.step()

        return step
    model.eval()
    model.backbone.fuse_for_inference()  # what load_hmr does for eval.py, the demo and the app
    if compiled:
        model.backbone.compile_for_inference()  # load_hmr(compile=True): eval.py / demo.py compile=true
    img = _images(1)
    if task in ("det", "det_bf16"):
        bf16 = task == "det_bf16"

        return lambda: recover(model, img, precision="bf16" if bf16 else "fp32")
    q = {"q1": 1, "q16": 16}[task]
    sampler = SAMPLERS.build(
        **OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "sampler" / "stochastic.yaml"))
    )
    return lambda: recover(model, img, sampler, q)


# ---------------------------------------------------------------------- theirs
def _stub_package(name: str, path: Path) -> None:
    """Register a package without running its ``__init__`` (relative imports inside it still work)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module


def _yacs_stand_in() -> None:
    try:
        import yacs.config  # noqa: F401
    except ImportError:

        class CfgNode(dict):
            def __init__(self, init=None, **kw):
                super().__init__(
                    {k: CfgNode(v) if isinstance(v, dict) else v for k, v in dict(init or {}, **kw).items()}
                )

            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__

        yacs = types.ModuleType("yacs")
        yacs.config = types.ModuleType("yacs.config")
        yacs.config.CfgNode = CfgNode
        sys.modules.update({"yacs": yacs, "yacs.config": yacs.config})


def _their_modules(mega_dir: Path, mvq_dir: Path):
    _yacs_stand_in()
    for name, sub in [("ref_mega", "mega"), ("ref_mega.model", "mega/model"),
                      ("ref_mega.model.backbone", "mega/model/backbone"), ("ref_mega.model.cvqmae", "mega/model/cvqmae")]:  # fmt: skip
        _stub_package(name, mega_dir / sub)
    for name, sub in [("ref_mvq", "mesh_vq_vae"), ("ref_mvq.model", "mesh_vq_vae/model")]:
        _stub_package(name, mvq_dir / sub)
    imp = importlib.import_module
    return (imp("ref_mega.model.backbone.hrnet"), imp("ref_mega.model.cvqmae.masked_autoencoder"),
            imp("ref_mvq.model.graphAE"), imp("ref_mvq.model.mesh_vq_vae"))  # fmt: skip


def _their_vqvae(graph, mvq, connections: Path, batch: int):
    """Mesh-VQ-VAE as MEGA builds it (config_medium layers, test mode), for one batch size."""
    from omegaconf import OmegaConf

    layers = [f"pool{i}" for i in range(7)] + [f"unpool{i}" for i in range(6, -1, -1)]
    cfg = OmegaConf.create({
        "batch": batch, "connection_folder": str(connections) + "/", "initial_connection_fn": str(connections / "_pool0.npy"),
        "connection_layer_lst": layers, "channel_lst": [32, 32, 64, 64, 128, 128, 9, 128, 128, 64, 64, 32, 32, 3],
        "weight_num_lst": [9, 0, 9, 0, 9, 0, 9, 9, 0, 9, 0, 9, 0, 9],
        "residual_rate_lst": [0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0],
    })  # fmt: skip
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # no GPU here: the constructor's .cuda() calls stay on CPU
    try:
        torch.manual_seed(0)
        conv = graph.FullyConvAE(cfg, test_mode=True)
        vq = mvq.MeshVQVAE(conv, num_embeddings=512, embedding_dim=9, commitment_cost=0.25, decay=0.99)
    finally:
        torch.Tensor.cuda = cuda
    conv.init_test_mode()
    return vq.eval()


def theirs(task: str, mega_dir: Path, mvq_dir: Path, connections: Path):
    """A zero-argument callable that runs ``task`` on MEGA's model."""
    import torch.nn.functional as F

    from mega.body.rotations import rot6d_to_matrix

    task = task.removesuffix(COMPILED)  # their code runs eagerly
    hrnet, mae, graph, mvq = _their_modules(mega_dir, mvq_dir)
    body = _synthetic_smpl()
    if task in ("dec1", "dec16", "encdec8"):
        b = {"dec1": 1, "dec16": 16, "encdec8": 8}[task]
        vq = _their_vqvae(graph, mvq, connections, b)
        ids = torch.randint(0, 512, (b, 54), generator=torch.Generator().manual_seed(0))
        meshes = _meshes(body, b)
        if task == "encdec8":
            return torch.no_grad()(lambda: vq.decode(vq.get_codebook_indices(meshes)))
        return torch.no_grad()(lambda: vq.decode(ids))
    torch.manual_seed(0)
    backbone = hrnet.hrnet_w48(pretrained_ckpt_path="", downsample=True, use_conv=True)
    model = mae.CVQMAE(seq_length=54, emb_dim=1024, encoder_layer=12, encoder_head=4, decoder_layer=4,
                       decoder_head=4, num_embeddings=512, dim_tokens=512, masking="scheduled", cond_length=49,
                       cond_dim=720, cond_dropout=0, backbone=backbone)  # fmt: skip
    reg = body.J_regressor.float()

    def posed(ids, rot, vq):
        mesh = vq.decode(ids)
        return mesh @ rot6d_to_matrix(rot).transpose(1, 2)

    if task in ("train8", "train8_bf16"):
        bf16 = task == "train8_bf16"
        vq = _their_vqvae(graph, mvq, connections, 8)
        model.train()
        meshes, img = _meshes(body, 8), _images(8)
        g = torch.Generator().manual_seed(1)
        rot_gt, j2d = torch.randn(8, 3, 3, generator=g), torch.rand(8, 24, 2, generator=g)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():  # their one_epoch: ids, forward, decode (no grad), CE + rotation + reprojection
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                ids = vq.get_codebook_indices(meshes)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits, rot, cam, mask = model(ids, img)
            logits, rot, cam = logits.float(), rot.float(), cam.float()
            with torch.no_grad():
                mixed = (logits.argmax(-1) * mask + ids * (1 - mask)).long()
                canon = vq.decode(mixed)
            rotmat = rot6d_to_matrix(rot)
            verts = canon @ rotmat.transpose(1, 2)
            picked = mask.flatten().bool()
            loss = F.cross_entropy(logits.flatten(0, 1)[picked], ids.flatten()[picked].long())
            loss = loss + F.mse_loss(rotmat, rot_gt)
            joints = torch.einsum("jv,bvc->bjc", reg, verts)
            loss = loss + (cam[:, None, :1] * (joints[..., :2] + cam[:, None, 1:]) - j2d).abs().mean()
            loss.backward()
            opt.step()

        return step
    model.eval()
    if task in ("det", "det_bf16"):
        vq, img, bf16 = _their_vqvae(graph, mvq, connections, 1), _images(1), task == "det_bf16"
        dummy = torch.zeros(1, 54, dtype=torch.long)

        @torch.no_grad()
        def det():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits, rot, _, _ = model(dummy, img, fixed_ratio=1)
            return posed(logits.argmax(-1), rot.float(), vq)

        return det
    q = {"q1": 1, "q16": 16}[task]
    vq, img = _their_vqvae(graph, mvq, connections, q), _images(1)

    @torch.no_grad()
    def stochastic():  # their eval_stochastic: the image repeated Q times, generate, decode
        ids, rot, _ = model.generate(img.repeat(q, 1, 1, 1), nb_steps=5, gen_temp=1, device="cpu")
        return posed(ids.long(), rot, vq)

    return stochastic


# ---------------------------------------------------------------------- driver
def run_one(args) -> dict:
    torch.set_num_threads(args.threads)
    import mega  # noqa: F401  (installs the torchvision shim before timm is imported)

    t0 = time.perf_counter()
    fn = (
        ours(args.one)
        if args.side == "ours"
        else theirs(args.one, args.mega, args.mesh_vq_vae, args.connections)
    )
    build = time.perf_counter() - t0
    fn()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    return {
        "side": args.side,
        "task": args.one,
        "sec": statistics.median(times),
        "build_s": build,
        "rss_gib": rss,
    }


def wait_idle(limit: float, patience: float) -> float:
    """Wait (up to ``patience`` s) for the 1-minute load average to drop under ``limit``; return the last reading."""
    t0 = time.time()
    load = os.getloadavg()[0]
    while load > limit and time.time() - t0 < patience:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


def child(side: str, task: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--one", task, "--side", side, "--threads", str(args.threads),
           "--reps", str(args.reps), "--mega", str(args.mega), "--mesh-vq-vae", str(args.mesh_vq_vae),
           "--connections", str(args.connections)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"  {side} {task}: failed\n{out.stderr[-3000:]}", flush=True)
        return None
    return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mega", type=Path, default=None, help="a checkout of g-fiche/MEGA")
    parser.add_argument("--mesh-vq-vae", type=Path, default=None, help="a checkout of g-fiche/Mesh-VQ-VAE")
    parser.add_argument("--connections", type=Path, default=None,
                        help="folder of the dfaust2 connection files (_pool0.npy ...); default: "
                        "<mesh-vq-vae>/body_models/ConnectionMatrices")  # fmt: skip
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="timed runs per process (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--idle-load", type=float, default=1.0, help="wait while the 1-minute load is above this"
    )
    parser.add_argument("--idle-wait", type=float, default=60.0, help="longest wait per pair (s)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mega is None or args.mesh_vq_vae is None:  # e.g. `make bench`: nothing to compare with
        print("vs_mega: skipped; give --mega PATH --mesh-vq-vae PATH (checkouts of MEGA's official code)")
        return
    args.connections = args.connections or args.mesh_vq_vae / "body_models" / "ConnectionMatrices"
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    for path, what in ((args.mega / "mega" / "model" / "cvqmae", "MEGA"), (args.mesh_vq_vae / "mesh_vq_vae", "Mesh-VQ-VAE"),
                       (args.connections / "_pool0.npy", "the connection files")):  # fmt: skip
        if not path.exists():
            sys.exit(f"{path} not found: give the path of {what} (see --help)")
    tasks = args.tasks.split(",")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, {args.rounds} rounds x {args.reps} reps"
    )
    results: dict[str, dict[str, list]] = {t: {"ours": [], "theirs": [], "ratio": [], "rss_ours": [], "rss_theirs": []}
                                           for t in tasks}  # fmt: skip
    for r in range(args.rounds):
        for task in tasks:
            load = wait_idle(args.idle_load, args.idle_wait)
            order = ("ours", "theirs") if (r + tasks.index(task)) % 2 == 0 else ("theirs", "ours")
            got = {side: child(side, task, args) for side in order}
            if None in got.values():
                continue
            res = results[task]
            for side in ("ours", "theirs"):
                res[side].append(got[side]["sec"])
                res[f"rss_{side}"].append(got[side]["rss_gib"])
            res["ratio"].append(got["ours"]["sec"] / got["theirs"]["sec"])
            print(f"round {r + 1} {task:<8} load {load:5.2f}  ours {got['ours']['sec'] * 1000:9.1f} ms  "
                  f"theirs {got['theirs']['sec'] * 1000:9.1f} ms  ratio {res['ratio'][-1]:.2f}", flush=True)  # fmt: skip
    print("\n| task | ours (ms) | MEGA's code (ms) | ours / theirs | target | peak RSS ours / theirs (GiB) |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        res = results[task]
        if not res["ratio"]:
            print(f"| {task} | failed | | | | |")
            continue
        per = PER_MESH.get(task, 1)
        unit = " per mesh" if per > 1 else ""
        med = {k: statistics.median(v) for k, v in res.items()}
        target = f"<= {TARGETS[task]}" if task in TARGETS else ""
        print(f"| {task}{unit} | {med['ours'] * 1000 / per:.1f} | {med['theirs'] * 1000 / per:.1f} | "
              f"{med['ratio']:.2f} (min {min(res['ratio']):.2f}, max {max(res['ratio']):.2f}) | {target} | "
              f"{med['rss_ours']:.2f} / {med['rss_theirs']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
