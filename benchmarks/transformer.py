"""Masked token transformer: training tokens/s with model FLOPs utilisation, and generation meshes/s.

    python benchmarks/transformer.py [--device cuda] [--model small|paper|tiny] [--threads 2]

Prints:
1. the machine's measured matmul peak (GFLOP/s of an n x n x n matmul) in fp32 and bf16 (on CUDA, fp32
   means true fp32: TF32 is switched off for that measurement and for the fp32 training run);
2. training steps (forward + backward + AdamW) on random ids with per-sample cosine masks, in fp32 and
   under bf16 autocast: tokens/s (B * L per step) and MFU = model FLOPs/s / peak of the same dtype.
   Model FLOPs count the matmuls of the useful work (visible tokens in the encoder, all tokens in the
   decoder, the head) times 3 for the backward; padding slots of the encoder are not counted;
3. random generation (MaskGIT, MEGA's schedule: T = 20) of Q = 1 and Q = 64 meshes in one call,
   sampling plus decoding the ids to meshes, as meshes/s. The decoder is the package's mesh tokenizer
   (``mesh_vqvae``, untrained weights: speed only) or, if it cannot be built, a stand-in linear decoder
   of the same output size; the printout says which.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import matmul_gflops, median_seconds

import mega  # noqa: F401
from mega.samplers import sample_maskgit
from mega.transformer import MaskedTokenTransformer, masked_cross_entropy, sample_training_mask

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "transformer"
NUM_VERTICES = 6890


def forward_flops(model: MaskedTokenTransformer, mask: torch.Tensor, num_context: int = 0) -> float:
    """Matmul FLOPs of one forward pass on ``mask`` (B, L); attention scores and values included."""

    def stack(blocks: torch.nn.ModuleList, tokens: torch.Tensor) -> float:
        if len(blocks) == 0:
            return 0.0
        width = blocks[0].norm1.normalized_shape[0]
        hidden = blocks[0].mlp[0].out_features
        linear = 2 * tokens.sum() * (4 * width * width + 2 * width * hidden)
        attention = 4 * (tokens.double() ** 2).sum() * width
        return float(len(blocks) * (linear + attention))

    B, L = mask.shape
    visible = (~mask).sum(1).double()  # (B,)
    if bool(mask.all()):
        visible = torch.zeros_like(visible)
    enc_width = model.encoder_pos.shape[-1]
    dec_width = model.mask_embed.shape[-1]
    flops = stack(model.encoder_blocks, visible) + float(2 * visible.sum() * enc_width * dec_width)
    flops += stack(model.decoder_blocks, torch.full((B,), float(L + num_context), dtype=torch.float64))
    return flops + 2 * B * L * dec_width * model.codebook_size


def build_decoder(device: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], str, int, int]:
    """The ids -> mesh decoder used for generation timing, its description, L and K."""
    try:
        from mega.tokenizers import build_tokenizer

        tok = build_tokenizer("mesh_vqvae", num_vertices=NUM_VERTICES).to(device).eval()
        return tok.decode, "mesh_vqvae tokenizer (untrained weights)", tok.num_tokens, tok.codebook_size
    except Exception as err:  # noqa: BLE001 - any failure falls back to the documented stand-in
        L, K = 54, 512
        embed = torch.nn.Embedding(K, 9).to(device)
        linear = torch.nn.Linear(L * 9, NUM_VERTICES * 3).to(device)

        def decode(ids: torch.Tensor) -> torch.Tensor:
            return linear(embed(ids).flatten(1)).reshape(-1, NUM_VERTICES, 3)

        return decode, f"STAND-IN linear decoder (tokenizer unavailable: {err})", L, K


def bench_training(model, L, K, batch, device, precision, repeats):
    """Seconds per training step and mean model FLOPs per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, K, (batch, L), generator=g).to(device)
    masks = [sample_training_mask(batch, L, generator=g, device=device) for _ in range(repeats + 2)]
    flops = statistics.mean(3 * forward_flops(model, m) for m in masks)
    it = iter(masks * 2)

    def step() -> None:
        mask = next(it)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = masked_cross_entropy(model(ids, mask), ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_seconds(step, device, repeats, warmup=2), flops


def bench_generation(model, decode, L, K, num_samples, device, precision, repeats):
    """Seconds to sample and decode ``num_samples`` meshes in one call (B = 1)."""
    g = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def generate() -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            res = sample_maskgit(
                model,
                batch_size=1,
                num_tokens=L,
                codebook_size=K,
                num_samples=num_samples,
                generator=g,
                device=device,
            )
            return decode(res.ids.flatten(0, 1))

    return median_seconds(generate, device, repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--model", default=None, help="configs/transformer/<name>.yaml (default: paper on cuda)"
    )
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 256 cuda, 32 cpu)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    torch.set_num_threads(args.threads)
    name = args.model or ("paper" if cuda else "small")
    batch = args.batch or (256 if cuda else 32)
    repeats = args.repeats or (20 if cuda else 5)
    n = 8192 if cuda else 1024

    decode, decoder_name, L, K = build_decoder(args.device)
    kwargs = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {device_name}; torch {torch.__version__}; model '{name}' (L={L}, K={K}); decoder: {decoder_name}"
    )

    peaks = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
        peaks[label] = matmul_gflops(args.device, n, repeats, dtype, warmup=2)
        print(f"matmul peak {label}: {peaks[label]:10.1f} GFLOP/s  ({n}^3)")

    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = MaskedTokenTransformer(L, K, **kwargs).to(args.device).train()
        seconds, flops = bench_training(model, L, K, batch, args.device, precision, repeats)
        achieved = flops / seconds / 1e9
        print(
            f"train {precision}: B={batch} {seconds * 1e3:8.1f} ms/step  {batch * L / seconds:10.0f} tokens/s  "
            f"{achieved:9.1f} GFLOP/s  MFU {100 * achieved / peaks[precision]:5.1f}% of {precision} peak"
        )
        model.eval()
        for q in (1, 64):
            sec = bench_generation(model, decode, L, K, q, args.device, precision, max(2, repeats // 4))
            print(f"generate {precision}: Q={q:3d} T=20  {sec * 1e3:9.1f} ms/call  {q / sec:8.1f} meshes/s")
        del model


if __name__ == "__main__":
    main()
