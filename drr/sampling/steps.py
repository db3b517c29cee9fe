"""FID against training steps: the weight snapshots a training run kept
(`transformer.train.snapshot_every`, snapshots/step-NNNNNN.pt) and its final checkpoint, each
sampled with the experiment's sampling settings and scored against one reference.

    python -m drr.sampling.steps --config configs/experiments/small.yaml \
        --set transformer.train.snapshot_every=1000 \
        --tokenizer results/tokenizers/small-fmnist-rq8x8x4/checkpoint.pt \
        --transformer results/transformers/small/checkpoint.pt \
        --reference results/reference/fashion-mnist-aa0f8eb3.npz \
        --samples 1000 --out reports/transformers/small-steps

For each checkpoint: `--samples` samples (sample i a function of (seed, i), the same conditions
and seeds at every step), with their drafts for a contextual model (an AR model has none), made by
drr.sampling.generate under OUT.work/step-NNNNNN/ (resumable: a rerun skips finished shards), and
scored by drr.metrics.score (draft and revised rows, or revised rows of an AR model; 95% half-sampling
intervals; features cached by content under OUT.work/features). Every checkpoint's rows
are resampled at the same indices (same N and classes), so the difference of each step's FID to
the final one is a paired difference with its own interval. `--features-cache` names another
feature cache (the workflow's: results/cache/features), so sample sets that the workflow already
scored are not scored again. Writes OUT.md (table), OUT.png (FID of drafts and revised images
against steps, error bars) and OUT.json (the table, the experiment, its kind, the samples per
checkpoint, the sampling settings and the provenance record), each atomically. The workflow runs it per model for
the FID-against-compute figure (rule fid_steps: results/steps/<experiment>, at the settings the
selection stage chose; drr.reports.fid_compute).

The snapshots must come from the run that made the checkpoint: each snapshot's config must equal
the checkpoint's in every key of the `transformer` stage of drr.workflow.plan, else a one-line error names
the file.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path, write_json, write_text
from drr.core.progress import log
from drr.core.provenance import provenance

SNAPSHOT = re.compile(r"step-(\d{6})\.pt")



def checkpoints(transformer: Path) -> list[tuple[int, Path]]:
    """(steps, path) of every snapshot beside `transformer` and of `transformer` itself, by step;
    each checked to come from the same training run (same `transformer` stage config)."""
    from drr.core import checkpoint
    from drr.core.stages import first_difference

    transformer = Path(transformer)
    final = checkpoint.load_file(transformer, "transformer checkpoint")
    out = []
    folder = transformer.parent / "snapshots"
    for path in sorted(folder.glob("step-*.pt")) if folder.is_dir() else []:
        if not SNAPSHOT.fullmatch(path.name):
            continue
        snap = checkpoint.load_file(path, "transformer snapshot")
        diff = first_difference(final["config"], snap["config"], "transformer")
        if diff is not None:
            raise DrrError(f"{path}: not a snapshot of {transformer}'s training run ({diff})")
        out.append((int(snap["provenance"]["trained_steps"]), path))
    out.append((int(final["provenance"]["trained_steps"]), transformer))
    if len(out) < 2:
        raise DrrError(f"{folder}: no snapshots (set transformer.train.snapshot_every and train again)")
    return sorted(out)


def phases(cfg: dict) -> tuple[str, ...]:
    """The phases scored: draft and revised for a contextual model, revised for an AR model
    (raster-order sampling has no draft)."""
    return ("revised",) if cfg["transformer"]["model"]["kind"] == "ar" else ("draft", "revised")


def steps_config(cfg: dict, samples: int) -> dict:
    """The config every checkpoint is sampled with: `samples` samples, drafts kept where the model
    makes them (the workflow hashes it: drr.workflow.plan.Plan.steps_hash)."""
    cfg = copy.deepcopy(cfg)
    cfg["generation"].update(num_samples=samples, save_drafts="draft" in phases(cfg))
    return cfg


def measure(cfg: dict, tokenizer: Path, transformer: Path, reference: Path, samples: int,
            work: Path, features_cache: Path | None = None) -> list[dict]:
    """Metrics rows of every checkpoint (draft and revised, revised only for an AR model), with a
    `steps` field; features cached by content under `features_cache` (default WORK/features)."""
    from drr.metrics.score import score
    from drr.sampling.generate import generate

    cfg = steps_config(cfg, samples)
    name = Path(transformer).parent.name
    rows = []
    for i, (steps, path) in enumerate(checkpoints(transformer)):
        log(f"[steps] checkpoint {i + 1}: {path} ({steps} steps)")
        npz = generate(cfg, tokenizer, path, work / f"step-{steps:06d}")
        for row in score(cfg, npz, reference, phases=phases(cfg),
                         experiment=name, variant=f"step={steps}",
                         features_cache=features_cache or work / "features"):
            rows.append({**row, "steps": steps, "checkpoint": str(path)})
    return rows


def paired_difference(row: dict, final: dict, metric: str = "fid") -> tuple[float, float, float]:
    """row − final with the basic interval of the replicate differences (same boot_key)."""
    from drr.metrics.intervals import basic_interval

    if row["boot_key"] != final["boot_key"]:
        raise DrrError(f"rows of {row['checkpoint']} and {final['checkpoint']} were not resampled "
                       f"alike (boot_key differs)")
    value = row[metric] - final[metric]
    reps = np.asarray(row[f"boot_{metric}"]) - np.asarray(final[f"boot_{metric}"])
    return (value, *basic_interval(value, reps))


def summary(rows: list[dict]) -> list[dict]:
    last = max(r["steps"] for r in rows)
    finals = {r["phase"]: r for r in rows if r["steps"] == last}
    out = []
    for r in sorted(rows, key=lambda r: (r["steps"], r["phase"])):
        d = paired_difference(r, finals[r["phase"]])
        out.append({"steps": r["steps"], "phase": r["phase"], "n": r["n_samples"],
                    "fid": r["fid"], "fid_lo": r["fid_lo"], "fid_hi": r["fid_hi"],
                    "precision": r["precision"], "recall": r["recall"],
                    "minus_final": d[0], "minus_final_lo": d[1], "minus_final_hi": d[2],
                    "checkpoint": r["checkpoint"]})
    return out


def markdown(name: str, table: list[dict], png_name: str) -> str:
    lines = [f"# `{name}`: FID against training steps", "",
             (f"{table[0]['n']:,} samples per checkpoint (the same seeds and classes at every "
              "step), the experiment's sampling settings, drafts kept where the model makes them; "
              "FID against the suite's reference. [lo, hi]: 95% half-sampling interval of the "
              "row; Δ final: FID minus the final checkpoint's, paired (same resampled indices), "
              "with its interval."), "",
             "| steps | phase | FID [95% interval] | Δ final [95% interval] | precision | recall |",
             "|---|---|---|---|---|---|"]
    for t in table:
        delta = ("—" if t["minus_final"] == 0 and t["minus_final_lo"] == 0 else
                 f"{t['minus_final']:+.2f} [{t['minus_final_lo']:+.2f}, {t['minus_final_hi']:+.2f}]")
        lines.append(f"| {t['steps']:,} | {t['phase']} | {t['fid']:.2f} [{t['fid_lo']:.2f}, "
                     f"{t['fid_hi']:.2f}] | {delta} | {t['precision']:.3f} | {t['recall']:.3f} |")
    lines += ["", f"![FID against training steps]({png_name})", ""]
    return "\n".join(lines)


def plot(name: str, table: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for phase, style in (("revised", "o-"), ("draft", "s--")):
        pts = [t for t in table if t["phase"] == phase]
        if not pts:  # an AR model has no drafts
            continue
        x = [t["steps"] for t in pts]
        y = np.array([t["fid"] for t in pts])
        err = np.array([[max(v - t["fid_lo"], 0), max(t["fid_hi"] - v, 0)]
                        for t, v in zip(pts, y)]).T
        ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=f"ours, {phase}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("FID ↓")
    ax.set_title(f"{name}: FID against training steps\n{table[0]['n']:,} samples per point; "
                 "error bars: 95% half-sampling intervals", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--transformer", required=True, type=Path,
                   help="final checkpoint; its snapshots are in snapshots/ beside it")
    p.add_argument("--reference", required=True, type=Path, help="reference statistics (drr.metrics.reference)")
    p.add_argument("--samples", type=int, default=1000, help="samples per checkpoint")
    p.add_argument("--out", required=True, type=Path, help="OUT: writes OUT.md, OUT.png, OUT.json")
    p.add_argument("--features-cache", type=Path,
                   help="folder of features cached by content (default OUT.work/features; the "
                        "workflow's is results/cache/features)")
    args = p.parse_args(argv)
    with user_errors():
        if args.samples < 1:
            raise DrrError(f"--samples: {args.samples} is not >= 1")
        cfg = resolve(args)
        work = args.out.parent / f"{args.out.name}.work"
        table = summary(measure(cfg, args.tokenizer, args.transformer, args.reference,
                                args.samples, work, args.features_cache))
        name = args.transformer.parent.name
        png = args.out.with_suffix(".png")
        plot(name, table, png)
        write_json(args.out.with_suffix(".json"),
                   {"table": table, "experiment": name, "kind": cfg["transformer"]["model"]["kind"],
                    "samples": args.samples, "sampling": cfg["sampling"],
                    "transformer": str(args.transformer),
                    "provenance": provenance(cfg)})
        write_text(args.out.with_suffix(".md"), markdown(name, table, png.name))
        log(f"wrote {args.out}.md, .png, .json")


if __name__ == "__main__":
    main()
