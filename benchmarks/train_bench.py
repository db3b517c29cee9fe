"""Training throughput of an RQ-Transformer (contextual or AR, the config's kind): code tokens/s,
step time, peak memory and, on a GPU, model FLOPs utilisation (MFU) against the GPU's dense bf16
peak.

    python benchmarks/train_bench.py                                   # tiny config, this machine
    python benchmarks/train_bench.py --experiment in256-crq-821m --batch-size 64   # on a GPU

Random code maps and labels stand in for data (throughput does not depend on them); the positions
scored are those of drr.transformer.train (eq.-10 masks for the contextual model, every position
for the AR model). FLOPs are counted analytically (drr.transformer.flops.train_flops_per_sample,
for the expected eq.-10 mask count): 2 FLOPs per multiply-add in every matmul of the spatial
transformer over its sequence, of the depth transformer over the scored positions times D,
attention scores and values included, and 3x the forward for a training step. Target: MFU >= 40%
of bf16 peak on one H100.
"""

from __future__ import annotations

import argparse
import time

import torch

from drr.core.config import REPO, load_config, override_from_dotted
from drr.core.device import autocast
from drr.transformer.build import build_transformer
from drr.transformer.flops import train_flops_per_sample
from drr.transformer.model import TransformerConfig, masked_nll
from drr.transformer.train import score_positions

BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="tiny")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's, per process")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="autocast of the forward pass (drr.core.device.autocast): auto is bf16 on CUDA, "
                        "fp32 on the CPU")
    p.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(REPO / f"configs/experiments/{args.experiment}.yaml",
                      override_from_dotted([]))
    c = TransformerConfig.from_experiment(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    b = args.batch_size or cfg["transformer"]["train"]["batch_size"]
    model = build_transformer(c, torch.randn(c.codebook_size, c.embed_dim)).to(device)
    net = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, c.codebook_size, (b, c.num_positions, c.depth), generator=g).to(device)
    cond = torch.randint(0, c.cond_vocab, (b, c.cond_length), generator=g).to(device)
    def step():
        mask = score_positions(c.kind, b, c.num_positions, g).to(device)
        with autocast(device, args.precision):
            loss = masked_nll(net(codes, mask, cond))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps

    params = sum(p.numel() for p in model.parameters())
    tokens = b * c.num_positions * c.depth
    gpu = device.type == "cuda"
    print(f"experiment {args.experiment} ({c.kind}): {params / 1e6:.1f}M parameters, batch {b}, "
          f"device {torch.cuda.get_device_name() if gpu else 'cpu'} ({torch.get_num_threads()} threads), "
          f"precision {args.precision}, {'compiled' if args.compile else 'eager'}")
    print(f"step {dt * 1e3:.1f} ms, {tokens / dt:,.0f} code tokens/s, {b / dt:,.1f} code maps/s")
    flops = train_flops_per_sample(c) * b / dt
    print(f"model FLOP/s {flops / 1e12:.2f} T (analytic{', expected mask count' if c.kind != 'ar' else ''})")
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
        if peak:
            print(f"MFU {flops / peak:.1%} of {name}'s dense bf16 peak {peak / 1e12:.0f} TFLOP/s")
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        import resource
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
