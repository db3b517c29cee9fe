"""The steps of benchmarks/gpu_check.sh: what drr's CUDA paths do on one GPU, as figures.

    python benchmarks/gpu_check.py STEP --out DIR [--tiny]

Steps (each writes DIR/<step>.json; `summary` writes DIR/summary.md and DIR/summary.json):

    device       torch and CUDA versions, device, driver, a bf16 and an fp32 matmul (TFLOP/s), host and
                 GPU memory of a process that has initialised CUDA
    train-loop   python -m drr.transformer.train on a small config (bf16, torch.compile) on random code
                 maps: stopped by SIGUSR2 (what submitit's SLURM jobs get before their time limit) after
                 a few steps, then run again, which must resume from the saved state and finish
    train-1400m  benchmarks/train_bench.py on the 1.4B config (random weights): step time, MFU and peak
                 memory at the per-GPU batch of 8 GPUs (512 / 8) and of 32 GPUs (512 / 32)
    sample-821m  drr.sampling.speed on the 821M config (random weights) at Table 4's settings (batch
                 100, T_revise 2, M 2, guidance in the revise phase), T_draft 8 and 64, bf16 and fp32
    inception    benchmarks/metrics_bench.py: Inception images/s at batch 100
    decode       the 8x8x4 tokenizer decoding 256-px images: peak GPU memory per image (the
                 reconstruction report decodes 256 at once)
    summary      the table of every step's figures

--tiny (or GPU_CHECK_TINY=1): the CPU and tiny sizes, so that tests/test_gpu_check.py runs the same
code in a minute. No step needs the network. The calls into drr are in the CALLS section below,
so that a changed entry point or flag is changed in one place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GiB = 2 ** 30


# --------------------------------------------------------------------------------------------------
# CALLS: today's entry points and flags (adjust here when they change).
# --------------------------------------------------------------------------------------------------

def train_command(config: str, settings: list[str], tokenizer: Path, codes: Path, out: Path) -> list[str]:
    """The real training loop, as the workflow's train_transformer rule runs it."""
    cmd = [sys.executable, "-m", "drr.transformer.train", "--config", config]
    for s in settings:
        cmd += ["--set", s]
    return cmd + ["--tokenizer", str(tokenizer), "--codes", str(codes), "--out", str(out)]


def train_loop_settings(tiny: bool, steps: int) -> list[str]:
    model = (["transformer.model.n_spatial=2", "transformer.model.d_model=64", "transformer.model.head_dim=32"]
             if tiny else ["transformer.model.n_spatial=8", "transformer.model.d_model=512",
                           "transformer.model.head_dim=64"])
    return model + [f"transformer.train.steps={steps}", "transformer.train.batch_size=" + ("8" if tiny else "128"),
                    "transformer.train.warmup_steps=2", "transformer.train.log_every=1",
                    "transformer.train.checkpoint_every=100000",
                    "transformer.train.precision=" + ("fp32" if tiny else "bf16"),
                    "transformer.train.compile=" + ("false" if tiny else "true")]


def train_bench_command(experiment: str, batch: int, steps: int, warmup: int, compile_: bool) -> list[str]:
    cmd = [sys.executable, str(REPO / "benchmarks/train_bench.py"), "--experiment", experiment,
           "--batch-size", str(batch), "--steps", str(steps), "--warmup", str(warmup)]
    return cmd + (["--compile"] if compile_ else [])


def speed_record(cfg: dict, models, precision: str, device: str) -> dict:
    """drr.sampling.speed.measure with models in memory (random weights: speed does not depend on them)."""
    from drr.sampling.speed import measure
    return measure(cfg, None, None, precision=precision, device=device, models=models)


def inception_bench_command(config: str, images: int, batch: int, device: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks/metrics_bench.py"), "--config", config, "--images",
            str(images), "--batch", str(batch), "--device", device, "--skip-fid"]


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, flush=True)


