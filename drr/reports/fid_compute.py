"""FID against training compute (docs/small-suite.md, protocol v6 §2): the weight snapshots and the
final model of each model, sampled at the tuned settings and scored (drr.sampling.steps: one JSON a
model, rule fid_steps), against the training core-seconds and the analytic training FLOPs, both
models in one figure.

    python -m drr.reports.fid_compute \
        --steps results/steps/small.json results/steps/small-ar.json \
        --transformers results/transformers/small/checkpoint.pt results/transformers/small-ar/checkpoint.pt \
        --codes results/codes/small-fmnist-rq8x8x4/fashion-mnist/train \
                results/codes/small-fmnist-rq8x8x4/fashion-mnist/train \
        --out reports/fid_compute.png

One --steps JSON, one final checkpoint and one training code map per model, in the same order. The
training run's folder (the checkpoint's) holds config.yaml (the resolved training config, with the
chosen learning rate) and metrics.jsonl (the training log), both written by drr.transformer.train
with the checkpoint. For each checkpoint of the steps JSON, at its step s:

- **core-seconds**: the training loop's seconds up to step s, times the job's cores (1: Snakemake
  runs every job on one thread, OMP_NUM_THREADS = the rule's threads). The log has a row every
  `log_every` steps and at the last step, with the tokens/s of the steps since the row before; that
  interval took (steps × tokens per step) / (tokens/s) seconds, tokens per step = batch × H·W·D
  (drr.transformer.train's count). A step between two rows is interpolated at the later row's rate.
  Held-out evaluations and state saves inside an interval are in its time; start-up is not; steps
  redone after a resume are counted once, at the resumed run's rate (`core_seconds`).
- **FLOPs**: s × batch × drr.transformer.flops.train_flops_per_sample (3 forwards a step; the
  contextual model scores E|m| positions of eq. 10, the AR model all N); held-out evaluations not
  counted.
- **epochs**: s × batch / the training code map's rows.

Writes OUT (.png), the same name as .pdf and .md (a table: model, step, epochs, core-seconds,
FLOPs, FID of the drafts and of the revised images with their 95% intervals), each atomically.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from drr.core.errors import DrrError, user_errors
from drr.core.files import write_text

CORES_PER_JOB = 1  # the workflow's jobs run on one thread each (Snakemake: threads 1 for every rule)
KIND_LABEL = {"contextual": "Contextual RQ-Transformer", "ar": "AR RQ-Transformer"}
PHASES = ("draft", "revised")


# -- the training log -----------------------------------------------------------------------------

def read_log(path) -> list[dict]:
    """The rows of a training log (metrics.jsonl) that time steps: {step, tokens_per_s}, by step."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DrrError(f"{path}: training log not found (drr.transformer.train writes it beside the "
                       "checkpoint)") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DrrError(f"{path}: line {i} is not JSON") from None
        if isinstance(row, dict) and "tokens_per_s" in row:
            if not (isinstance(row.get("step"), int) and row["step"] > 0 and row["tokens_per_s"] > 0):
                raise DrrError(f"{path}: line {i}: expected a positive step and tokens_per_s, got {row}")
            rows.append({"step": row["step"], "tokens_per_s": float(row["tokens_per_s"])})
    rows.sort(key=lambda r: r["step"])
    for a, b in itertools.pairwise(rows):
        if a["step"] == b["step"]:
            raise DrrError(f"{path}: step {a['step']} is logged twice")
    if not rows:
        raise DrrError(f"{path}: no row with tokens_per_s")
    return rows


def core_seconds(rows: list[dict], tokens_per_step: int, cores: int = CORES_PER_JOB
                 ) -> list[tuple[int, float]]:
    """[(step, core-seconds of training up to it)] at 0 and at every logged step: the interval
    since the row before took (steps × tokens_per_step) / tokens_per_s seconds, times `cores`."""
    out, before, total = [(0, 0.0)], 0, 0.0
    for r in rows:
        total += (r["step"] - before) * tokens_per_step / r["tokens_per_s"] * cores
        out.append((r["step"], total))
        before = r["step"]
    return out


def seconds_at(curve: list[tuple[int, float]], step: int, where: str = "the log") -> float:
    """Core-seconds at `step`, linear between the logged steps around it (the later row's rate)."""
    for (s0, t0), (s1, t1) in itertools.pairwise(curve):
        if s0 <= step <= s1:
            return t0 + (step - s0) * (t1 - t0) / (s1 - s0)
    raise DrrError(f"{where}: logs steps up to {curve[-1][0]}, not step {step}")


