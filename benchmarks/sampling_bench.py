"""Sampling speed (paper Table 4: s/sample at batch 100) and generation memory vs. sample count.

    python benchmarks/sampling_bench.py                  # tiny model; plus the 821M model on CUDA
    python benchmarks/sampling_bench.py --batches 2 --t-draft 8 32 64 --skip-memory
    python benchmarks/sampling_bench.py --experiment small --cpu-t-draft 8 64 --strategy random top-c \
        --batches 1 --skip-memory                       # the small suite's ablation variants, on a CPU
    python benchmarks/sampling_bench.py --precision fp32 bf16 --skip-memory   # bf16 against fp32

1. Speed of the tiny experiment (configs/experiments/tiny.yaml: 8x8x4 codes, 32 px; or
   --experiment small) with random weights (speed does not depend on them) at the paper's
   settings: T_draft from the config (or each --cpu-t-draft), T_revise 2, M 2, guidance in the
   revise phase, the config's UPDATE rule (or each --strategy), batch 100; fp32 (or each
   --precision), split into draft / revise / decode (drr.sampling.speed.measure: one warm-up
   batch, then --batches timed batches, timed at the sampler's phase hook).
2. With CUDA: the same for configs/experiments/in256-crq-821m.yaml (random weights, bf16 autocast
   for the transformer, fp32 tokenizer decode at 256 px) for each --t-draft (Table 4's rows: 8,
   32, 64), with the peak CUDA memory.
3. Memory: drr.sampling.generate in a fresh process for 2 and then 4 shards of --shard-size
   samples (a 16 px model so that it runs in seconds on a CPU; drafts saved too): max RSS,
   tracemalloc peak of the generate call (numpy's uint8 buffers are traced; imports
   come before tracing) and CUDA peak memory, next to the size of
   samples.npz. Memory that stays flat while the output doubles shows that neither generation nor
   the merge holds all samples.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drr.core.config import load_config, override_from_dotted  # noqa: E402

# The 16 px / 4x4x2 model of the tests (tests/transformer_fixtures.py), for the memory runs.
SMALL = ["tokenizer.model.ch=32", "tokenizer.model.ch_mult=[1, 2, 2]",
         "tokenizer.model.z_channels=32", "tokenizer.model.embed_dim=16",
         "tokenizer.model.codebook_size=32", "tokenizer.model.code_shape=[4, 4, 2]",
         "data.resolution=16", "transformer.model.n_spatial=2", "transformer.model.n_depth=1",
         "transformer.model.d_model=32", "transformer.model.head_dim=16",
         "transformer.model.cond.num_classes=3"]


def random_models(cfg, device):
    from drr.sampling.models import Models
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    from drr.transformer.model import ContextualRQTransformer, TransformerConfig

    torch.manual_seed(0)
    tok = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).to(device).eval()
    tr = ContextualRQTransformer(TransformerConfig.from_experiment(cfg),
                                 tok.quantizer.codebook_weights(0)).to(device).eval()
    return Models(tr, tok, {}, "random-weights", "random-weights", Path("-"), Path("-"))


def speed(name, cfg, models, precision, device):
    from drr.sampling.speed import measure

    rec = measure(cfg, None, None, precision=precision, device=device, models=models)
    s = cfg["sampling"]
    mem = rec["peak_cuda_memory_bytes"]
    print(f"{name}: {rec['s_per_sample']:.4f} s/sample = draft {rec['s_per_sample_draft']:.4f} "
          f"+ revise {rec['s_per_sample_revise']:.4f} + decode {rec['s_per_sample_decode']:.4f} "
          f"| T_draft {s['t_draft']}, T_revise {s['t_revise']}, M {s['revise_iterations']}, "
          f"guidance {s['guidance_scale']} in {s['guidance_in']}, batch {rec['batch_size']} x "
          f"{rec['timed_batches']}, {rec['precision']}, {rec['transformer_parameters'] / 1e6:.1f}M params, "
          f"{rec['device']}, torch {rec['torch']}"
          + (f", peak CUDA memory {mem / 2**30:.2f} GiB" if mem is not None else ""), flush=True)
    return rec


def memory_child(folder: Path, shards: int, shard_size: int, batch: int) -> None:
    """Runs in a fresh process: generate `shards` shards and merge, print memory as JSON."""
    import PIL.Image  # noqa: F401  (imported before tracing: the trace is of generation only)
    import torchvision  # noqa: F401

    import drr.sampling.decode  # noqa: F401
    import drr.sampling.images  # noqa: F401
    import drr.tokenizer.io  # noqa: F401
    import drr.tokenizer.model  # noqa: F401
    import drr.transformer.io  # noqa: F401
    import drr.transformer.model  # noqa: F401
    from drr.sampling.generate import generate

    cfg = load_config(REPO / "configs/experiments/tiny.yaml", override_from_dotted(SMALL + [
        f"generation.num_samples={shards * shard_size}", f"generation.shard_size={shard_size}",
        f"generation.batch_size={batch}", "generation.save_drafts=true"]))
    tracemalloc.start()
    t0 = time.perf_counter()
    out = folder / f"out-{shards}"
    npz = generate(cfg, folder / "tokenizer.pt", folder / "transformer.pt", out)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({
        "shards": shards, "samples": shards * shard_size, "seconds": time.perf_counter() - t0,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tracemalloc_peak_mib": peak / 2**20,
        "cuda_peak_mib": (torch.cuda.max_memory_allocated() / 2**20
                          if torch.cuda.is_available() else None),
        "samples_npz_mib": npz.stat().st_size / 2**20}))


def memory(shard_size: int, batch: int) -> None:
    from drr.core.files import sha256_file
    from drr.tokenizer.io import save_tokenizer
    from drr.transformer.io import save_transformer

    cfg = load_config(REPO / "configs/experiments/tiny.yaml", override_from_dotted(SMALL))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = random_models(cfg, "cpu")
        save_tokenizer(models.tokenizer, cfg, folder / "tokenizer.pt")
        save_transformer(models.transformer, cfg, folder / "transformer.pt",
                         sha256_file(folder / "tokenizer.pt"))
        for shards in (2, 4):
            run = subprocess.run([sys.executable, __file__, "--memory-child", str(folder),
                                  str(shards), str(shard_size), str(batch)],
                                 capture_output=True, text=True, cwd=REPO)
            if run.returncode:
                sys.exit(run.stderr)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"memory, {r['shards']} shards ({r['samples']} samples + drafts, 16 px): "
                  f"max RSS {r['max_rss_mib']:.0f} MiB, tracemalloc peak "
                  f"{r['tracemalloc_peak_mib']:.2f} MiB"
                  + (f", CUDA peak {r['cuda_peak_mib']:.0f} MiB" if r["cuda_peak_mib"] else "")
                  + f"; samples.npz {r['samples_npz_mib']:.2f} MiB; {r['seconds']:.1f} s",
                  flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=100, help="samples per batch (paper: 100)")
    p.add_argument("--batches", type=int, default=2, help="timed batches after one warm-up")
    p.add_argument("--t-draft", type=int, nargs="+", default=[64],
                   help="T_draft values of the 821M runs (Table 4: 8 32 64)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard (memory runs)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-tiny", action="store_true", help="skip the CPU-size runs")
    p.add_argument("--experiment", default="tiny",
                   help="experiment of the CPU-size runs (configs/experiments/<name>.yaml): tiny, small")
    p.add_argument("--cpu-t-draft", type=int, nargs="+", default=[None],
                   help="T_draft values of the CPU-size runs (default: the experiment's)")
    p.add_argument("--strategy", nargs="+", default=[None],
                   help="draft-phase UPDATE rules of the CPU-size runs: random top-c top-c-50 "
                        "(default: the experiment's)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                   help="sampling.precision of the CPU-size runs (default: fp32)")
    p.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        folder, shards, size, batch = args.memory_child
        return memory_child(Path(folder), int(shards), int(size), int(batch))

    paper = {"sampling": {"t_revise": 2, "revise_iterations": 2, "guidance_in": "revise"},
             "generation": {"batch_size": args.batch, "speed_batches": args.batches}}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.skip_tiny:
        path = REPO / f"configs/experiments/{args.experiment}.yaml"
        models = random_models(load_config(path, paper), device)
        for t in args.cpu_t_draft:
            for strategy in args.strategy:
                for precision in args.precision:
                    values = {k: v for k, v in (("t_draft", t), ("strategy", strategy)) if v is not None}
                    cfg = load_config(path, paper, {"sampling": values})
                    label = "".join(f", {k} {v}" for k, v in values.items())
                    speed(f"{args.experiment} (random weights){label}", cfg, models, precision,
                          device)
    if torch.cuda.is_available():
        cfg = load_config(REPO / "configs/experiments/in256-crq-821m.yaml", paper)
        models = random_models(cfg, device)
        for t in args.t_draft:
            cfg_t = load_config(REPO / "configs/experiments/in256-crq-821m.yaml", paper,
                                {"sampling": {"t_draft": t}})
            torch.cuda.reset_peak_memory_stats()
            speed(f"in256-crq-821m (random weights), T_draft {t}", cfg_t, models, "bf16", device)
        del models
        torch.cuda.empty_cache()
    else:
        print("in256-crq-821m: skipped (no CUDA device)", flush=True)
    if not args.skip_memory:
        memory(args.shard_size, args.batch)


if __name__ == "__main__":
    main()