def save(out: Path, step: str, result: dict) -> None:
    (out / f"{step}.json").write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result.items():
        log(f"{step}: {k} = {v}")


def device_of(tiny: bool):
    import torch
    if tiny or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def step_device(out: Path, tiny: bool) -> None:
    try:
        log(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"nvidia-smi: {e}")
    before = rss()
    import torch
    dev = device_of(tiny)
    r = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
         "device": str(dev)}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        free0, total = torch.cuda.mem_get_info(dev)
        r.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=total / GiB,
                 cuda_context_gib=(total - free0) / GiB, host_rss_after_cuda_init_gib=(rss() - before) / GiB)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            r["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            r["driver"] = None
    n = 256 if tiny else 8192
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        (a @ a).sum().item()  # warm-up, and proof that the kernel runs
        reps = 2 if tiny else 10
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            c = a @ a
        if dev.type == "cuda":
            torch.cuda.synchronize()
        r[f"matmul_{str(dtype).split('.')[1]}_tflops"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
        r[f"matmul_{str(dtype).split('.')[1]}_finite"] = bool(torch.isfinite(c).all())
    save(out, "device", r)


def random_inputs(folder: Path, cfg: dict, rows: int) -> tuple[Path, Path]:
    """A random-weight tokenizer checkpoint and a code map of random codes made 'with' it."""
    import numpy as np
    import torch

    from drr.codes.store import CodeMapWriter
    from drr.core.files import sha256_file
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    torch.manual_seed(0)
    tok = folder / "tokenizer.pt"
    save_tokenizer(RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])), cfg, tok)
    h, w, d = cfg["tokenizer"]["model"]["code_shape"]
    k = cfg["tokenizer"]["model"]["codebook_size"]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, cfg["transformer"]["model"]["cond"]["num_classes"], rows)
    meta = {"code_shape": [h, w, d], "codebook_size": k, "tokenizer_sha256": sha256_file(tok),
            "dataset": "synthetic", "split": "train"}
    writer = CodeMapWriter(folder / "codes", meta, rows_per_shard=100_000)
    writer.write(np.arange(rows), rng.integers(0, k, (rows, h, w, d)).astype(np.int16), label=labels)
    writer.finish()
    return tok, folder / "codes"


def _metrics_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)
    except OSError:
        return 0


def step_train_loop(out: Path, tiny: bool) -> None:
    """Run, stop with SIGUSR2 after a few logged steps, run again: it must resume and finish."""
    from drr.core.config import load_config, override_from_dotted

    config = "configs/experiments/tiny.yaml"
    steps, stop_after = (12, 3) if tiny else (60, 10)
    settings = train_loop_settings(tiny, steps)
    cfg = load_config(REPO / config, override_from_dotted(settings))
    work = out / "train-loop"
    work.mkdir(parents=True, exist_ok=True)
    tok, codes = random_inputs(work, cfg, 2000)
    ckpt = work / "run" / "checkpoint.pt"
    cmd = train_command(config, settings, tok, codes, ckpt)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    r = {"config": config, "settings": settings}
    t0 = time.monotonic()
    with open(work / "first.log", "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        metrics = work / "run" / "metrics.jsonl"
        while proc.poll() is None and _metrics_lines(metrics) < stop_after:
            time.sleep(0.2)
        r["first_steps_before_signal"] = _metrics_lines(metrics)
        r["seconds_to_signal"] = time.monotonic() - t0  # includes start-up and torch.compile
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR2)
        r["first_exit_code"] = proc.wait(timeout=600)
    first = (work / "first.log").read_text()
    stopped = re.search(r"stopping on (\S+) at step (\d+)", first)
    r["stopped_at_step"] = int(stopped.group(2)) if stopped else None
    t1 = time.monotonic()
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    (work / "second.log").write_text(second.stdout + second.stderr)
    resumed = re.search(r"resuming from \S+ at step (\d+)", second.stderr)
    r.update(resumed_at_step=int(resumed.group(1)) if resumed else None, second_exit_code=second.returncode,
             second_seconds=time.monotonic() - t1, finished=ckpt.is_file())
    r["ok"] = bool(r["stopped_at_step"] and r["resumed_at_step"] == r["stopped_at_step"] and r["finished"]
                   and second.returncode == 0)
    save(out, "train-loop", r)
    if not r["ok"]:
        raise SystemExit(f"train-loop: did not stop, resume and finish as expected (see {work}/*.log)")