# -- one model --------------------------------------------------------------------------------------

def guidance(record: dict) -> float | None:
    """The guidance scale the steps were sampled at (the selection stage's choice)."""
    s = record["sampling"]
    return s["ar"]["guidance_scale"] if record["kind"] == "ar" else s["guidance_scale"]


def model_points(record: dict, run_dir: Path, train_maps: int) -> dict:
    """One model's points: its steps record with each checkpoint's epochs, core-seconds and FLOPs."""
    from drr.core.config import read_yaml
    from drr.transformer.flops import scored_positions, train_flops, train_flops_per_sample
    from drr.transformer.model import TransformerConfig

    run_dir = Path(run_dir)
    name = record.get("experiment")
    if name != run_dir.name:
        raise DrrError(f"{run_dir}: the steps given for it are of experiment {name!r}")
    cfg = read_yaml(run_dir / "config.yaml")
    c = TransformerConfig.from_experiment(cfg)
    if c.kind != record["kind"]:
        raise DrrError(f"{run_dir}/config.yaml: kind {c.kind!r}, the steps record says {record['kind']!r}")
    train = cfg["transformer"]["train"]
    batch = train["batch_size"]
    tokens_per_step = batch * c.num_positions * c.depth
    log = run_dir / "metrics.jsonl"
    curve = core_seconds(read_log(log), tokens_per_step)
    steps = sorted({t["steps"] for t in record["table"]})
    if steps[-1] != train["steps"]:
        raise DrrError(f"{run_dir}: the steps record ends at step {steps[-1]}, the run trained "
                       f"{train['steps']} steps")
    points = []
    for s in steps:
        rows = {t["phase"]: t for t in record["table"] if t["steps"] == s}
        points.append({"step": s, "epochs": s * batch / train_maps,
                       "core_seconds": seconds_at(curve, s, str(log)),
                       "flops": train_flops(c, s, batch),
                       **{p: rows.get(p) for p in PHASES}})
    return {"name": name, "kind": c.kind, "lr": train["lr"], "guidance": guidance(record),
            "samples": record["samples"], "batch": batch, "tokens_per_step": tokens_per_step,
            "flops_per_sample": train_flops_per_sample(c), "train_maps": train_maps,
            "scored": scored_positions(c), "positions": c.num_positions,
            "points": points}


# -- the report -------------------------------------------------------------------------------------

def _fid(row: dict | None) -> str:
    if row is None:
        return "— (no draft)"
    return f"{row['fid']:.2f} [{row['fid_lo']:.2f}, {row['fid_hi']:.2f}]"


def _label(m: dict) -> str:
    return f"`{m['name']}` ({KIND_LABEL[m['kind']]})"


def markdown(models: list[dict], png_name: str) -> str:
    n = sorted({m["samples"] for m in models})
    lines = ["# FID against training compute", "",
             (f"Each model's weight snapshots and final checkpoint (seed 0), "
              f"{', '.join(f'{k:,}' for k in n)} samples each at the tuned sampling settings (the "
              "guidance scale the selection stage chose), the same seeds and classes at every "
              "checkpoint; FID against the suite's reference, [lo, hi] its 95% half-sampling "
              "interval. Core-seconds: the training "
              "loop's time on one thread, from the training log (each logged interval's steps × "
              "tokens per step / its tokens/s; a step between two log rows interpolated at the later "
              "row's rate; held-out evaluations and saves inside an interval included, start-up "
              "not). FLOPs: analytic, steps × batch × the training FLOPs of one code map "
              "(drr.transformer.flops: 3 forwards; the contextual model scores the expected "
              "eq.-10 mask count of positions, the AR model all of them)."), "",
             ("| model | step | epochs | core-seconds | FLOPs | FID, drafts [95% interval] | "
              "FID, revised [95% interval] |"),
             "|---|---|---|---|---|---|---|"]
    for m in models:
        for p in m["points"]:
            lines.append(f"| {_label(m)} | {p['step']:,} | {p['epochs']:.2f} | {p['core_seconds']:,.0f} | "
                         f"{p['flops']:.3g} | {_fid(p['draft'])} | {_fid(p['revised'])} |")
    lines += ["", f"![FID against training compute]({png_name})", "", "Per model:", ""]
    for m in models:
        last = m["points"][-1]
        scale = "no guidance" if m["guidance"] is None else f"guidance scale {m['guidance']:g}"
        lines.append(f"- {_label(m)}: learning rate {m['lr']:g}, {scale}, batch {m['batch']} "
                     f"({m['tokens_per_step']:,} code tokens a step), {m['train_maps']:,} training maps; "
                     f"{m['flops_per_sample'] / 1e6:,.1f} MFLOPs per code map a step, "
                     f"{m['scored']:.1f} of {m['positions']} positions scored; "
                     f"{last['core_seconds'] / last['step']:.3f} core-seconds a step on average.")
    return "\n".join(lines) + "\n"


