"""What every job of a suite will cost, against what its rule asks for.

    python -m drr.workflow.resources --suite paper [--profile profiles/slurm/config.yaml]
        [--markdown] [--save-costs FILE | --costs FILE]

For each rule of the suite: its jobs, the predicted peak host memory, peak GPU memory and hours
of its largest job, what the rule requests (``profiles/slurm/config.yaml``: mem_mb, runtime, GPUs;
``transformer.launch`` of the experiment for training submitted through submitit, whose time is
the job's limit times its requeues), the margin (request / prediction) and the suite's GPU-hours.

How the predictions are made:

- **Sizes** come from the plan (drr.workflow.plan.Plan): images per split (after
  ``data.max_images``), samples per shard, steps, batch, GPUs, model widths.
- **Per-unit costs are measured on this machine** (`measure`), at sizes that run on a CPU:
  host bytes per sample of the metrics job (peak RSS of drr.metrics.score.score on synthetic
  features, in a subprocess, at N = 500, 2,000 and 8,000 and at two feature widths and two
  reference sizes), activation bytes and FLOPs per pixel of a trained tokenizer at two
  resolutions (saved tensors and torch's FLOP counter over one real training step), peak RSS per
  pixel of tokenizer encoding / decoding and of the Inception network at two sizes, activation
  bytes and FLOPs per sample of each transformer's training step at one and two spatial blocks
  (bf16 autocast; a depth block costs the same per token, checked with two depth blocks),
  parameter counts (drr.transformer.build.count_parameters), peak RSS per parameter byte of an
  official-checkpoint import at two model sizes, and the one-core float64 GEMM rate and JPEG
  decode rate. The probes run in one subprocess, forked once per probe, and take a few
  minutes.
- **The model** scales each per-unit cost to the job's sizes: memory linear in samples, pixels,
  batch and parameters; GPU time from FLOPs at the A100 rates and efficiencies of `Assumptions`
  (stated, not measured: no GPU has run drr); CPU time from the measured one-core rates times
  the job's cores at an assumed parallel efficiency.
- **Checks**: each per-unit cost measured at two sizes must grow no faster than the model says
  (`Measured.growth`), so a quadratic that creeps into the metrics job is seen at N = 8,000, not at
  50,000 on the cluster. tests/test_resources.py fails when a paper job's prediction exceeds its
  request or a growth check fails, except where a known misfit is marked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drr.core.config import REPO, load_config, read_yaml
from drr.core.errors import DrrError, user_errors
from drr.core.files import write_text

GiB = 2 ** 30
MB = 10 ** 6
PROFILE = "profiles/slurm/config.yaml"
RULE_FILES = "workflow/rules"

# Images per split of the paper's datasets (before data.max_images): ILSVRC-2012 train and val;
# CC-3M as the configs count it (3,318,333 training pairs, 15,840 validation pairs).
SPLIT_IMAGES = {("imagenet", "train"): 1_281_167, ("imagenet", "val"): 50_000,
                ("cc3m", "train"): 3_318_333, ("cc3m", "val"): 15_840,
                ("fashion-mnist", "train"): 60_000, ("fashion-mnist", "test"): 10_000}
# Official release tarballs (docs/paper-scale.md: parameter counts x 4 bytes of their state dicts).
RELEASE_BYTES = {"imagenet_1.4B_rqvae_50e": 6.1e9, "cc3m": 3.2e9}
INCEPTION_SIDE = 299        # the FID Inception's input side
INCEPTION_FEATURES = 2048   # pool features
INCEPTION_LOGITS = 1008     # torch-fidelity's 'logits_unbiased'


# --------------------------------------------------------------------------------------------------
# Assumptions: what is not measured here (no GPU has run drr). Each is printed with the table.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assumptions:
    gpu: str = "NVIDIA A100-SXM4-80GB"
    gpu_memory: float = 79.0 * GiB      # what PyTorch can allocate of the 80 GiB (81,920 MiB) card
    bf16_flops: float = 312e12          # dense tensor-core peak, bf16
    tf32_flops: float = 156e12          # dense tensor-core peak, TF32 (cuDNN convolutions in fp32 use it by default)
    fp32_flops: float = 19.5e12         # CUDA-core peak, fp32 without TF32 (PyTorch's matmul default; the
                                        # Inception network turns TF32 off for its convolutions too)
    hbm_bytes_per_s: float = 2.0e12     # memory bandwidth (a forward reads every weight once)
    mfu_train: float = 0.35             # transformer training, bf16 autocast + torch.compile, 8 GPUs
    mfu_tokenizer: float = 0.30         # tokenizer training (convolutions, LPIPS, discriminator), bf16
    mfu_sample_bf16: float = 0.30       # sampling forwards (batch 100, guidance doubles the rows) in bf16
    eff_fp32: float = 0.70              # fraction of the fp32 peak reached by the same forwards in fp32
    eff_conv: float = 0.30              # tokenizer encode/decode (TF32) and Inception (fp32): fraction of peak
    gpu_overhead: float = 1.20          # PyTorch's caching allocator and cuBLAS/cuDNN workspaces over live tensors
    cuda_context: float = 0.6 * GiB     # GPU memory of the CUDA context itself
    host_cuda: float = 2.0 * GiB        # host memory of a process that has initialised CUDA (libraries, context)
    worker: float = 0.5 * GiB           # host memory of each data-loader worker (its batches, copied pages)
    cpu_efficiency: float = 0.5         # a job's CPU work on its c cores: c x this machine's one-core rate x this
    io_bytes_per_s: float = 200e6       # one job's read or write rate on the shared file system
    download_bytes_per_s: float = 20e6  # fetching a release tarball
    start_hours: float = 0.05           # a GPU job's start: Python, CUDA, loading its models (3 minutes)
    bpe_bytes_per_caption: float = 200  # host bytes a caption takes in the BPE trainer (text, words, pair counts)
    bpe_captions_per_s: float = 2e4     # BPE training throughput (the tokenizers library, several threads)
    paper_days: float = 10.0            # paper App. A.3: at most 10 days on 8 A100s per model


# --------------------------------------------------------------------------------------------------
# Probes: per-unit costs measured on this machine. Each memory probe runs in a subprocess of its own
# (`python -m drr.workflow.resources --probe NAME ...`, JSON on stdout), so its peak RSS is its own.
# --------------------------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class SyntheticFeatures:
    """The Inception extractor's interface (drr.metrics.score) with `width` pool features and
    `logits` logits from a fixed random projection of the pixels: cheap, deterministic, distinct."""

    network = "synthetic"
    has_logits = True
    logits_note = None
    preprocessing = "synthetic: fixed random projection of the pixels"

    def __init__(self, width: int, logits: int, pixels: int):
        import torch
        self.id = f"synthetic/{width}x{logits}"
        self.pool_dim = width
        self.width = width
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(pixels, width + logits, generator=g) / math.sqrt(pixels / 12)

    def __call__(self, images):
        f = (images.float().flatten(1) / 255 - 0.5) @ self.w
        return {"pool": f[:, :self.width].numpy(), "logits": f[:, self.width:].numpy()}


def probe_metrics(n: int, width: int, logits: int, reference: int) -> dict:
    """Peak RSS of drr.metrics.score.score (one phase: features, FID, IS, KID, precision/recall and
    their bootstrap intervals) on `n` samples whose features are `width` wide, against `reference`
    reference features, from the paper's 821M experiment config. The features come from
    SyntheticFeatures: the job's code path after the Inception network, at a width a CPU runs."""
    import numpy as np

    from drr.metrics.reference import build_reference
    from drr.metrics.score import score

    side = 16
    tmp = Path(tempfile.mkdtemp(prefix="drr-probe-"))
    rng = np.random.default_rng(1)
    cfg = load_config(REPO / "configs/experiments/in256-crq-821m.yaml",
                      {"metrics": {"weights_dir": str(tmp / "weights"), "pr_reference_size": reference,
                                   "min_samples": None, "reference_images": None}})
    a = rng.normal(size=(width, width))
    np.savez(tmp / "adm.npz", mu=rng.normal(size=width), sigma=a @ a.T / width,
             arr_0=rng.integers(0, 256, (reference, side, side, 3), dtype=np.uint8))
    features = SyntheticFeatures(width, logits, 3 * side * side)
    build_reference(cfg, tmp / "ref.npz", extractor=features, import_path=tmp / "adm.npz",
                    cache_dir=None)
    np.savez(tmp / "samples.npz", arr_0=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
             labels=np.arange(n) % 1000)
    before = _rss()
    t0 = time.monotonic()
    score(cfg, tmp / "samples.npz", tmp / "ref.npz", ["revised"], extractor=features, clip=None)
    wall = time.monotonic() - t0
    return {"n": n, "width": width, "logits": logits, "reference": reference,
            "bytes": _peak_rss() - before, "base": before, "seconds": wall}