def step_train_1400m(out: Path, tiny: bool) -> None:
    """The 1.4B model's training step on one GPU at the per-GPU batches of 8 and 32 GPUs."""
    exp, batches, steps, warmup = (("tiny", [8, 2], 2, 1) if tiny else ("in256-crq-1400m", [64, 16], 8, 3))
    r = {"experiment": exp}
    for b in batches:
        run = subprocess.run(train_bench_command(exp, b, steps, warmup, not tiny), capture_output=True,
                             text=True, cwd=REPO, timeout=900)
        text = run.stdout + run.stderr
        (out / f"train-1400m-batch{b}.log").write_text(text)
        got = {"exit_code": run.returncode}
        for key, pattern in (("step_ms", r"step ([\d.]+) ms"), ("mfu_percent", r"MFU ([\d.]+)%"),
                             ("peak_memory_gib", r"peak memory ([\d.]+) GiB"),
                             ("peak_rss_gib", r"peak RSS ([\d.]+) GiB"), ("tflops", r"model FLOP/s ([\d.]+) T")):
            m = re.search(pattern, text)
            got[key] = float(m.group(1)) if m else None
        if run.returncode != 0:
            got["error"] = (text.strip().splitlines() or ["no output"])[-1]
        r[f"batch_{b}"] = got
    save(out, "train-1400m", r)
    if any(r[f"batch_{b}"]["exit_code"] for b in batches):
        raise SystemExit("train-1400m: a run failed (see the logs)")


def random_models(cfg: dict, device):
    import torch

    from drr.sampling.models import Models
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    from drr.transformer.model import ContextualRQTransformer, TransformerConfig

    torch.manual_seed(0)
    tok = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).to(device).eval()
    tr = ContextualRQTransformer(TransformerConfig.from_experiment(cfg),
                                 tok.quantizer.codebook_weights(0)).to(device).eval()
    return Models(tr, tok, {}, "random-weights", "random-weights", Path("-"), Path("-"))


def step_sample_821m(out: Path, tiny: bool) -> None:
    import torch

    from drr.core.config import load_config, override_from_dotted
    exp = "tiny" if tiny else "in256-crq-821m"
    batch, batches = (4, 1) if tiny else (100, 1)
    dev = device_of(tiny)
    base = load_config(REPO / f"configs/experiments/{exp}.yaml", override_from_dotted([
        f"generation.speed_batch_size={batch}", f"generation.speed_batches={batches}",
        "sampling.t_revise=2", "sampling.revise_iterations=2", "sampling.guidance_in=revise"]))
    models = random_models(base, dev)
    r = {"experiment": exp, "batch": batch, "timed_batches": batches}
    for t_draft in (8, 64):
        for precision in ("bf16", "fp32"):
            cfg = load_config(REPO / f"configs/experiments/{exp}.yaml", override_from_dotted([
                f"generation.speed_batch_size={batch}", f"generation.speed_batches={batches}",
                "sampling.t_revise=2", "sampling.revise_iterations=2", "sampling.guidance_in=revise",
                f"sampling.t_draft={t_draft}"]))
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            rec = speed_record(cfg, models, precision, str(dev))
            key = f"t_draft_{t_draft}_{precision}"
            r[key] = {"s_per_sample": rec["s_per_sample"], "draft": rec["s_per_sample_draft"],
                      "revise": rec["s_per_sample_revise"], "decode": rec["s_per_sample_decode"],
                      "peak_memory_gib": (torch.cuda.max_memory_allocated() / GiB if dev.type == "cuda" else None)}
            log(f"sample-821m: {key}: {r[key]}")
    save(out, "sample-821m", r)


