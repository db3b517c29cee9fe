"""Sampling speed in seconds per sample (paper §4.3, Table 4), split into the draft phase, the
revise phase and the tokenizer's decoding of the code maps to images.

    python -m drr.sampling.speed --config configs/experiments/in256-crq-821m.yaml \
        [--set sampling.t_draft=8] --tokenizer TOKENIZER.pt --transformer TRANSFORMER.pt \
        --json results/speed/in256-crq-821m-tdraft8.json [--precision fp32|bf16] [--device cuda]

The paper generates 5,000 samples at batch 100 and reports s/sample. Here: one warm-up batch of
``generation.speed_batch_size`` samples (not timed), then ``generation.speed_batches`` timed
batches; s/sample of a phase = its total time / (speed_batches x speed_batch_size). (The batch
size of generation itself, ``generation.batch_size``, changes no sample and no speed figure.)
Conditions are those of generation (samples 0, 1, ...; text models need --text-tokenizer/
--captions), seeds from ``sample_seeds``. The transformer runs in ``sampling.precision``
(``--precision`` sets it), as generation does (drr.sampling.sampler.precision); the JSON and the
summary line name it.

Phase split: the batch is sampled by the same loop as generation, drr.sampling.sampler.sample_codes
(``draft_and_revise``, or ``sample_raster`` for an AR model), which calls this module's clock at
each phase boundary (its ``on_phase`` hook): after the draft (its partition, uniforms and T_draft
steps) and after the M revise passes. The clock starts after the device is synchronised; the decode
phase is the whole tokenizer decode to uint8 images (drr.sampling.images.decode_images, in fp32).
On CUDA every mark is a torch.cuda.Event, read after the batch (one synchronisation); on the CPU
time.perf_counter.

An autoregressive model (`transformer.model.kind: ar`) is timed the same way with two phases: its
raster-order sampling (settings `sampling.ar`; key ``s_per_sample_ar``, the draft and revise keys
are null) and the decode. ``model_kind`` says which.

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


class Clock:
    """A timeline of named phases: the clock starts when made, and ``mark(phase)`` ends a phase (the
    sampler's ``on_phase`` hook). CUDA events on a GPU, time.perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.phases: list[str] = []
        self.marks = [self._now()]

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def mark(self, phase: str) -> None:
        self.marks.append(self._now())
        self.phases.append(phase)

    def seconds(self) -> dict[str, float]:
        """Seconds of each phase, in order (synchronises the device)."""
        if self.cuda:
            torch.cuda.synchronize()
            spans = [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        else:
            spans = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return dict(zip(self.phases, spans))


def measure(cfg: dict, tokenizer: Path, transformer: Path, precision: str | None = None,
            device: str | None = None, caption_bpe: Path | None = None,
            captions: Path | None = None, models=None) -> dict:
    """Time `generation.speed_batches` batches after one warm-up batch; return the record.
    precision: sets `sampling.precision` (None: the config's); device: the --device option (None:
    the config's `device`)."""
    from drr.core.device import device_name, job_device, sync
    from drr.core.progress import Progress
    from drr.core.provenance import provenance
    from drr.sampling import sampler
    from drr.sampling.conditions import Conditions
    from drr.sampling.decode import sample_seeds
    from drr.sampling.images import decode_images
    from drr.sampling.models import load_models

    cfg = sampler.with_precision(cfg, precision)
    dev = job_device(cfg, device)
    sampler.precision(cfg, dev)  # checks the setting before the models load
    settings = sampler.sampling_settings(cfg)  # DecodeSettings, or ARSettings for kind ar
    if models is None:
        models = load_models(tokenizer, transformer, dev, cfg)
    sampler.check_positions(settings, models.transformer.config.num_positions)
    phases = AR_PHASES if models.transformer.config.kind == "ar" else PHASES
    conds = Conditions(cfg, caption_bpe, captions)
    bs, batches = cfg["generation"]["speed_batch_size"], cfg["generation"]["speed_batches"]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = {p: [] for p in phases}
    progress = Progress(batches + 1, "speed", unit="batch")
    for k in range(batches + 1):  # batch 0: warm-up
        idx = np.arange(k * bs, (k + 1) * bs)
        cond = conds(idx).to(dev)
        seeds = sample_seeds(cfg["seed"], idx)
        sync(dev)
        clock = Clock(dev)
        with sampler.precision(cfg, dev):
            codes, _ = sampler.sample_codes(models.transformer, cond, settings, seeds,
                                            on_phase=clock.mark)
        decode_images(models.tokenizer, codes, models.code_shape)
        clock.mark("decode")
        if k > 0:
            for p, t in clock.seconds().items():
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
        "precision": cfg["sampling"]["precision"],
        "tf32": dev.type == "cuda",
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


def summary(rec: dict, path: Path) -> str:
    """The one-line result the CLI prints."""
    split = (f"raster-order sampling {rec['s_per_sample_ar']:.4g}" if rec["model_kind"] == "ar"
             else f"draft {rec['s_per_sample_draft']:.4g}, revise {rec['s_per_sample_revise']:.4g}")
    return (f"{rec['s_per_sample']:.4g} s/sample ({split}, decode {rec['s_per_sample_decode']:.4g})"
            f" at batch {rec['batch_size']} on {rec['device']} in {rec['precision']}; wrote {path}")


def main(argv=None) -> None:
    from drr.core.files import write_json

    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--transformer", required=True, type=Path, help="transformer checkpoint")
    p.add_argument("--json", required=True, type=Path, help="where to write the measurement")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="transformer precision, as --set sampling.precision=... (default: the "
                        "config's); the tokenizer decodes in fp32")
    p.add_argument("--device", help="auto | cuda | cuda:N | cpu (default: the config's `device`)")
    p.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                   help="the caption BPE's JSON (drr.text.bpe; text-conditional models)")
    p.add_argument("--captions", type=Path, help="eval code map whose captions condition samples")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        rec = measure(cfg, args.tokenizer, args.transformer, args.precision, args.device,
                      args.caption_bpe, args.captions)
        write_json(args.json, rec)
        print(summary(rec, args.json), file=sys.stderr)


if __name__ == "__main__":
    main()