def probe_inference(what: str, experiment: str, side: int, batch: int) -> dict:
    """Peak RSS above the model's own, and FLOPs, of one inference batch: `encode` or `decode` with
    the experiment's tokenizer at `side` px, or `inception` (torchvision's Inception v3, the FID
    network's architecture) at `side` px. CPU RSS: an upper bound of the GPU's live tensors (oneDNN
    keeps reordered copies of some activations)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    with torch.inference_mode():
        if what == "inception":
            import torchvision
            model = torchvision.models.inception_v3(weights=None, aux_logits=False,
                                                    init_weights=False).eval()
            x = torch.rand(batch, 3, side, side)
            run = model
        else:
            from drr.tokenizer.model import RQVAE, RQVAEConfig
            cfg = load_config(REPO / f"configs/experiments/{experiment}.yaml")
            mc = dict(cfg["tokenizer"]["model"])
            down = 2 ** (len(mc["ch_mult"]) - 1)
            mc["code_shape"] = [side // down, side // down, mc["code_shape"][2]]
            model = RQVAE(RQVAEConfig(**mc)).eval()
            if what == "encode":
                x = torch.rand(batch, 3, side, side) * 2 - 1
                run = model.encode
            else:
                x = torch.randint(0, mc["codebook_size"], (batch, *mc["code_shape"]))
                run = model.decode_codes
        before = _rss()
        with FlopCounterMode(display=False) as flops:
            run(x)
    return {"what": what, "side": side, "batch": batch, "bytes": _peak_rss() - before,
            "flops_per_image": flops.get_total_flops() / batch}


def probe_import(d_model: int) -> dict:
    """Peak RSS per parameter byte of python -m drr.transformer.import_official's code path
    (read the official file, check, adopt, write the drr checkpoint) for an AR model of `d_model`."""

    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    from drr.transformer.build import build_transformer
    from drr.transformer.import_official import import_official
    from drr.transformer.model import TransformerConfig
    from drr.transformer.official import save_official

    tmp = Path(tempfile.mkdtemp(prefix="drr-probe-"))
    over = {"tokenizer": {"checkpoint": None, "release": {"name": None},
                          "model": {"ch": 32, "ch_mult": [1, 2], "attn_resolutions": [],
                                    "num_res_blocks": 1, "z_channels": 32, "embed_dim": 32,
                                    "codebook_size": 256, "code_shape": [8, 8, 4]}},
            "data": {"resolution": 16},
            "transformer": {"checkpoint": str(tmp / "official.pt"), "release": {"name": None},
                            "model": {"n_spatial": 4, "n_depth": 1, "d_model": d_model}}}
    cfg = load_config(REPO / "configs/experiments/in256-rq-1400m-ar.yaml", over)
    tok = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"]))
    save_tokenizer(tok, cfg, tmp / "tokenizer.pt")
    model = build_transformer(TransformerConfig.from_experiment(cfg))
    save_official(model, tmp / "official.pt")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model, tok
    import gc
    gc.collect()
    before = _rss()
    import_official(cfg, tmp / "tokenizer.pt", tmp / "out" / "checkpoint.pt")
    return {"d_model": d_model, "param_bytes": param_bytes, "bytes": _peak_rss() - before}


def probe_rates() -> dict:
    """One-core rates of this machine: float64 GEMM FLOP/s, and JPEG decoding with the datasets'
    resize and crop to 256 px (images/s)."""
    import io

    import numpy as np
    from PIL import Image

    from drr.data.transforms import resize_center_crop, to_rgb

    a = np.random.default_rng(0).normal(size=(1024, 1024))
    a @ a
    t0 = time.perf_counter()
    for _ in range(4):
        a @ a
    gemm = 4 * 2 * 1024 ** 3 / (time.perf_counter() - t0)
    # an ImageNet-sized photograph (500 x 375, the set's most common size): smooth content, quality 90
    yy, xx = np.mgrid[0:375, 0:500]
    img = np.stack([np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], -1)
    img = ((img + 1) * 127.5 + np.random.default_rng(0).normal(0, 8, img.shape)).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        resize_center_crop(to_rgb(Image.open(io.BytesIO(data))), 256)
        k += 1
    return {"gemm_f64_flops": gemm, "jpeg_per_s": k / (time.perf_counter() - t0), "jpeg_bytes": len(data)}


def _saved_tensor_bytes(params):
    """A context that sums the bytes of the distinct storages autograd saves for backward, leaving
    out those of `params` (weights are not activations)."""
    import torch

    skip = {q.untyped_storage().data_ptr() for q in params}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seen


def probe_tokenizer_train(experiment: str, side: int) -> dict:
    """FLOPs and saved activation bytes per pixel of one training step of the experiment's tokenizer
    (drr.tokenizer.train's step: RQ-VAE forward, generator loss with LPIPS and the adaptive-weight
    discriminator term, backward, discriminator loss and backward) on one `side`-px image, fp32 on
    this CPU. LPIPS's VGG16 has random weights (no download): the same shapes, the same costs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from drr.tokenizer.losses import TokenizerLoss
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    torch.manual_seed(0)
    cfg = load_config(REPO / f"configs/experiments/{experiment}.yaml")
    mc = dict(cfg["tokenizer"]["model"])
    down = 2 ** (len(mc["ch_mult"]) - 1)
    mc["code_shape"] = [side // down, side // down, mc["code_shape"][2]]
    model = RQVAE(RQVAEConfig(**mc))
    lcfg = dict(cfg["tokenizer"]["loss"])
    loss_fn = TokenizerLoss(dict(lcfg, perceptual_weight=0.0), mc["in_channels"])
    if lcfg["perceptual_weight"] > 0:
        import lpips
        loss_fn.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        loss_fn.cfg = lcfg
    x = torch.rand(1, 3, side, side) * 2 - 1
    hooks, saved = _saved_tensor_bytes([*model.parameters(), *loss_fn.parameters()])
    with hooks, FlopCounterMode(display=False) as flops:
        recon, commitment, _ = model(x)
        loss, _ = loss_fn.generator_loss(x, recon.float(), commitment, lcfg["disc_start"],
                                         model.get_last_layer())
        loss.backward()
        if loss_fn.disc is not None:
            loss_fn.discriminator_loss(x, recon.float()).backward()
    pixels = side * side
    return {"experiment": experiment, "side": side, "flops_per_pixel": flops.get_total_flops() / pixels,
            "saved_bytes_per_pixel": sum(saved.values()) / pixels,
            "parameters": sum(q.numel() for q in model.parameters()),
            "loss_parameters": sum(q.numel() for q in loss_fn.parameters())}


def probe_transformer(experiment: str, n_spatial: int, n_depth: int) -> dict:
    """Saved activation bytes and FLOPs per sample of one training step of the experiment's
    transformer (drr.transformer.train's forward and loss under bf16 autocast, as on a GPU) with
    `n_spatial` and `n_depth` blocks at the experiment's width, code shape and condition; the
    expected eq.-10 mask count (2N/pi positions) for the contextual model, every position for AR.
    Per sample = the difference between batches of 2 and 1: autocast's bf16 copies of the weights,
    also saved for backward, are the same for any batch and drop out."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from drr.transformer.build import build_transformer
    from drr.transformer.model import TransformerConfig, masked_nll, text_nll

    torch.manual_seed(0)
    cfg = load_config(REPO / f"configs/experiments/{experiment}.yaml",
                      {"transformer": {"model": {"n_spatial": n_spatial, "n_depth": n_depth}}})
    c = TransformerConfig.from_experiment(cfg)
    model = build_transformer(c, torch.randn(c.codebook_size, c.embed_dim))
    n = c.num_positions
    out = {}
    for batch in (1, 2):
        codes = torch.randint(0, c.codebook_size, (batch, n, c.depth))
        cond = torch.randint(1, c.cond_vocab, (batch, c.cond_length))
        mask = torch.zeros(batch, n, dtype=torch.bool)
        mask[:, :n if c.kind == "ar" else round(2 * n / math.pi)] = True
        hooks, saved = _saved_tensor_bytes(list(model.parameters()))
        with hooks, FlopCounterMode(display=False) as flops:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                res = model(codes, mask if c.kind != "ar" else None, cond)
            loss = masked_nll(res)
            if res.get("cond_logits") is not None:
                loss = loss + text_nll(res, cond, torch.zeros(batch, dtype=torch.bool))
            loss.backward()
        model.zero_grad(set_to_none=True)
        out[batch] = (sum(saved.values()), flops.get_total_flops())
    # torch's FLOP counter does not see the CPU attention kernel: add its scores and values,
    # 4 t^2 d a block and sequence (x3 for forward and backward)
    t_s, positions = c.cond_length + n, int(mask[0].sum())
    attention = 3 * 4 * c.d_model * (n_spatial * t_s ** 2 + n_depth * positions * c.depth ** 2)
    return {"experiment": experiment, "n_spatial": n_spatial, "n_depth": n_depth,
            "spatial_tokens": t_s, "depth_tokens": positions * c.depth,
            "saved_bytes_per_sample": out[2][0] - out[1][0],
            "flops_per_sample": out[2][1] - out[1][1] + attention}


PROBES = {"metrics": probe_metrics, "inference": probe_inference, "import": probe_import,
          "rates": probe_rates, "tokenizer_train": probe_tokenizer_train,
          "transformer": probe_transformer}


def _run_forked(probes: list[tuple]) -> list[dict]:
    """Each probe in a child forked from this process (which has imported what the probes need), so
    that each child's peak RSS is its own probe's. One intra-op thread: no OpenMP pool to fork."""
    import torch  # noqa: F401  (imported once, before the forks)
    import torchvision  # noqa: F401

    import drr.metrics.score  # noqa: F401
    import drr.transformer.build  # noqa: F401

    results = []
    for name, *args in probes:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run, report, leave without running the parent's exit handlers
            os.close(r)
            try:
                t0 = time.monotonic()
                out = {"ok": PROBES[name](*args)}
                out["ok"]["probe_seconds"] = time.monotonic() - t0
            except BaseException as e:  # noqa: BLE001  (reported to the parent as one line)
                out = {"error": f"{type(e).__name__}: {e}"}
            with os.fdopen(w, "w") as f:
                f.write(json.dumps(out))
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            text = f.read()
        os.waitpid(pid, 0)
        out = json.loads(text) if text else {"error": "the probe's process died (out of memory?)"}
        if "error" in out:
            raise DrrError(f"probe {name} {args}: {out['error']}")
        results.append(out["ok"])
    return results


def run_probes(probes: list[tuple], timeout: float = 1800) -> list[dict]:
    """Run probes (name, *args) in one fresh subprocess (one thread, forked per probe); their results."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "drr.workflow.resources", "--probes", json.dumps(probes)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if run.returncode != 0:
        raise DrrError(f"probes failed: {(run.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Measuring: the probes a plan needs, run once; what they give, as fitted per-unit costs.
# --------------------------------------------------------------------------------------------------

# The metrics job's probe shapes: (feature width, logits width, reference features). The base shape
# at three N checks growth; the other two give the per-sample cost's slope in width and in M.
METRICS_BASE, METRICS_WIDE, METRICS_REF = (64, 32, 256), (256, 128, 256), (64, 32, 1024)
METRICS_N = (500, 2000, 8000)
GROWTH_TOLERANCE = 1.25  # a per-unit cost may grow by this factor between the two sizes measured


@dataclass
class Measured:
    """Per-unit costs measured on this machine (the probes' raw results; fits are methods)."""

    machine: str
    date: str
    seconds: float
    rates: dict
    metrics: list = field(default_factory=list)
    inference: list = field(default_factory=list)
    imports: list = field(default_factory=list)
    tokenizer_train: list = field(default_factory=list)
    transformer: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

    # -- the metrics job ------------------------------------------------------------------------
    def _metrics(self, shape, n) -> dict:
        w, lg, m = shape
        for r in self.metrics:
            if (r["width"], r["logits"], r["reference"], r["n"]) == (w, lg, m, n):
                return r
        raise KeyError(f"no metrics probe at width {w}, reference {m}, N {n}")

    def metrics_per_sample(self, shape=METRICS_BASE, n: int = METRICS_N[1]) -> float:
        """Host bytes per sample between N = 500 and `n` at a probe shape."""
        lo = self._metrics(shape, METRICS_N[0])
        return (self._metrics(shape, n)["bytes"] - lo["bytes"]) / (n - METRICS_N[0])

    def metrics_memory(self, n: int, width: int, logits: int, m: int) -> float:
        """Host bytes of the metrics maths for one phase at N samples, features `width` + `logits`
        wide, M reference features: fixed + N x per-sample, each interpolated linearly from the
        probes (fixed in width^2 and M^2, per-sample in width and M); when the base shape grew
        faster than linearly, per-sample grows with N as measured (c(N) = a + b N)."""
        s0 = self.metrics_per_sample(METRICS_BASE)
        sw = (self.metrics_per_sample(METRICS_WIDE) - s0) / (sum(METRICS_WIDE[:2]) - sum(METRICS_BASE[:2]))
        sm = (self.metrics_per_sample(METRICS_REF) - s0) / (METRICS_REF[2] - METRICS_BASE[2])
        per_sample = s0 + max(sw, 0) * (width + logits - sum(METRICS_BASE[:2])) + max(sm, 0) * (m - METRICS_BASE[2])
        f0 = self._metrics(METRICS_BASE, METRICS_N[0])["bytes"] - METRICS_N[0] * s0
        fw = self._metrics(METRICS_WIDE, METRICS_N[0])["bytes"] - METRICS_N[0] * self.metrics_per_sample(METRICS_WIDE)
        fm = self._metrics(METRICS_REF, METRICS_N[0])["bytes"] - METRICS_N[0] * self.metrics_per_sample(METRICS_REF)
        fixed = (max(f0, 0) + max(fw - f0, 0) * (width ** 2 - METRICS_BASE[0] ** 2) / (METRICS_WIDE[0] ** 2 - METRICS_BASE[0] ** 2)
                 + max(fm - f0, 0) * (m ** 2 - METRICS_BASE[2] ** 2) / (METRICS_REF[2] ** 2 - METRICS_BASE[2] ** 2))
        c_lo, c_hi = s0, self.metrics_per_sample(METRICS_BASE, METRICS_N[2])
        if c_hi > GROWTH_TOLERANCE * c_lo:  # growth as measured: per sample a + b N
            b = (c_hi - c_lo) / (METRICS_N[2] - METRICS_N[1])
            per_sample += b * (n - METRICS_N[1])
        return fixed + n * per_sample

    def metrics_seconds(self, n: int, width: int, m: int, replicates: int) -> float:
        """One-core seconds of the metrics maths for one phase: the measured cost per N^2 and per
        N x M at the base shape (sorting, kernels, per-replicate comparisons), plus the GEMMs and
        eigenvalue problems that grow with the width, at the measured float64 GEMM rate (FID's
        bootstrap: per replicate a width x width covariance and its eigenvalues)."""
        t = {(r["width"], r["logits"], r["reference"], r["n"]): r["seconds"] for r in self.metrics}
        b0, r0 = METRICS_BASE, METRICS_REF
        n1, n2 = METRICS_N[1], METRICS_N[2]
        d_m = ((t[(*r0, n1)] - t[(*r0, METRICS_N[0])]) - (t[(*b0, n1)] - t[(*b0, METRICS_N[0])]))
        per_nm = max(d_m, 0) / ((r0[2] - b0[2]) * (n1 - METRICS_N[0]))
        per_n2 = max(t[(*b0, n2)] - t[(*b0, n1)] - per_nm * b0[2] * (n2 - n1), 0) / (n2 ** 2 - n1 ** 2)
        d = width
        gemm = 2 * n * d * d * 3 + 10 * d ** 3  # covariance, centring by the root, eigh of the reference
        gemm += replicates * (2 * n * d * d + 10 * d ** 3) if n > d else replicates * 10 * (0.63 * n) ** 3
        gemm += 2 * (n * n + n * m + m * m) * d * 2  # KID kernels and the three cdists of precision/recall
        return per_n2 * n * n + per_nm * n * m + gemm / self.rates["gemm_f64_flops"]

    # -- tokenizers, Inception, imports --------------------------------------------------------
    def _two(self, rows, key):
        rows = sorted(rows, key=key)
        return rows[0], rows[-1]

    def inference_bytes(self, what: str, arch: str, side: int, batch: int) -> float:
        """Peak bytes of one inference batch, linear in batch x pixels from the two probe sizes."""
        rows = [r for r in self.inference if r["what"] == what and r.get("arch") == arch]
        lo, hi = self._two(rows, lambda r: r["side"])
        px_lo, px_hi = lo["side"] ** 2 * lo["batch"], hi["side"] ** 2 * hi["batch"]
        per_px = (hi["bytes"] - lo["bytes"]) / (px_hi - px_lo)
        fixed = max(lo["bytes"] - per_px * px_lo, 0)
        return fixed + per_px * side * side * batch

    def import_bytes(self, param_bytes: float) -> float:
        lo, hi = self._two(self.imports, lambda r: r["param_bytes"])
        k = (hi["bytes"] - lo["bytes"]) / (hi["param_bytes"] - lo["param_bytes"])
        return max(lo["bytes"] - k * lo["param_bytes"], 0) + k * param_bytes

    def tokenizer_step(self, experiment: str) -> dict:
        """FLOPs and saved bytes per pixel of the tokenizer's training step (the larger probe)."""
        rows = [r for r in self.tokenizer_train if r["experiment"] == experiment]
        return self._two(rows, lambda r: r["side"])[1]

    def transformer_step(self, experiment: str, n_spatial: int, n_depth: int) -> dict:
        """Saved bytes and FLOPs per training sample: a + n_spatial b_s + n_depth b_d, b_s from the
        probes at one and two spatial blocks; a depth block costs what a spatial block costs per
        token (the same Block, attention linear in tokens), so b_d = b_s x depth tokens / spatial
        tokens (checked in `growth` where a probe with two depth blocks ran)."""
        p = {(r["n_spatial"], r["n_depth"]): r for r in self.transformer if r["experiment"] == experiment}
        out = {}
        for k in ("saved_bytes_per_sample", "flops_per_sample"):
            b_s = p[(2, 1)][k] - p[(1, 1)][k]
            b_d = b_s * p[(1, 1)]["depth_tokens"] / p[(1, 1)]["spatial_tokens"]
            out[k] = p[(1, 1)][k] - b_s - b_d + n_spatial * b_s + n_depth * b_d
        return out

    # -- growth checks ---------------------------------------------------------------------------
    def growth(self) -> list[dict]:
        """Each per-unit cost at its two sizes: {what, small, large, ratio, limit, ok}. The model
        says each is constant (memory linear in samples, pixels, blocks and parameters)."""
        out = []

        def add(what, small, large, limit=GROWTH_TOLERANCE):
            ratio = large / small if small > 0 else math.inf
            out.append({"what": what, "small": small, "large": large, "ratio": ratio, "limit": limit,
                        "ok": ratio <= limit})

        if self.metrics:
            add(f"metrics host bytes/sample at N={METRICS_N[1]:,} vs {METRICS_N[2]:,}",
                self.metrics_per_sample(METRICS_BASE, METRICS_N[1]),
                self.metrics_per_sample(METRICS_BASE, METRICS_N[2]))
        for exp in sorted({r["experiment"] for r in self.tokenizer_train}):
            lo, hi = self._two([r for r in self.tokenizer_train if r["experiment"] == exp],
                               lambda r: r["side"])
            tag = f"{lo['side']} vs {hi['side']} px"
            add(f"tokenizer training activation bytes/px ({exp}) at {tag}",
                lo["saved_bytes_per_pixel"], hi["saved_bytes_per_pixel"])
            add(f"tokenizer training FLOPs/px ({exp}) at {tag}", lo["flops_per_pixel"], hi["flops_per_pixel"])
        for what, arch in sorted({(r["what"], r["arch"]) for r in self.inference}):
            lo, hi = self._two([r for r in self.inference if (r["what"], r["arch"]) == (what, arch)],
                               lambda r: r["side"])
            add(f"{what} peak bytes/px ({arch}) at {lo['side']} vs {hi['side']} px",
                lo["bytes"] / lo["side"] ** 2, hi["bytes"] / hi["side"] ** 2, 1.0)
        for exp in sorted({r["experiment"] for r in self.transformer}):
            p = {(r["n_spatial"], r["n_depth"]): r for r in self.transformer if r["experiment"] == exp}
            one = p[(2, 1)]["saved_bytes_per_sample"] - p[(1, 1)]["saved_bytes_per_sample"]
            if (4, 1) in p:
                add(f"transformer activation bytes per spatial block ({exp}) at 1-2 vs 2-4 blocks", one,
                    (p[(4, 1)]["saved_bytes_per_sample"] - p[(2, 1)]["saved_bytes_per_sample"]) / 2)
            if (1, 2) in p:
                add(f"transformer activation bytes per block-token ({exp}): spatial "
                    f"({p[(1, 1)]['spatial_tokens']} tokens) vs depth ({p[(1, 1)]['depth_tokens']})",
                    one / p[(1, 1)]["spatial_tokens"],
                    (p[(1, 2)]["saved_bytes_per_sample"] - p[(1, 1)]["saved_bytes_per_sample"])
                    / p[(1, 1)]["depth_tokens"])
        return out


def _arch(cfg: dict) -> str:
    """A name for a tokenizer architecture (what its inference costs depend on)."""
    m = cfg["tokenizer"]["model"]
    return f"ch{m['ch']}x{'-'.join(map(str, m['ch_mult']))}-r{m['num_res_blocks']}-d{m['code_shape'][2]}"


def _transformer_group(plan, names) -> dict[str, str]:
    """Experiment -> the experiment whose probes stand for it (same blocks: width, heads, code shape,
    condition, kind; only the number of blocks differs)."""
    from drr.transformer.model import TransformerConfig
    groups, out = {}, {}
    for name in sorted(names):
        c = TransformerConfig.from_experiment(plan.experiments[name])
        key = (c.d_model, c.head_dim, c.code_shape, c.codebook_size, c.embed_dim, c.cond_type,
               c.cond_length, c.vocab_size if c.cond_type == "text" else c.num_classes, c.kind)
        out[name] = groups.setdefault(key, name)
    return out


def measure(plan, log=None) -> Measured:
    """Run the probes this plan's jobs need (several minutes on a busy 2-core machine)."""
    from drr.transformer.build import count_parameters
    from drr.transformer.model import TransformerConfig

    t0 = time.monotonic()
    probes: list[tuple] = [("rates",)]
    for shape, ns in ((METRICS_BASE, METRICS_N), (METRICS_WIDE, METRICS_N[:2]), (METRICS_REF, METRICS_N[:2])):
        probes += [("metrics", n, *shape) for n in ns]
    archs = {}
    for tok, exp in sorted(plan.tokenizer_of.items()):
        archs.setdefault(_arch(plan.experiments[exp]), exp)
    for arch, exp in sorted(archs.items()):
        res = plan.experiments[exp]["data"]["resolution"]
        for what in ("encode", "decode"):
            probes += [("inference", what, exp, side, 1) for side in (res // 2, res)]
    probes += [("inference", "inception", "-", side, 1) for side in (INCEPTION_SIDE // 2, INCEPTION_SIDE)]
    if plan.imported_transformers:
        probes += [("import", d) for d in (512, 1024)]
    for tok in plan.trained_tokenizers:
        exp = plan.tokenizer_of[tok]
        res = plan.experiments[exp]["data"]["resolution"]
        probes += [("tokenizer_train", exp, side) for side in (max(res // 8, 16), max(res // 4, 32))]
    trained = [n for n in plan.experiments if n not in plan.imported_transformers]
    leaders = sorted(set(_transformer_group(plan, trained).values()))
    for i, exp in enumerate(leaders):
        probes += [("transformer", exp, s, d) for s, d in ((1, 1), (2, 1))]
        if i == 0:  # the checks of the model: linear in blocks, the same cost per token in both stacks
            probes += [("transformer", exp, 4, 1), ("transformer", exp, 1, 2)]
    if log:
        log(f"measuring {len(probes)} per-unit costs on this machine (minutes) ...")
    results = run_probes(probes)
    m = Measured(machine=f"{platform.node()} ({platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs)", date=time.strftime("%Y-%m-%d %H:%M %Z"),
                 seconds=0.0, rates=results[0])
    for probe, res in zip(probes[1:], results[1:]):
        kind = probe[0]
        if kind == "inference":
            res["arch"] = "inception-v3" if probe[1] == "inception" else _arch(plan.experiments[probe[2]])
        {"metrics": m.metrics, "inference": m.inference, "import": m.imports,
         "tokenizer_train": m.tokenizer_train, "transformer": m.transformer}[kind].append(res)
    for name in plan.experiments:
        m.parameters[name] = count_parameters(TransformerConfig.from_experiment(plan.experiments[name]))
    m.seconds = time.monotonic() - t0
    return m


# --------------------------------------------------------------------------------------------------
# The jobs of a suite (what `snakemake all reports/claims.md` plans), from the plan.
# --------------------------------------------------------------------------------------------------

@dataclass
class Job:
    rule: str
    what: str                      # the job's target, in words
    experiment: str | None = None  # the experiment whose config sizes it
    variant: str = "default"
    info: dict = field(default_factory=dict)


def _runs(plan) -> tuple[list[tuple[str, str]], set]:
    """(experiment, variant) of every sample set the suite makes, and those timed (speed files):
    default runs, the runs of the available reports, and those the claims read."""
    from drr.workflow.claims import CLAIMS_FILE, claims_inputs

    runs = [(e, "default") for e in plan.experiments]
    timed = set(runs)
    for report in plan.reports:
        if not plan.available(report):
            continue
        for run in plan.report_runs(report):
            runs.append(run)
            if plan.reports[report].speed:
                timed.add(run)
    if (Path(plan.root) / CLAIMS_FILE).is_file():
        inputs = claims_inputs(plan, CLAIMS_FILE)
        runs += [(Path(f).parent.name, Path(f).stem) for f in inputs["metrics"]]
        timed |= {(Path(f).parent.name, Path(f).stem) for f in inputs["speed"]}
    return list(dict.fromkeys(runs)), timed


def split_images(cfg: dict, split: str) -> int:
    """Images a job reads from a split: the dataset's count, capped by data.max_images."""
    n = SPLIT_IMAGES.get((cfg["data"]["name"], split))
    if n is None:
        raise DrrError(f"no image count known for split {split!r} of dataset {cfg['data']['name']!r}")
    cap = cfg["data"]["max_images"]
    return n if cap is None else min(n, cap)


def suite_jobs(plan) -> list[Job]:
    """Every job of rule all plus reports/claims.md, per rule (the SLURM jobs and the local ones)."""
    out = []
    for folder, exp in sorted(plan.release_experiment.items()):
        out.append(Job("fetch_release", folder, exp, info={"release": folder.rsplit("/", 1)[1]}))
    out += [Job("metrics_weights", d, e) for d, e in plan.weights_experiment.items()]
    def launched(t):  # trained tokenizers that submit themselves through submitit (tokenizer.launch)
        return plan.experiments[plan.tokenizer_of[t]]["tokenizer"]["launch"]["executor"] != "inprocess"

    out += [Job("train_tokenizer", t, plan.tokenizer_of[t]) for t in plan.trained_tokenizers if not launched(t)]
    out += [Job("submit_tokenizer", t, plan.tokenizer_of[t]) for t in plan.trained_tokenizers if launched(t)]
    lpips = {plan.experiments[plan.tokenizer_of[t]]["metrics"]["weights_dir"]: plan.tokenizer_of[t]
             for t in plan.trained_tokenizers
             if plan.experiments[plan.tokenizer_of[t]]["tokenizer"]["loss"]["perceptual_weight"] > 0
             and plan.experiments[plan.tokenizer_of[t]]["tokenizer"]["loss"]["vgg16_weights"] is None}
    out += [Job("lpips_weights", d, e) for d, e in sorted(lpips.items())]
    out += [Job("import_tokenizer", t, plan.tokenizer_of[t]) for t in plan.imported_tokenizers]
    for tok, exp in sorted(plan.tokenizer_of.items()):
        cfg = plan.experiments[exp]
        out.append(Job("report_tokenizer", tok, exp))
        for key in ("train_split", "eval_split"):
            split = cfg["data"][key]
            out.append(Job("encode_codes", f"{tok}/{split}", exp, info={"split": split}))
    out += [Job("reference_stats", r, e) for r, e in sorted(plan.reference_experiment.items())]
    out += [Job("train_text_tokenizer", t, e) for t, e in sorted(plan.caption_bpe_of.items())]
    out += [Job("train_transformer", e, e) for e in plan.trained_inprocess]
    out += [Job("submit_transformer", e, e) for e in plan.trained_submitted]
    out += [Job("import_transformer", e, e) for e in plan.imported_transformers]
    out += [Job("report_transformer", e, e) for e in plan.experiments if e not in plan.imported_transformers]
    runs, timed = _runs(plan)
    for exp, variant in runs:
        for i in range(plan.num_shards(exp, variant)):
            out.append(Job("generate_shard", f"{exp}/{variant} shard {i}", exp, variant, {"shard": i}))
        out.append(Job("merge_samples", f"{exp}/{variant}", exp, variant))
        out.append(Job("compute_metrics", f"{exp}/{variant}", exp, variant))
    out += [Job("sampling_speed", f"{e}/{v}", e, v) for e, v in runs if (e, v) in timed]
    out += [Job("inpainting_figure", e, e) for e in plan.experiments]
    out += [Job("condition_grid", f"{e}/{plan.grid_kind(e)}", e, info={"grid": plan.grid_kind(e)})
            for e in plan.experiments if plan.grid_kind(e)]
    if plan.suite.get("ablation") is not None:
        out.append(Job("figure5", "reports/fig5.png", plan.suite["ablation"]))
    out += [Job("inpainting_comparison", f"{a}-vs-{c}", a) for a, c in plan.ar_partner.items()]
    out += [Job("report_figure", n) for n in plan.report_names("figure")]
    out += [Job("report_table", n) for n in plan.report_names("table")]
    out.append(Job("report_index", "reports/index.md"))
    out.append(Job("claims", "reports/claims.md"))
    from drr.workflow.report_spec import spec_file, spec_names
    out += [Job("report_spec", spec_file(n)) for n in spec_names(plan)]
    from drr.workflow.claims import CLAIMS_FILE, claims_inputs
    if (Path(plan.root) / CLAIMS_FILE).is_file():  # FLOPs per sample of the runs the speed claims read
        for f in claims_inputs(plan, CLAIMS_FILE)["flops"]:
            out.append(Job("sampling_flops", f, Path(f).parent.name, Path(f).stem))
    return out


# --------------------------------------------------------------------------------------------------
# What each rule asks for: the SLURM profile (mem_mb, runtime, GPUs of the rules that declare gpu=1),
# or for training submitted through submitit the experiment's transformer.launch.
# --------------------------------------------------------------------------------------------------

@dataclass
class Request:
    local: bool = False                # runs on the submitting host (Snakemake localrules)
    mem: float | None = None           # bytes (SLURM --mem, MiB); per node for submitted jobs
    minutes: float | None = None       # one job's time limit
    total_minutes: float | None = None  # with every requeue (submitted jobs), else = minutes
    gpus: int = 0
    cpus: int = 1                      # cores (cpus_per_task; per process for submitted jobs)
    source: str = ""


def rule_resources(root=REPO) -> tuple[set, set]:
    """(rules declaring gpu=1, local rules) as the rule files say."""
    gpu, local = set(), set()
    for f in sorted(Path(root, RULE_FILES).glob("*.smk")):
        text = f.read_text()
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, re.S | re.M):
            if re.search(r"^\s+gpu=1,", m.group(2), re.M):
                gpu.add(m.group(1))
        for m in re.finditer(r"^localrules:\n((?:[ \t]+\w+,?[ \t]*\n?)+)", text, re.M):
            local |= set(re.findall(r"\w+", m.group(1)))
    return gpu, local


def request_of(job: Job, plan, profile: dict, gpu_rules: set, local_rules: set) -> Request:
    if job.rule in ("submit_transformer", "submit_tokenizer"):
        section = "transformer" if job.rule == "submit_transformer" else "tokenizer"
        ln = plan.experiments[job.experiment][section]["launch"]
        return Request(mem=None if ln["mem_gb"] is None else ln["mem_gb"] * 2 ** 30,
                       minutes=ln["timeout_min"], total_minutes=ln["timeout_min"] * (ln["max_requeues"] + 1),
                       gpus=ln["nodes"] * ln["gpus_per_node"], cpus=ln["cpus_per_task"],
                       source=f"{section}.launch of {plan.experiment_file(job.experiment)}")
    if job.rule in local_rules:
        return Request(local=True, source="local rule")
    res = dict(profile.get("default-resources") or {})
    res.update((profile.get("set-resources") or {}).get(job.rule) or {})
    return Request(mem=res["mem_mb"] * 2 ** 20 if res.get("mem_mb") else None, minutes=res.get("runtime"),
                   total_minutes=res.get("runtime"), gpus=1 if job.rule in gpu_rules else 0,
                   cpus=res.get("cpus_per_task", 1), source=PROFILE)


# --------------------------------------------------------------------------------------------------
# The model: each job's predicted peak host memory, peak GPU memory (per GPU) and hours.
# --------------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    host: float                  # bytes, peak (per node for multi-GPU jobs)
    gpu: float | None            # bytes per GPU, peak; None: no GPU
    hours: float                 # wall hours of the whole job (all requeues)
    gpu_hours: float = 0.0       # GPUs x hours
    disk: float = 0.0            # bytes the job leaves on disk
    note: str = ""


def sampling_precision(cfg: dict) -> str:
    """The transformer's precision when sampling: a config setting where the config has one
    (sampling.precision or generation.precision), else what the rules run today (fp32: the
    rules pass no --precision)."""
    for section in ("sampling", "generation"):
        value = cfg.get(section, {}).get("precision")
        if value is not None:
            return "bf16" if value in ("bf16", "auto") else "fp32"
    return "fp32"


def forward_flops(c, tokens: int, depth_tokens: int, rows: int = 1) -> float:
    """FLOPs of one forward of `rows` sequences through the spatial stack (`tokens` each) and the
    depth stack (`depth_tokens` each, one new token a step with the key/value cache) with the head:
    2 per multiply-add, 12 d^2 per token and block (attention projections and MLP), attention
    scores and values 4 t d per token."""
    d = c.d_model
    spatial = c.n_spatial * (24 * d * d * tokens + 4 * tokens * tokens * d)
    depth = c.n_depth * (24 * d * d + 4 * c.depth * d) * depth_tokens
    head = 2 * d * c.codebook_size * depth_tokens + 2 * c.embed_dim * d * (tokens + depth_tokens)
    return rows * (spatial + depth + head)


def sample_flops(cfg: dict) -> float:
    """Transformer FLOPs of one sample (paper §3.3, Algorithm 2): T_draft spatial forwards of the
    draft (guided ones twice: the null condition's rows), M x T_revise of the revise passes; the
    depth stack D steps at each position a step samples (Top-C: every pending one). The AR model:
    one token at a time with the key/value cache, so one forward over the sequence in all."""
    from drr.transformer.model import TransformerConfig
    c = TransformerConfig.from_experiment(cfg)
    n, lc, s = c.num_positions, c.cond_length, cfg["sampling"]
    if c.kind == "ar":
        return forward_flops(c, lc + n, n * c.depth, 2 if s["ar"]["guidance_scale"] is not None else 1)
    draft_g = 2 if s["guidance_in"] in ("draft", "both") else 1
    revise_g = 2 if s["guidance_in"] in ("revise", "both") else 1
    t_draft, t_revise, m = min(s["t_draft"], n), min(s["t_revise"], n), s["revise_iterations"]
    per_step_positions = n if s["strategy"] != "random" else n / t_draft
    draft = t_draft * forward_flops(c, lc + n, per_step_positions * c.depth, draft_g)
    revise = m * t_revise * forward_flops(c, lc + n, n / t_revise * c.depth, revise_g)
    return draft + revise


def weight_reads(cfg: dict, precision: str) -> float:
    """Bytes of weights one batch reads for one sample's worth of forwards: each spatial forward
    reads the spatial blocks (12 d^2 each), each depth step the depth blocks and the head (d K);
    the batch shares the reads. Contextual: T_draft + M T_revise steps of one spatial forward and D
    depth steps; AR: N spatial steps of one token, N D depth steps."""
    from drr.transformer.model import TransformerConfig
    s, c = cfg["sampling"], TransformerConfig.from_experiment(cfg)
    n, d = c.num_positions, c.d_model
    spatial, depth = 12 * d * d * c.n_spatial, 12 * d * d * c.n_depth + d * c.codebook_size
    if c.kind == "ar":
        reads = n * spatial + n * c.depth * depth
    else:
        steps = min(s["t_draft"], n) + s["revise_iterations"] * min(s["t_revise"], n)
        reads = steps * (spatial + c.depth * depth)
    return reads * (2 if precision == "bf16" else 4)


class Model:
    """Estimates for the jobs of one plan, from measured per-unit costs and stated assumptions."""

    def __init__(self, plan, measured: Measured, assumptions: Assumptions = Assumptions()):
        self.plan, self.m, self.a = plan, measured, assumptions
        self.base = min(r["base"] for r in measured.metrics)  # a job's Python with torch and drr imported
        trained = [n for n in plan.experiments if n not in plan.imported_transformers]
        self.group = _transformer_group(plan, trained)

    # -- helpers ---------------------------------------------------------------------------------
    def cfg(self, job: Job) -> dict:
        return self.plan.resolved(job.experiment, job.variant)

    def gpu_seconds(self, flops: float, kind: str) -> float:
        a = self.a
        rate = {"bf16_train": a.bf16_flops * a.mfu_train, "tokenizer": a.bf16_flops * a.mfu_tokenizer,
                "bf16": a.bf16_flops * a.mfu_sample_bf16, "fp32": a.fp32_flops * a.eff_fp32,
                "tf32_conv": a.tf32_flops * a.eff_conv, "fp32_conv": a.fp32_flops * a.eff_conv}[kind]
        return flops / rate

    def cpu_seconds(self, one_core_seconds: float, cores: int) -> float:
        return one_core_seconds / (max(cores, 1) * self.a.cpu_efficiency)

    def decode_rate(self, workers: int) -> float:
        """Images/s that `workers` data-loader processes decode and resize (one core each)."""
        return max(workers, 1) * self.m.rates["jpeg_per_s"] * self.a.cpu_efficiency

    def gpu_total(self, live: float) -> float:
        return live * self.a.gpu_overhead + self.a.cuda_context

    def host_gpu_job(self, extra: float = 0.0, workers: int = 0) -> float:
        return self.base + self.a.host_cuda + workers * self.a.worker + extra

    def sample_seconds(self, cfg: dict) -> float:
        """GPU seconds per sample at generation.batch_size: transformer forwards (compute or weight
        reads, whichever is slower) and the tokenizer decoding its images (drafts too when kept)."""
        precision = sampling_precision(cfg)
        compute = self.gpu_seconds(sample_flops(cfg), "bf16" if precision == "bf16" else "fp32")
        reads = weight_reads(cfg, precision) / cfg["generation"]["batch_size"] / self.a.hbm_bytes_per_s
        images = 2 if cfg["generation"]["save_drafts"] else 1
        decode = images * self.gpu_seconds(self.flops_per_image("decode", cfg), "tf32_conv")
        return max(compute, reads) + decode

    def flops_per_image(self, what: str, cfg: dict) -> float:
        arch = "inception-v3" if what == "inception" else _arch(cfg)
        side = INCEPTION_SIDE if what == "inception" else cfg["data"]["resolution"]
        rows = [r for r in self.m.inference if r["what"] == what and r["arch"] == arch]
        r = max(rows, key=lambda r: r["side"])
        return r["flops_per_image"] * side * side / r["side"] ** 2

    def sampling_gpu(self, cfg: dict, name: str, batch: int) -> float:
        """Weights (fp32, plus autocast's bf16 copies in bf16), one forward's activations of 2 x
        batch rows (guidance), and the decoder's peak for one chunk of code maps."""
        from drr.sampling.images import DECODE_CHUNK
        from drr.transformer.model import TransformerConfig
        c = TransformerConfig.from_experiment(cfg)
        params = self.m.parameters[name]
        weights = params * (6 if sampling_precision(cfg) == "bf16" else 4)
        tokens = c.cond_length + c.num_positions
        # 2 x batch rows (guidance): about 8 d-wide fp32 tensors live in a block (qkv, MLP), and at
        # most every position's logits
        acts = 2 * batch * tokens * c.d_model * 4 * 8 + 2 * batch * c.num_positions * c.codebook_size * 4
        decode = self.m.inference_bytes("decode", _arch(cfg), cfg["data"]["resolution"], DECODE_CHUNK)
        return self.gpu_total(weights + acts + decode)

    # -- the estimate of one job -----------------------------------------------------------------
    def estimate(self, job: Job, req: Request) -> Estimate:
        return getattr(self, f"_{job.rule}", self._small)(job, req)

    def _small(self, job, req) -> Estimate:
        """Reports, tables, figures, index, claims: one CPU process reading small files."""
        return Estimate(self.base, None, 2 / 60)

    def _fetch_release(self, job, req):
        size = RELEASE_BYTES.get(job.info["release"], 0.0)
        hours = (size / self.a.download_bytes_per_s + 2 * size / self.a.io_bytes_per_s) / 3600
        return Estimate(self.base, None, hours, disk=2 * size,
                        note="tarball kept beside the unpacked folder")

    def _metrics_weights(self, job, req):
        return Estimate(self.base, None, 1 / 60, disk=0.5e9)

    def _train_tokenizer(self, job, req):
        cfg = self.cfg(job)
        t = cfg["tokenizer"]["train"]
        step = self.m.tokenizer_step(job.experiment)
        px = cfg["data"]["resolution"] ** 2
        world = max(req.gpus, 1)
        flops = t["steps"] * t["batch_size"] * px * step["flops_per_pixel"]
        compute = self.gpu_seconds(flops, "tokenizer") / world
        workers = min(t["num_workers"], 16)
        data = t["steps"] * t["batch_size"] / self.decode_rate(workers * world) if t["num_workers"] else 0
        seconds = max(compute, data)
        states = (step["parameters"] + step["loss_parameters"]) * 16  # fp32 weights, grads, Adam moments
        micro = t["micro_batch_size"] or t["batch_size"] / world  # images a GPU holds at once
        acts = step["saved_bytes_per_pixel"] * px * micro
        hours = seconds / 3600
        return Estimate(self.host_gpu_job(states, workers), self.gpu_total(states + acts), hours,
                        world * hours, disk=step["parameters"] * 16 * 2,
                        note=f"{t['steps']:,} steps of {t['batch_size']} images on {world} GPU(s); "
                             f"activations {acts / GiB:.0f} GiB a GPU (fp32 saved tensors: an upper "
                             "bound under bf16 autocast)")

    def _submit_tokenizer(self, job, req):
        return self._train_tokenizer(job, req)

    def _tokenizer_params(self, cfg: dict) -> int:
        import torch

        from drr.tokenizer.model import RQVAE, RQVAEConfig
        with torch.device("meta"):
            return sum(p.numel() for p in RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).parameters())

    def _import_tokenizer(self, job, req):
        cfg = self.cfg(job)
        pbytes = 4 * self._tokenizer_params(cfg)
        return Estimate(self.base + self.m.import_bytes(pbytes), None,
                        2 * pbytes / self.a.io_bytes_per_s / 3600, disk=pbytes)

    def _import_transformer(self, job, req):
        pbytes = 4 * self.m.parameters[job.experiment]
        return Estimate(self.base + self.m.import_bytes(pbytes), None,
                        2 * pbytes / self.a.io_bytes_per_s / 3600, disk=pbytes)

    def _inference_job(self, cfg, n_images: int, batch: int, workers: int, kinds: tuple,
                       extra_gpu_s: float = 0.0, note: str = "") -> Estimate:
        res = cfg["data"]["resolution"]
        gpu_s = sum(self.gpu_seconds(n_images * self.flops_per_image(k, cfg), "tf32_conv") for k in kinds)
        seconds = max(gpu_s + extra_gpu_s, n_images / self.decode_rate(workers))
        live = max(self.m.inference_bytes(k, _arch(cfg), res, batch) for k in kinds)
        return Estimate(self.host_gpu_job(workers=workers), self.gpu_total(live), seconds / 3600,
                        seconds / 3600, note=note)

    def _encode_codes(self, job, req):
        cfg = self.cfg(job)
        n = split_images(cfg, job.info["split"])
        est = self._inference_job(cfg, n, cfg["tokenizer"]["encode"]["batch_size"],
                                  cfg["tokenizer"]["train"]["num_workers"], ("encode",),
                                  note=f"{n:,} images")
        h, w, d = cfg["tokenizer"]["model"]["code_shape"]
        est.disk = n * h * w * d * 2
        return est

    def _report_tokenizer(self, job, req):
        cfg = self.cfg(job)
        n = split_images(cfg, cfg["data"]["eval_split"])
        rfid = 2 * min(cfg["tokenizer"]["report"]["rfid_images"], n)
        extra = self.gpu_seconds(rfid * self.flops_per_image("inception", cfg), "fp32_conv")
        return self._inference_job(cfg, n, 256, cfg["tokenizer"]["train"]["num_workers"],
                                   ("encode", "decode"), extra,
                                   note=f"{n:,} images encoded and decoded in batches of 256")

    def _reference_stats(self, job, req):
        cfg = self.cfg(job)
        m = cfg["metrics"]
        n = split_images(cfg, m["reference_split"])
        if m["reference_images"] is not None:
            n = min(n, m["reference_images"])
        gpu_s = self.gpu_seconds(n * self.flops_per_image("inception", cfg), "fp32_conv")
        workers = min(8, max(0, req.cpus - 1))  # drr.metrics.reference.default_workers
        seconds = max(gpu_s, n / self.decode_rate(workers))
        live = self.m.inference_bytes("inception", "inception-v3", INCEPTION_SIDE, m["batch_size"])
        host = self.host_gpu_job(INCEPTION_FEATURES ** 2 * 8 * 2 + m["pr_reference_size"] * INCEPTION_FEATURES * 4,
                                 workers)
        return Estimate(host, self.gpu_total(live), seconds / 3600, seconds / 3600,
                        disk=m["pr_reference_size"] * INCEPTION_FEATURES * 4 + INCEPTION_FEATURES ** 2 * 8,
                        note=f"{n:,} reference images")

    def _train_text_tokenizer(self, job, req):  # rule train_text_tokenizer: the caption BPE
        cfg = self.cfg(job)
        n = split_images(cfg, cfg["data"]["train_split"])
        a = self.a
        return Estimate(self.base + n * a.bpe_bytes_per_caption, None, n / a.bpe_captions_per_s / 3600,
                        note=f"{n:,} captions")

    def _train(self, job, req, world: int) -> Estimate:
        cfg = self.cfg(job)
        t = cfg["transformer"]["train"]
        from drr.transformer.model import TransformerConfig
        c = TransformerConfig.from_experiment(cfg)
        step = self.m.transformer_step(self.group[job.experiment], c.n_spatial, c.n_depth)
        params = self.m.parameters[job.experiment]
        flops = t["steps"] * t["batch_size"] * step["flops_per_sample"]
        bf16 = t["precision"] in ("auto", "bf16")
        seconds = self.gpu_seconds(flops, "bf16_train" if bf16 else "fp32") / world
        per_gpu = t["batch_size"] / world
        # fp32 weights, gradients and DDP's gradient buckets, Adam's two moments, bf16 weight copies
        states = params * (4 + 4 + 4 + 8 + (2 if bf16 else 0))
        acts = step["saved_bytes_per_sample"] * per_gpu
        rows = split_images(cfg, cfg["data"]["train_split"])
        codes = rows * (c.num_positions * c.depth * 2 + c.cond_length * 8)
        # per process: its codes and conditions; at a resume, the train state read on the CPU
        process = self.base + self.a.host_cuda + codes + params * 16
        gpus_per_node = world if job.rule == "train_transformer" else cfg["transformer"]["launch"]["gpus_per_node"]
        hours = seconds / 3600
        return Estimate(process * gpus_per_node, self.gpu_total(states + acts), hours, world * hours,
                        disk=params * (4 + 16),
                        note=f"{params / 1e6:,.0f}M parameters, {t['steps']:,} steps of {t['batch_size']} "
                             f"on {world} GPUs ({per_gpu:g} a GPU); the paper: at most "
                             f"{self.a.paper_days * 24:.0f} h on 8 A100s")

    def _submit_transformer(self, job, req):
        return self._train(job, req, req.gpus)

    def _train_transformer(self, job, req):
        return self._train(job, req, max(req.gpus, 1))

    def _report_transformer(self, job, req):
        """Held-out NLL (drr.transformer.report): up to 10,000 eval code maps, conditional and
        null-conditional, forward only in fp32 at batch 256; the logits of the scored codes dominate
        the GPU memory (float32, about three copies through the cross-entropy)."""
        cfg = self.cfg(job)
        from drr.transformer.model import TransformerConfig
        c = TransformerConfig.from_experiment(cfg)
        step = self.m.transformer_step(self.group[job.experiment], c.n_spatial, c.n_depth)
        maps = min(10_000, split_images(cfg, cfg["data"]["eval_split"]))
        seconds = self.gpu_seconds(2 * maps * step["flops_per_sample"] / 3, "fp32")
        params = self.m.parameters[job.experiment]
        scored = (c.num_positions if c.kind == "ar" else round(2 * c.num_positions / math.pi)) * c.depth
        logits = 256 * scored * c.codebook_size * 4 * 3
        hours = seconds / 3600 + self.a.start_hours
        return Estimate(self.host_gpu_job(params * 4), self.gpu_total(params * 4 + logits), hours, hours,
                        note=f"{maps:,} held-out code maps")

    def _generate_shard(self, job, req):
        cfg = self.cfg(job)
        from drr.sampling.generate import shard_range
        start, stop = shard_range(cfg, job.info["shard"])
        n = stop - start
        seconds = n * self.sample_seconds(cfg)
        images = 2 if cfg["generation"]["save_drafts"] else 1
        res = cfg["data"]["resolution"]
        arrays = n * res * res * 3 * images
        params = self.m.parameters[job.experiment]
        hours = seconds / 3600 + self.a.start_hours
        return Estimate(self.host_gpu_job(2 * arrays + params * 4), self.sampling_gpu(cfg, job.experiment,
                                                                                     cfg["generation"]["batch_size"]),
                        hours, hours, disk=arrays,
                        note=f"{n:,} samples, transformer in {sampling_precision(cfg)}")

    def _merge_samples(self, job, req):
        cfg = self.cfg(job)
        gen, res = cfg["generation"], cfg["data"]["resolution"]
        images = 2 if gen["save_drafts"] else 1
        total = gen["num_samples"] * res * res * 3 * images
        shard = gen["shard_size"] * res * res * 3
        params = self.m.parameters[job.experiment]
        return Estimate(self.base + params * 4 + 2 * shard, None, 2 * total / self.a.io_bytes_per_s / 3600,
                        disk=total, note="streams one shard array at a time; loads the models on the CPU")

    def _sampling_speed(self, job, req):
        cfg = self.cfg(job)
        gen = cfg["generation"]
        n = (gen["speed_batches"] + 1) * gen["speed_batch_size"]
        c = dict(cfg, generation=dict(gen, save_drafts=False))
        seconds = n * self.sample_seconds(c)
        params = self.m.parameters[job.experiment]
        hours = seconds / 3600 + self.a.start_hours
        return Estimate(self.host_gpu_job(params * 4), self.sampling_gpu(cfg, job.experiment, gen["speed_batch_size"]),
                        hours, hours, note=f"{n:,} samples, transformer in {sampling_precision(cfg)}")

    def _pictures(self, job, samples: int) -> Estimate:
        cfg = self.cfg(job)
        seconds = samples * self.sample_seconds(cfg)
        params = self.m.parameters[job.experiment]
        hours = seconds / 3600 + self.a.start_hours
        return Estimate(self.host_gpu_job(params * 4), self.sampling_gpu(cfg, job.experiment, min(samples, 100)),
                        hours, hours, note=f"about {samples} samples")

    def _inpainting_figure(self, job, req):
        return self._pictures(job, 64)

    def _condition_grid(self, job, req):
        p = self.plan.studies.pictures
        n = (len(self.plan.grid_classes(job.experiment)) * p["class_grids"]["per_class"]
             if job.info["grid"] == "classes" else p["caption_grids"]["captions"] * p["caption_grids"]["per_caption"])
        return self._pictures(job, n)

    def _figure5(self, job, req):
        f = self.plan.studies.pictures["fig5"]
        return self._pictures(job, f["samples"] * len(f["t_draft"]) * (1 + f["revise_iterations"]))

    def _compute_metrics(self, job, req):
        cfg = self.cfg(job)
        m, gen = cfg["metrics"], cfg["generation"]
        n, res = gen["num_samples"], cfg["data"]["resolution"]
        if job.variant != "default" and gen["ablation_samples"] is not None:
            n = gen["ablation_samples"]
        phases = 2 if gen["save_drafts"] or job.variant != "default" else 1
        from drr.metrics.intervals import replicates_for
        mm = min(m["pr_reference_size"], n)
        host = self.m.metrics_memory(n, INCEPTION_FEATURES, INCEPTION_LOGITS, mm)
        cpu = self.cpu_seconds(self.m.metrics_seconds(n, INCEPTION_FEATURES, mm, replicates_for(n)),
                               req.cpus)
        gpu_s = self.gpu_seconds(n * self.flops_per_image("inception", cfg), "fp32_conv")
        text = cfg["transformer"]["model"]["cond"]["type"] == "text"
        if text:
            gpu_s *= 1.5  # CLIP ViT-B/32 beside Inception (about half its FLOPs)
        io = n * res * res * 3 / self.a.io_bytes_per_s
        seconds = phases * (cpu + gpu_s + io)
        # on the GPU: Inception's batch, and precision/recall's distance blocks (torch-fidelity,
        # rows of 10,000 against all N, two blocks live)
        live = (self.m.inference_bytes("inception", "inception-v3", INCEPTION_SIDE, m["batch_size"])
                + (n + mm) * INCEPTION_FEATURES * 4 + 2 * 4 * 10_000 * max(n, mm))
        feats = n * (INCEPTION_FEATURES + INCEPTION_LOGITS) * 4 * phases
        return Estimate(self.host_gpu_job(host), self.gpu_total(live), seconds / 3600, phases * gpu_s / 3600,
                        disk=feats, note=f"N = {n:,} x {phases} phase(s) against M = {mm:,}")


# --------------------------------------------------------------------------------------------------
# The table: per rule, the largest job's prediction against the rule's request.
# --------------------------------------------------------------------------------------------------

@dataclass
class Row:
    rule: str
    jobs: int
    host: float                 # bytes, the largest over the rule's jobs
    gpu: float | None           # bytes per GPU, the largest
    hours: float                # the longest job, all requeues included
    gpu_hours: float            # summed over the rule's jobs
    disk: float                 # summed over the rule's jobs
    request: Request
    worst: str                  # the job with the least margin
    margins: dict               # host, gpu, time: the least request / prediction over the jobs (None: no limit)
    note: str = ""
    by_experiment: dict = field(default_factory=dict)  # GPU-hours of the rule's jobs by experiment

    @property
    def fits(self) -> bool:
        return all(v is None or v >= 1 for v in self.margins.values())


def _margin(limit, need):
    return None if limit is None or need is None or need <= 0 else limit / need


def table(plan, measured: Measured, assumptions: Assumptions = Assumptions(),
          profile_path=None) -> list[Row]:
    profile = read_yaml(Path(profile_path or Path(plan.root) / PROFILE))
    gpu_rules, local_rules = rule_resources(plan.root)
    model = Model(plan, measured, assumptions)
    by_rule: dict[str, list] = {}
    for job in suite_jobs(plan):
        req = request_of(job, plan, profile, gpu_rules, local_rules)
        by_rule.setdefault(job.rule, []).append((job, req, model.estimate(job, req)))
    rows = []
    for rule, items in by_rule.items():
        margins, worst, low = {"host": None, "gpu": None, "time": None}, items[0], math.inf
        for job, req, est in items:
            m = {"host": _margin(req.mem, est.host),
                 "gpu": _margin(assumptions.gpu_memory if req.gpus else None, est.gpu),
                 "time": _margin(req.total_minutes, est.hours * 60)}
            if req.gpus == 0 and est.gpu is not None and not req.local:
                m["gpu"] = 0.0  # needs a GPU that the rule does not ask for
            for k, v in m.items():
                if v is not None and (margins[k] is None or v < margins[k]):
                    margins[k] = v
            least = min((v for v in m.values() if v is not None), default=math.inf)
            if least < low:
                low, worst = least, (job, req, est)
        job, req, est = worst
        rows.append(Row(rule, len(items), max(e.host for _, _, e in items),
                        max((e.gpu for _, _, e in items if e.gpu is not None), default=None),
                        max(e.hours for _, _, e in items), sum(e.gpu_hours for _, _, e in items),
                        sum(e.disk for _, _, e in items), req, job.what, margins, est.note,
                        _by_experiment(items)))
    return rows


def _by_experiment(items) -> dict[str, float]:
    """GPU-hours of (job, request, estimate) items summed by the job's experiment ('shared' for a
    job that sizes no experiment of its own: a release, weights, a report)."""
    out: dict[str, float] = {}
    for job, _, est in items:
        key = job.experiment or "shared"
        out[key] = out.get(key, 0.0) + est.gpu_hours
    return out


def experiment_hours(rows: list[Row]) -> dict[str, float]:
    """GPU-hours of the suite by experiment, over every rule, largest first."""
    out: dict[str, float] = {}
    for r in rows:
        for e, h in r.by_experiment.items():
            out[e] = out.get(e, 0.0) + h
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _gib(b):
    return "-" if b is None else f"{b / GiB:,.1f}"


def _h(hours):
    return "-" if hours is None else (f"{hours:,.1f}" if hours >= 0.1 else f"{hours * 60:.0f} min")


def _x(v):
    return "-" if v is None else ("inf" if v == math.inf else f"{v:.2f}")


def render(plan, rows: list[Row], measured: Measured, assumptions: Assumptions, markdown: bool) -> str:
    a = assumptions
    head = ["rule", "jobs", "host GiB", "GPU GiB", "hours", "GPU-h", "asks: mem GiB", "time h",
            "GPUs", "margin mem", "GPU mem", "time", "fits"]
    body = []
    for r in rows:
        req = r.request
        asks_time = ("local" if req.local else _h(None if req.total_minutes is None else req.total_minutes / 60))
        if req.total_minutes and req.minutes and req.total_minutes != req.minutes:
            asks_time = f"{req.minutes / 60:g} x {req.total_minutes // req.minutes:g}"
        body.append([r.rule, str(r.jobs), _gib(r.host), _gib(r.gpu), _h(r.hours), f"{r.gpu_hours:,.0f}",
                     "local" if req.local else _gib(req.mem), asks_time, str(req.gpus),
                     _x(r.margins["host"]), _x(r.margins["gpu"]), _x(r.margins["time"]),
                     "yes" if r.fits else "NO"])
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
        for row in [head] + body:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    total = sum(r.gpu_hours for r in rows)
    disk = sum(r.disk for r in rows)
    from drr.core.provenance import git_commit
    out = [f"Suite {plan.suite_name}: {sum(r.jobs for r in rows)} jobs, predicted for {a.gpu} "
           f"(Assumptions of drr.workflow.resources) at commit {git_commit()[:12]}, from per-unit costs measured on "
           f"{measured.machine}, {measured.date}.", ""]
    out += lines
    per = experiment_hours(rows)
    out += ["", f"GPU-hours of the suite: {total:,.0f} (at half the assumed GPU efficiencies: {2 * total:,.0f}).",
            "GPU-hours by experiment (training, sampling, metrics and reports that size on it): "
            + ", ".join(f"{e} {h:,.0f}" for e, h in per.items() if h >= 0.5) + ".",
            f"Disk the suite's results take: "
            f"{f'{disk / 1e12:,.2f} TB' if disk >= 1e11 else f'{disk / 1e9:,.1f} GB'} (samples and their shards, checkpoints "
            f"with their resumable states, code maps, features, releases)."]
    out += ["", "Columns: host / GPU GiB: the largest job's predicted peak (GPU: per GPU); hours: the "
            "longest job (all requeues); GPU-h: summed over the rule's jobs; asks: the rule's request "
            "(time: hours per job x jobs the requeues allow); margin: request / prediction, the least "
            "over the rule's jobs (below 1: does not fit)."]
    notes = [f"- {r.rule} ({r.worst}): {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "Largest or tightest job of each rule:"] + notes
    checks = measured.growth()
    if checks:
        out += ["", "Growth checks (a per-unit cost at two sizes; the model says it is constant):"]
        out += [f"- {c['what']}: {c['small']:,.4g} -> {c['large']:,.4g} (x{c['ratio']:.2f}, limit "
                f"x{c['limit']:.2f}) {'ok' if c['ok'] else 'GROWS FASTER THAN THE MODEL'}" for c in checks]
    capped = sorted({(c["data"]["name"], c["data"]["max_images"]) for c in plan.experiments.values()
                     if c["data"]["max_images"] is not None and c["data"]["name"] in ("imagenet", "cc3m")})
    for name, cap in capped:
        sizes = ", ".join(f"{split} {n:,}" for (d, split), n in SPLIT_IMAGES.items() if d == name)
        out.append(f"- note: data.max_images {cap:,} caps every {name} split the jobs read ({sizes} "
                   f"images): the configs train, encode and score on the first {cap:,} of each")
    out += ["", "Assumptions (not measured: no GPU has run drr; drr.workflow.resources.Assumptions):"]
    for k, v in asdict(a).items():
        if k.endswith("_flops"):
            v = f"{v / 1e12:g} TFLOP/s"
        elif k.endswith("_per_s") and "bytes" in k:
            v = f"{v / 1e9:g} GB/s" if v >= 1e9 else f"{v / 1e6:g} MB/s"
        elif isinstance(v, float) and v >= GiB / 8:
            v = f"{v / GiB:g} GiB"
        out.append(f"- {k} = {v}")
    r = measured.rates
    out += ["", f"Measured here (one core): float64 GEMM {r['gemm_f64_flops'] / 1e9:.1f} GFLOP/s, "
            f"JPEG decode + resize to 256 px {r['jpeg_per_s']:.0f} images/s; probes took "
            f"{measured.seconds:.0f} s."]
    return "\n".join(out) + "\n"


def load_measured(path) -> Measured:
    try:
        data = json.loads(Path(path).read_text())
        return Measured(**data)
    except (OSError, ValueError, TypeError) as e:
        raise DrrError(f"{path}: not a costs file written by --save-costs ({e})") from None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="paper", help="suite of configs/workflow.yaml (default: paper)")
    p.add_argument("--scale", default=None, help="size overlays of configs/scales/<scale>/")
    p.add_argument("--profile", type=Path, default=None, help=f"SLURM profile (default: {PROFILE})")
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.add_argument("--costs", type=Path, help="per-unit costs measured before (--save-costs), instead of measuring")
    p.add_argument("--save-costs", type=Path, help="write the measured per-unit costs here (JSON)")
    p.add_argument("--out", type=Path, help="write the report here instead of stdout")
    args = p.parse_args(argv)
    with user_errors():
        from drr.workflow.plan import Plan
        wf = read_yaml(REPO / "configs/workflow.yaml")
        wf.update(suite=args.suite, scale=args.scale)
        plan = Plan(REPO, wf)
        if args.costs:
            measured = load_measured(args.costs)
        else:
            measured = measure(plan, log=lambda s: print(s, file=sys.stderr, flush=True))
        if args.save_costs:
            write_text(args.save_costs, json.dumps(asdict(measured), indent=1) + "\n")
        text = render(plan, table(plan, measured, Assumptions(), args.profile), measured, Assumptions(),
                      args.markdown)
        if args.out:
            write_text(args.out, text)
        else:
            sys.stdout.write(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probes"]:  # run_probes' subprocess
        with user_errors():
            print(json.dumps(_run_forked([tuple(p) for p in json.loads(sys.argv[2])])))
    else:
        main()