def step_inception(out: Path, tiny: bool) -> None:
    config = "configs/experiments/tiny.yaml" if tiny else "configs/experiments/in256-crq-821m.yaml"
    images, batch, dev = (8, 4, "cpu") if tiny else (3000, 100, "cuda")
    run = subprocess.run(inception_bench_command(config, images, batch, dev), capture_output=True, text=True,
                         cwd=REPO, timeout=900)
    text = run.stdout + run.stderr
    (out / "inception-bench.log").write_text(text)
    m = re.search(r"([\d.,]+) images/s", text)
    r = {"config": config, "batch": batch, "images": images, "exit_code": run.returncode,
         "images_per_s": float(m.group(1).replace(",", "")) if m else None,
         "line": next((line for line in text.splitlines() if "images/s" in line), None)}
    save(out, "inception", r)
    if run.returncode != 0:
        raise SystemExit(f"inception: metrics_bench failed: {(text.strip().splitlines() or ['?'])[-1]}")


def step_decode(out: Path, tiny: bool) -> None:
    """Peak memory of the 8x8x4 tokenizer decoding batches of code maps (fp32, as drr decodes)."""
    import torch

    from drr.core.config import load_config
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    exp = "tiny" if tiny else "in256-crq-821m"
    dev = device_of(tiny)
    cfg = load_config(REPO / f"configs/experiments/{exp}.yaml")
    mc = cfg["tokenizer"]["model"]
    tok = RQVAE(RQVAEConfig(**mc)).to(dev).eval()
    r = {"experiment": exp, "resolution": cfg["data"]["resolution"]}
    for batch in ((2, 4) if tiny else (20, 64)):
        codes = torch.randint(0, mc["codebook_size"], (batch, *mc["code_shape"]), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            t0 = time.perf_counter()
            tok.decode_codes(codes)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            r[f"batch_{batch}_s_per_image"] = (time.perf_counter() - t0) / batch
        if dev.type == "cuda":
            r[f"batch_{batch}_peak_gib_per_image"] = (torch.cuda.max_memory_allocated() - base) / GiB / batch
    save(out, "decode", r)


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

def step_summary(out: Path, tiny: bool) -> None:
    rows = []
    steps_file = out / "steps.tsv"
    for line in (steps_file.read_text().splitlines() if steps_file.is_file() else []):
        name, status, wall, limit, *rest = line.split("\t")
        rows.append({"step": name, "status": status, "seconds": float(wall), "limit_s": int(limit),
                     "exit_code": int(rest[0]) if rest and rest[0] else None})
    results = {}
    for row in rows:
        f = out / f"{row['step']}.json"
        if f.is_file():
            results[row["step"]] = json.loads(f.read_text())
    summary = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "tiny": tiny, "steps": rows, "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# GPU check{' (tiny, CPU)' if tiny else ''}, {summary['date']}", "",
             "| step | status | seconds | limit s |", "|---|---|--:|--:|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']:.0f} | {r['limit_s']} |" for r in rows]
    for name, res in results.items():
        lines += ["", f"## {name}", ""]
        lines += [f"- {k}: {json.dumps(v)}" for k, v in res.items() if k != "settings"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


STEPS = {"device": step_device, "train-loop": step_train_loop, "train-1400m": step_train_1400m,
         "sample-821m": step_sample_821m, "inception": step_inception, "decode": step_decode,
         "summary": step_summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1",
                   help="CPU and tiny sizes (tests); also GPU_CHECK_TINY=1")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    STEPS[args.step](args.out, args.tiny)


if __name__ == "__main__":
    main()
