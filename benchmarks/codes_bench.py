"""Encode throughput and Parquet bytes per image (issue target: <= 600 bytes/image for 8x8x4 codes).

    python benchmarks/codes_bench.py                       # tiny tokenizer, random weights, CPU/GPU
    python benchmarks/codes_bench.py --experiment in256-crq-821m --images 256 --batch 32

Prints: images/s of RQ-VAE encoding at the experiment's resolution (random weights: the speed does
not depend on them), and the on-disk size of a code map of --rows rows. With --codes DIR, the size
is measured on a real code map folder instead of random codes.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drr.codes.store import CodeMap, CodeMapWriter  # noqa: E402
from drr.core.config import load_config  # noqa: E402
from drr.tokenizer.model import RQVAE, RQVAEConfig  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--experiment", default="tiny")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rows", type=int, default=50000)
    p.add_argument("--codes", type=Path, help="measure bytes/image of this code map folder")
    args = p.parse_args()

    cfg = load_config(f"configs/experiments/{args.experiment}.yaml")
    mcfg = RQVAEConfig(**cfg["tokenizer"]["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = RQVAE(mcfg).to(device).eval()
    R = cfg["data"]["resolution"]
    x = torch.rand(args.batch, 3, R, R, device=device) * 2 - 1
    with torch.no_grad():
        model.encode(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        while n < args.images:
            model.encode(x)
            n += args.batch
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    print(f"encode: {n / dt:.1f} images/s ({args.experiment}, {R}px, batch {args.batch}, "
          f"{device}, {torch.get_num_threads()} threads)")

    if args.codes:
        cm = CodeMap(args.codes)
        size = sum(p.stat().st_size for p in args.codes.glob("part-*.parquet"))
        print(f"parquet: {size / len(cm):.1f} bytes/image ({len(cm)} rows, codes "
              f"{'x'.join(map(str, cm.code_shape))}, K={cm.meta['codebook_size']}, {args.codes})")
        return
    H, W, D = mcfg.code_shape
    K = mcfg.codebook_size
    rng = np.random.default_rng(0)
    codes = rng.integers(0, K, size=(args.rows, H, W, D))
    meta = {"code_shape": [H, W, D], "codebook_size": K, "tokenizer_sha256": "0" * 64,
            "dataset": "random", "split": "bench", "num_rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        w = CodeMapWriter(Path(tmp) / "m", meta, rows_per_shard=args.rows)
        w.write(np.arange(args.rows), codes, rng.integers(0, 1000, args.rows))
        w.finish()
        size = sum(p.stat().st_size for p in (Path(tmp) / "m").glob("part-*.parquet"))
    print(f"parquet: {size / args.rows:.1f} bytes/image for uniformly random codes "
          f"{H}x{W}x{D}, K={K} (an upper bound: real codes compress better)")


if __name__ == "__main__":
    main()