def plot(models: list[dict], out: Path) -> None:
    """Two panels, FID against core-seconds and against FLOPs; revised images solid, drafts
    dashed, one colour per model; error bars: the 95% intervals."""
    from drr.reports.plotting import pyplot, save_png_pdf

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, label, title in ((axes[0], "core_seconds", "training core-seconds (one thread)",
                                 "(a) against training time"),
                                (axes[1], "flops", "training FLOPs (analytic)",
                                 "(b) against training FLOPs")):
        for i, m in enumerate(models):
            color = f"C{i}"
            for phase, fmt in (("revised", "o-"), ("draft", "s--")):
                pts = [p for p in m["points"] if p[phase] is not None]
                if not pts:
                    continue
                xs = [p[x] for p in pts]
                ys = [p[phase]["fid"] for p in pts]
                err = [[max(y - p[phase]["fid_lo"], 0) for y, p in zip(ys, pts)],
                       [max(p[phase]["fid_hi"] - y, 0) for y, p in zip(ys, pts)]]
                ax.errorbar(xs, ys, yerr=err, fmt=fmt, color=color, capsize=3, elinewidth=1,
                            alpha=1.0 if phase == "revised" else 0.6,
                            label=f"{m['name']} ({'AR' if m['kind'] == 'ar' else 'contextual'}), {phase}")
                if phase == "revised":
                    for xv, yv, p in zip(xs, ys, pts):
                        ax.annotate(f"{p['epochs']:.3g} ep", (xv, yv), textcoords="offset points",
                                    xytext=(4, 4), fontsize=7, color=color)
        ax.set_xlabel(label)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("FID ↓")
    axes[0].legend(fontsize=7)
    n = sorted({m["samples"] for m in models})
    save_png_pdf(fig, out, f"FID against training compute (seed 0; {', '.join(f'{k:,}' for k in n)} "
                 "samples per point; error bars: 95% half-sampling intervals)")


def build(steps: list[Path], transformers: list[Path], codes: list[Path], out: Path) -> list[dict]:
    """Read every model's files, write OUT (.png, .pdf) and OUT.md; return the models' points."""
    from drr.codes.store import count_rows

    if not (len(steps) == len(transformers) == len(codes)) or not steps:
        raise DrrError(f"give one --steps, --transformers and --codes per model, in the same order "
                       f"(got {len(steps)}, {len(transformers)} and {len(codes)})")
    models = []
    for s, t, c in zip(steps, transformers, codes):
        try:
            record = json.loads(Path(s).read_text())
        except FileNotFoundError:
            raise DrrError(f"{s}: file not found (rule fid_steps makes it)") from None
        except ValueError:
            raise DrrError(f"{s}: not JSON") from None
        for key in ("table", "experiment", "kind", "samples", "sampling"):
            if key not in record:
                raise DrrError(f"{s}: missing field '{key}' (made by drr.sampling.steps)")
        models.append(model_points(record, Path(t).parent, count_rows(c)))
    out = Path(out)
    plot(models, out)
    write_text(out.with_suffix(".md"), markdown(models, out.name))
    return models


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", nargs="+", required=True, type=Path,
                   help="one model's FID against steps (drr.sampling.steps OUT.json), per model")
    p.add_argument("--transformers", nargs="+", required=True, type=Path,
                   help="its final checkpoint; config.yaml and metrics.jsonl lie beside it")
    p.add_argument("--codes", nargs="+", required=True, type=Path,
                   help="its training code map (the rows of an epoch)")
    p.add_argument("--out", required=True, type=Path, help="OUT.png; also OUT.pdf and OUT.md")
    args = p.parse_args(argv)
    with user_errors():
        models = build(args.steps, args.transformers, args.codes, args.out)
        for m in models:
            last = m["points"][-1]
            print(f"{m['name']}: {len(m['points'])} checkpoints, {last['core_seconds']:,.0f} core-seconds, "
                  f"{last['flops']:.3g} FLOPs at step {last['step']:,}")
        print(f"wrote {args.out}, {args.out.with_suffix('.pdf')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
