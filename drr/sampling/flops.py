"""Floating-point operations per sample of the sampler (docs/small-suite.md, protocol v6 §9): the
cost that decides sampling speed on a CPU, where the paper's ordering (GPU latency at batch 100)
does not apply.

    python -m drr.sampling.flops --config configs/experiments/small.yaml [--set sampling.t_draft=8] \
        --tokenizer TOKENIZER.pt --transformer TRANSFORMER.pt --json results/flops/small/t_draft=8.json

Counted with torch.utils.flop_counter.FlopCounterMode around the sampling loop itself
(drr.sampling.sampler.sample_codes: Draft-and-Revise, or raster order for an AR model) for
``--samples`` samples (conditions and seeds of samples 0, 1, ... as the speed measurement's): the
spatial and depth transformers' matrix products and attention, with guided phases' null-condition
rows; the tokenizer's decoding to images is left out (it is the same for both samplers). The count
per sample does not depend on the weights or the batch; it runs on the CPU in fp32. Each phase is
counted apart through the sampler's phase hook (draft and revise, or ar).

Writes the JSON atomically: FLOPs per sample in total and by phase, the samples counted, the decode
settings, the model's parameters and the provenance record.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors

COUNTER = "torch.utils.flop_counter.FlopCounterMode"


def count(cfg: dict, tokenizer: Path, transformer: Path, samples: int = 2,
          caption_bpe: Path | None = None, captions: Path | None = None, models=None) -> dict:
    """FLOPs per sample of the config's sampler on `samples` samples; the record --json holds."""
    from torch.utils.flop_counter import FlopCounterMode

    from drr.core.provenance import provenance
    from drr.sampling import sampler
    from drr.sampling.conditions import Conditions
    from drr.sampling.decode import sample_seeds
    from drr.sampling.models import load_models

    if samples < 1:
        raise DrrError(f"--samples {samples}: count at least one sample")
    dev = torch.device("cpu")
    cfg = sampler.with_precision(cfg, "fp32")
    settings = sampler.sampling_settings(cfg)
    if models is None:
        models = load_models(tokenizer, transformer, dev, cfg)
    sampler.check_positions(settings, models.transformer.config.num_positions)
    conds = Conditions(cfg, caption_bpe, captions)
    idx = np.arange(samples)
    marks: list[tuple[str, int]] = []
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sampler.sample_codes(models.transformer, conds(idx), settings, sample_seeds(cfg["seed"], idx),
                             on_phase=lambda phase: marks.append((phase, counter.get_total_flops())))
    total = counter.get_total_flops()
    by_phase, before = {}, 0
    for phase, at in marks:
        by_phase[phase] = (at - before) / samples
        before = at
    tc = models.transformer.config
    return {
        "model_kind": tc.kind,
        "flops_per_sample": total / samples,
        "flops_per_sample_by_phase": by_phase,
        "samples": samples,
        "counted_with": COUNTER,
        "counts": "spatial and depth transformers (matrix products, attention); tokenizer decoding left out",
        "decode_settings": asdict(settings),
        "transformer_parameters": sum(p.numel() for p in models.transformer.parameters()),
        "code_shape": list(tc.code_shape),
        "transformer": str(models.transformer_path),
        "transformer_sha256": models.transformer_sha256,
        "torch": torch.__version__,
        "provenance": provenance(cfg),
    }


def main(argv=None) -> None:
    from drr.core.files import write_json

    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--transformer", required=True, type=Path, help="transformer checkpoint")
    p.add_argument("--json", required=True, type=Path, help="where to write the count")
    p.add_argument("--samples", type=int, default=2, help="samples counted (default 2)")
    p.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                   help="the caption BPE's JSON (drr.text.bpe; text-conditional models)")
    p.add_argument("--captions", type=Path, help="eval code map whose captions condition samples")
    args = p.parse_args(argv)
    with user_errors():
        rec = count(resolve(args), args.tokenizer, args.transformer, args.samples, args.caption_bpe,
                    args.captions)
        write_json(args.json, rec)
    print(f"{rec['flops_per_sample'] / 1e9:.4g} GFLOPs per sample ({rec['model_kind']}); wrote {args.json}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
