"""Sampling speed in seconds per sample (paper §4.3, Table 4), split into the draft phase, the
revise phase and the tokenizer's decoding of the code maps to images.

    python -m drr.sampling.speed --config configs/experiments/in256-crq-821m.yaml \
        [--set sampling.t_draft=8] --tokenizer TOKENIZER.pt --transformer TRANSFORMER.pt \
        --json results/speed/in256-crq-821m-tdraft8.json [--precision fp32|bf16] [--device cuda]

The paper generates 5,000 samples at batch 100 and reports s/sample. Here: one warm-up batch of
``generation.speed_batch_size`` samples (not timed), then ``generation.speed_batches`` timed
batches; s/sample of a phase = its total time / (speed_batches x speed_batch_size). (The batch
size of generation itself, ``generation.batch_size``, changes no sample and no speed figure.) Conditions are those of
generation (samples 0, 1, ...; text models need --text-tokenizer/--captions), seeds from
``sample_seeds``.

Phase split: Algorithm 2 is run here step by step through decode.py's public functions, exactly
as ``draft_and_revise`` runs it (same per-sample generators, same draw order: draft partition,
UPDATE with the draft settings and strategy from S^empty; then M times a T_revise partition and
UPDATE with the revise settings), with a timestamp between the phases; the tests check that the
codes equal ``draft_and_revise``'s. On CUDA every phase is timed with torch.cuda.Event pairs and
the device is synchronised after each batch; on CPU with time.perf_counter. The draft time
includes drawing its partition and uniforms (as in real sampling), the decode time the whole
tokenizer decode to uint8 images (drr.sampling.images.decode_images, in fp32).

An autoregressive model (`transformer.model.kind: ar`) is timed the same way with two phases: its
raster-order sampling (``sample_raster``, settings `sampling.ar`; key ``s_per_sample_ar``, the
draft and revise keys are null) and the decode. ``model_kind`` says which.

Writes the JSON atomically: s/sample per phase and in total, samples/s, the raw per-batch times,
batch size, number of batches, decode settings, precision, device name, torch/CUDA versions,
peak CUDA memory, and the provenance record.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import user_errors

PHASES = ("draft", "revise", "decode")
AR_PHASES = ("ar", "decode")  # an autoregressive model: raster-order sampling, then the decode


class _Clock:
    """Marks on a timeline: CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds between consecutive marks (synchronises the device)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


