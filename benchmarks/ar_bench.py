"""Sampling speed of the autoregressive RQ-Transformer vs. Draft-and-Revise for the same model size
(paper Table 4: s/sample at batch 100; the paper reports RQ-Transformer 1.4B 0.04 s/sample and
Contextual RQ-Transformer 821M with T_draft 8 ... 64 against it).

    python benchmarks/ar_bench.py                     # tiny size on this machine; 821M on CUDA
    python benchmarks/ar_bench.py --batch 20 --batches 1 --t-draft 8 64

For each size, two models with random weights (speed does not depend on them) and the same
transformer sizes, one of each `transformer.model.kind`:

* ar: raster-order sampling with key/value caches (drr.sampling.ar.sample_raster; no guidance, as
  the official RQ-Transformer; sampling.ar defaults: temperature 1, no top-k/top-p);
* contextual: Draft-and-Revise with each --t-draft, T_revise 2, M 2, guidance in the revise phase
  (the paper's Table 4 settings).

Timing is drr.sampling.speed.measure's (one warm-up batch, then --batches timed batches; CUDA
events on a GPU, perf_counter on a CPU), split into the transformer's sampling and the tokenizer's
decode to images. Sizes: the tiny experiment (configs/experiments/tiny.yaml: 8x8x4 codes, 32 px,
1.0M-parameter transformer) in fp32 on the CPU or GPU at hand, and with CUDA also
configs/experiments/in256-crq-821m.yaml (821M, 256 px) with bf16 autocast for the transformer.
Prints the figures; writes nothing.
"""

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drr.core.config import load_config  # noqa: E402


def random_models(cfg, device):
    from drr.sampling.models import Models
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    from drr.transformer.build import build_transformer
    from drr.transformer.model import TransformerConfig

    torch.manual_seed(0)
    tok = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).to(device).eval()
    tr = build_transformer(TransformerConfig.from_experiment(cfg),
                           tok.quantizer.codebook_weights(0)).to(device).eval()
    return Models(tr, tok, {}, "random-weights", "random-weights", Path("-"), Path("-"))


def measure(label, cfg, models, precision, device) -> dict:
    from drr.sampling.speed import measure as speed_measure

    rec = speed_measure(cfg, None, None, precision=precision, device=device, models=models)
    sampling = rec["s_per_sample"] - rec["s_per_sample_decode"]
    mem = rec["peak_cuda_memory_bytes"]
    print(f"{label}: {rec['s_per_sample']:.4f} s/sample = sampling {sampling:.4f} + decode "
          f"{rec['s_per_sample_decode']:.4f} | batch {rec['batch_size']} x {rec['timed_batches']}, "
          f"{precision}, {rec['transformer_parameters'] / 1e6:.1f}M params, {rec['device']}"
          + (f", peak CUDA memory {mem / 2**30:.2f} GiB" if mem is not None else ""), flush=True)
    return {"total": rec["s_per_sample"], "sampling": sampling}


def compare(name: str, experiment: Path, t_drafts, batch: int, batches: int, precision: str,
            device: str) -> None:
    run = {"generation": {"batch_size": batch, "speed_batches": batches}}
    paper = {"sampling": {"t_revise": 2, "revise_iterations": 2, "guidance_in": "revise"}}
    ar_cfg = load_config(experiment, run, {"transformer": {"model": {"kind": "ar"}}})
    ar_models = random_models(ar_cfg, device)
    ar = measure(f"{name} AR (raster order, KV cache)", ar_cfg, ar_models, precision, device)
    del ar_models
    ctx_models = None
    for t in t_drafts:
        cfg = load_config(experiment, run, paper, {"sampling": {"t_draft": t}})
        if ctx_models is None:
            ctx_models = random_models(cfg, device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = measure(f"{name} Draft-and-Revise T_draft {t}, T_revise 2, M 2", cfg, ctx_models,
                    precision, device)
        print(f"  {name}: Draft-and-Revise T_draft {t} / AR = {r['total'] / ar['total']:.2f}x "
              f"s/sample in all, {r['sampling'] / ar['sampling']:.2f}x in the transformer's "
              f"sampling", flush=True)
    del ctx_models
    if device == "cuda":
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=100, help="samples per batch (paper: 100)")
    p.add_argument("--batches", type=int, default=2, help="timed batches after one warm-up")
    p.add_argument("--t-draft", type=int, nargs="+", default=[8, 64],
                   help="T_draft values of the Draft-and-Revise runs (Table 4: 8 ... 64)")
    p.add_argument("--skip-tiny", action="store_true")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.skip_tiny:
        compare("tiny", REPO / "configs/experiments/tiny.yaml", args.t_draft, args.batch,
                args.batches, "fp32", device)
    if torch.cuda.is_available():
        compare("in256 821M", REPO / "configs/experiments/in256-crq-821m.yaml", args.t_draft,
                args.batch, args.batches, "bf16", device)
    else:
        print("in256 821M: skipped (no CUDA device)", flush=True)


if __name__ == "__main__":
    main()