@torch.inference_mode()
def phased_draft_and_revise(model, cond: torch.Tensor, settings, seeds: torch.Tensor,
                            clock: _Clock | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2 for full-image generation, as ``draft_and_revise`` runs it, with clock marks
    after the draft and after the revise phase. Returns (codes, draft), both (B, N, D)."""
    from drr.sampling.decode import balanced_partition, update

    model.eval()
    c = model.config
    b, n, device = len(cond), c.num_positions, cond.device
    settings.check_positions(n)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]

    def partition(T: int) -> torch.Tensor:
        return torch.stack([balanced_partition(n, T, g) for g in generators])

    codes = torch.zeros(b, n, c.depth, dtype=torch.long, device=device)
    known = torch.zeros(b, n, dtype=torch.bool, device=device)
    codes = update(model, codes, cond, partition(settings.t_draft), settings.draft, generators,
                   settings.strategy, known)
    draft = codes
    if clock:
        clock.mark()
    for _ in range(settings.revise_iterations):
        codes = update(model, codes, cond, partition(settings.t_revise), settings.revise,
                       generators)
    if clock:
        clock.mark()
    return codes, draft


def measure(cfg: dict, tokenizer: Path, transformer: Path, precision: str = "fp32",
            device: str | None = None, text_tokenizer: Path | None = None,
            captions: Path | None = None, models=None) -> dict:
    """Time `generation.speed_batches` batches after one warm-up batch; return the record."""
    from drr.core.progress import Progress
    from drr.core.provenance import provenance
    from drr.sampling.ar import ARSettings, check_positions, sample_raster, sampling_settings
    from drr.sampling.decode import sample_seeds
    from drr.sampling.generate import device_name
    from drr.sampling.images import Conditions, autocast, decode_images, load_models, pick_device

    dev = pick_device(device)
    autocast(dev, precision)
    settings = sampling_settings(cfg)  # DecodeSettings, or ARSettings for kind ar
    if models is None:
        models = load_models(tokenizer, transformer, dev, cfg)
    check_positions(settings, models.transformer.config.num_positions)
    ar = isinstance(settings, ARSettings)
    phases = AR_PHASES if ar else PHASES
    conds = Conditions(cfg, text_tokenizer, captions)
    bs, batches = cfg["generation"]["speed_batch_size"], cfg["generation"]["speed_batches"]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = {p: [] for p in phases}
    progress = Progress(batches + 1, "speed", unit="batch")
    for k in range(batches + 1):  # batch 0: warm-up
        idx = np.arange(k * bs, (k + 1) * bs)
        cond = conds(idx).to(dev)
        seeds = sample_seeds(cfg["seed"], idx)
        clock = _Clock(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        clock.mark()
        with autocast(dev, precision):
            if ar:
                codes = sample_raster(models.transformer, cond, settings, seeds)
                clock.mark()
            else:
                codes, _ = phased_draft_and_revise(models.transformer, cond, settings, seeds, clock)
        decode_images(models.tokenizer, codes, models.code_shape)
        clock.mark()
        if k > 0:
            for p, t in zip(phases, clock.intervals()):
                times[p].append(t)
        progress.update(1)
    n = batches * bs
    per_sample = {p: sum(times[p]) / n for p in phases}
    total = sum(per_sample.values())
    tc = models.transformer.config
    return {
        "model_kind": tc.kind,
        "s_per_sample": total,
        "s_per_sample_draft": per_sample.get("draft"),
        "s_per_sample_revise": per_sample.get("revise"),
        "s_per_sample_ar": per_sample.get("ar"),
        "s_per_sample_decode": per_sample["decode"],
        "samples_per_s": 1.0 / total if total > 0 else None,
        "batch_seconds": times,
        "batch_size": bs, "timed_batches": batches, "warmup_batches": 1, "timed_samples": n,
        "timing": "torch.cuda.Event" if dev.type == "cuda" else "time.perf_counter",
        "decode_settings": asdict(settings),
        "precision": precision,
        "device": device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "peak_cuda_memory_bytes": (torch.cuda.max_memory_allocated(dev)
                                   if dev.type == "cuda" else None),
        "transformer_parameters": sum(p.numel() for p in models.transformer.parameters()),
        "code_shape": list(tc.code_shape),
        "transformer": str(models.transformer_path),
        "transformer_sha256": models.transformer_sha256,
        "tokenizer": str(models.tokenizer_path),
        "tokenizer_sha256": models.tokenizer_sha256,
        "provenance": provenance(cfg),
    }


def main(argv=None) -> None:
    from drr.core.files import write_json

    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--transformer", required=True, type=Path, help="transformer checkpoint")
    p.add_argument("--json", required=True, type=Path, help="where to write the measurement")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="transformer precision (the tokenizer decodes in fp32)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--text-tokenizer", type=Path, help="BPE json (text-conditional models)")
    p.add_argument("--captions", type=Path, help="eval code map whose captions condition samples")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        rec = measure(cfg, args.tokenizer, args.transformer, args.precision, args.device,
                      args.text_tokenizer, args.captions)
        write_json(args.json, rec)
        split = (f"raster-order sampling {rec['s_per_sample_ar']:.4g}" if rec["model_kind"] == "ar"
                 else f"draft {rec['s_per_sample_draft']:.4g}, revise "
                      f"{rec['s_per_sample_revise']:.4g}")
        print(f"{rec['s_per_sample']:.4g} s/sample ({split}, decode "
              f"{rec['s_per_sample_decode']:.4g}) at batch {rec['batch_size']} on {rec['device']}; "
              f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
