"""Verdicts on the paper's claims (configs/claims.yaml) from the suite's metrics rows, speed files and
FLOPs counts, with the evidence that bears on a claim that is not reproduced.

    python -m drr.reports.claims --spec results/reports/claims.spec.json \
        --metrics results/metrics/small/base.parquet ... --speed results/speed/small/base.json ... \
        --flops results/flops/small/t_draft=8.json ... --models results/transformers/small/report.json ... \
        --selections results/select/small/lr.json ... --out reports/claims.md

The spec (drr.workflow.report_spec.claims_spec, written by the plan) holds each claim of
configs/claims.yaml with the runs it compares, resolved from configs/studies.yaml and the suite's
seeds, and names every file the report reads; the rule `claims` (workflow/rules/claims.smk) passes
those files. A metrics row is found by its own experiment, variant and phase columns; any other file
is the one the spec names so. A run a claim needs whose file is not given or not there reads
"n/a, because ..." and gives no verdict.

Verdicts (docs/small-suite.md, protocol v6 §7, §11; nothing here is typed by hand):

- Each comparison is an *effect* oriented so that a positive value is the paper's direction, with a
  95% half-sampling interval (drr.metrics.intervals). *reproduced*: the interval is
  above 0; *not reproduced*: below 0; *inconclusive*: it contains 0.
- The difference of two metrics rows uses their stored bootstrap replicates: rows with the same
  ``boot_key`` were resampled at the same sample indices, so replicate b of one minus replicate b
  of the other is the paired bootstrap of the difference. Rows with different keys were resampled
  independently; replicate b of each is then an independent draw and their difference is the
  two-sample bootstrap (the report says "unpaired" on that line).
- Per seed (``per_seed``): each comparison is made for every training seed, seed s against seed s.
  It is reproduced when every seed's interval is above 0, not reproduced when every one is below,
  inconclusive otherwise. Printed: the mean of the seeds' effects and the hull of their intervals
  (whose verdict is exactly that rule), and the seed spread |Δ_0 − Δ_1| beside the seeds'
  half-widths.
- s/sample: the speed file's per-batch times (``batch_seconds``, every phase summed, over
  ``batch_size``); replicates resample the timed batches of each run independently
  (drr.metrics.intervals.speed_interval). A claim ``timed_on: gpu`` is made only when both runs
  were timed on a GPU; elsewhere it reads n/a with both runs' FLOPs per sample (drr.sampling.flops)
  and is not counted.
- A claim of several comparisons (``for_each: cells``, a list of comparisons, a trend's slope and
  end-point difference) follows the intersection-union rule over its required comparisons:
  reproduced when every one is, not reproduced when any one is, inconclusive otherwise; n/a when
  any is n/a. A comparison with ``required: false`` is shown with its verdict and left out.
- Trend: least-squares slope of the metric against log2 of the parameter (``x: linear``: the
  parameter itself), slope replicates from the cells' replicates, and the end-point difference
  (largest minus smallest parameter value).
- Not counted in the summary: claims reported ``apart``, n/a claims (a missing result, or a
  ``timed_on`` device the run did not have), and the comparisons reported ``beside`` a claim.

Beside every claim that is not reproduced the report shows what bears on its cause: every model's
held-out NLL at the end of training and its drop over the last quarter (the transformer reports'
curve), the chain-rule NLL both kinds share, the spread between the training seeds at the default
settings, and each comparison's interval half-width beside the paper's own effect. The choices the
runs were made with (learning rate, guidance scale: drr.workflow.select) head the report.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from drr.core.columns import COLUMNS
from drr.core.errors import DrrError, user_errors
from drr.metrics.intervals import LEVEL, basic_interval, speed_interval
from drr.metrics.intervals import per_batch_seconds as per_batch_seconds_of
from drr.reports.results import Absent, Inputs, read_spec

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


class Missing(Exception):
    """A result a comparison needs is not there: the comparison reads "n/a, because <reason>"."""


# --- the verdict maths (pure functions of numbers) -------------------------------------------------

@dataclass
class Estimate:
    """A quantity with its bootstrap replicates; `key` names the index matrix behind them (rows with
    the same key are paired), None when they were drawn on their own (speed)."""
    value: float
    reps: np.ndarray
    key: str | None = None


@dataclass
class Effect:
    """One oriented comparison: positive = the paper's direction."""
    label: str
    value: float | None = None
    lo: float | None = None
    hi: float | None = None
    how: str = ""                 # paired | unpaired | ...
    shown: str = ""               # the values compared, for the reader
    na: str | None = None         # "n/a, because ..." reason
    required: bool = True         # False: shown, not part of the claim's verdict
    paper_effect: float | None = None  # the paper's own effect, oriented as this one
    seeds: list = field(default_factory=list)   # per-seed effects (per_seed claims), seed 0 first
    withheld: str | None = None   # why this comparison gives no verdict here, though it was measured

    @property
    def verdict(self) -> str | None:
        return None if self.na is not None else verdict(self.lo, self.hi)

    @property
    def half_width(self) -> float | None:
        return None if self.na is not None else (self.hi - self.lo) / 2


def verdict(lo: float, hi: float) -> str:
    """reproduced when the interval is above 0, not reproduced when below, else inconclusive."""
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: list) -> str | None:
    """Intersection-union over comparisons: None (n/a) if any is n/a."""
    if not verdicts or any(v is None for v in verdicts):
        return None
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def oriented(label: str, value: float, reps: np.ndarray, sign: int, how: str = "", shown: str = "") -> Effect:
    """The effect sign·value with the basic interval of sign·reps."""
    v = sign * float(value) + 0.0          # + 0.0: no "-0" in the report
    lo, hi = basic_interval(v, sign * np.asarray(reps, np.float64), LEVEL)
    return Effect(label, v, lo, hi, how, shown)


def difference(a: Estimate, b: Estimate) -> tuple[float, np.ndarray, str]:
    """a − b with replicates: paired when both come from the same index matrix, else the
    difference of independent replicates (the first min(B_a, B_b) of each)."""
    if a.key is not None and a.key == b.key and len(a.reps) == len(b.reps):
        return a.value - b.value, a.reps - b.reps, "paired"
    n = min(len(a.reps), len(b.reps))
    return a.value - b.value, a.reps[:n] - b.reps[:n], "unpaired (independent replicates)"


def over_seeds(label: str, seeds: list[Effect]) -> Effect:
    """The per-seed rule (protocol v6 §7) as one effect: the mean of the seeds' effects, the hull of
    their intervals (above 0 exactly when every seed's is, below 0 exactly when every one is), the
    seed spread beside the half-widths; n/a when any seed is."""
    missing = [e for e in seeds if e.na is not None]
    if missing:
        return Effect(label, na=missing[0].na, seeds=seeds)
    if len(seeds) == 1:          # a suite (or a run) with one training seed: that seed's effect, no spread
        return replace(seeds[0], label=label, how=f"{seeds[0].how}; one training seed, no seed spread")
    values = [e.value for e in seeds]
    spread = max(values) - min(values)
    widths = [e.half_width for e in seeds]
    how = (f"{len(seeds)} seeds, mean and hull; seed spread {spread:.3g}, half-widths "
           + ", ".join(f"{w:.3g}" for w in widths))
    if spread > max(widths):
        how += ": the training runs differ more than the sample sets resolve"
    return Effect(label, float(np.mean(values)) + 0.0, min(e.lo for e in seeds), max(e.hi for e in seeds),
                  how, seeds=seeds)


def slopes(x, y) -> np.ndarray:
    """Least-squares slope of each row of y (..., k) against x (k,)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean()
    y = np.asarray(y, np.float64)
    return (y - y.mean(-1, keepdims=True)) @ xc / float(xc @ xc)


def trend_effects(x, points: list[Estimate], sign: int, label: str) -> list[Effect]:
    """[slope effect, end-point effect] of a trend; `x` sorted ascending, `sign` +1 when the paper
    says the metric grows with x."""
    y = np.array([p.value for p in points])
    n = min(len(p.reps) for p in points)
    reps = np.stack([p.reps[:n] for p in points], axis=1)          # (B, k)
    keys = {p.key for p in points}
    how = "paired" if len(keys) == 1 and None not in keys else "unpaired (independent replicates)"
    slope = oriented(f"slope of {label}", float(slopes(x, y)), slopes(x, reps), sign, how)
    d, d_reps, d_how = difference(points[-1], points[0])
    end = oriented(f"{label}: last − first", d, d_reps, sign, d_how)
    return [slope, end]


# --- reading the runs' files ----------------------------------------------------------------------

def _row(inputs: Inputs, run, phase: str) -> tuple[dict, Path]:
    try:
        row, path = inputs.row(tuple(run), phase)
    except Absent as e:
        raise Missing(e.reason()) from None
    return row, Path(path)


def metric_estimate(inputs: Inputs, run, phase: str, metric: str) -> Estimate:
    if metric == "s_per_sample":
        return speed_estimate(inputs, run)
    col = COLUMNS[metric]
    field_, boot, note = col.field, col.boot, col.note
    row, path = _row(inputs, run, phase)
    if row.get(field_) is None:
        raise Missing(f"{path} ({phase}) has no {metric}: {row.get(note) or 'null'}")
    reps = row.get(boot)
    if not reps:
        raise Missing(f"{path} ({phase}) has no bootstrap replicates of {metric}"
                      + (f": {row['interval_note']}" if row.get("interval_note") else ""))
    return Estimate(float(row[field_]), np.asarray(reps, np.float64), row.get("boot_key"))


def per_batch_seconds(rec: dict, path) -> np.ndarray:
    """s/sample of each timed batch (drr.metrics.intervals.per_batch_seconds), or Missing."""
    try:
        return per_batch_seconds_of(rec)
    except ValueError as e:
        raise Missing(f"{path}: {e}") from None


def _speed_record(inputs: Inputs, run) -> tuple[dict, Path]:
    try:
        rec, path = inputs.speed(tuple(run))
    except Absent as e:
        raise Missing(e.reason()) from None
    return rec, Path(path)


def speed_estimate(inputs: Inputs, run) -> Estimate:
    rec, path = _speed_record(inputs, run)
    t = per_batch_seconds(rec, path)
    return Estimate(float(t.mean()), speed_interval(t, path)[2], None)


def on_gpu(rec: dict) -> bool:
    """Whether a speed record was timed on a GPU (drr.sampling.speed times CUDA with its events)."""
    return rec.get("timing") == "torch.cuda.Event"


class Files:
    """The JSON files given with one option (--flops, --models, --selections), each found by the
    path the spec names it by; a given file the spec does not name is an error."""

    def __init__(self, option: str, what: str, given, named, root=".", where: str = "the spec"):
        self.option, self.what, self.root = option, what, Path(root)
        self.given = {self._key(p): Path(p) for p in given}
        known = {self._key(n) for n in named}
        for key, p in self.given.items():
            if key not in known:
                raise DrrError(f"--{option} {p}: not a {what} named by {where}")

    def _path(self, p) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def _key(self, p) -> Path:
        return self._path(p).resolve()

    def read(self, named: str) -> dict:
        """The JSON object of the file the spec names `named`, or Missing."""
        p = self.given.get(self._key(named))
        if p is None:
            raise Missing(f"{named} was not given (--{self.option})")
        path = self._path(p)
        if not path.is_file():
            raise Missing(f"{named} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DrrError(f"{p}: not a {self.what} (not JSON: {e})") from None
        if not isinstance(data, dict):
            raise DrrError(f"{p}: not a {self.what} (expected a JSON object)")
        return data


@dataclass
class Sources:
    """Everything the report reads: the runs' metrics and speed files, and the FLOPs counts,
    transformer reports and selection records the spec names."""
    inputs: Inputs
    flops: Files
    models: Files
    selections: Files


# --- evaluating a claim ----------------------------------------------------------------------------

def _fmt(v) -> str:
    return f"{v:.4g}"


def _sign(better: str, direction: str = "improves") -> int:
    """+1 when the paper's direction is the metric growing."""
    return (1 if better == "higher" else -1) * (1 if direction == "improves" else -1)


def _side_text(side: dict, metric) -> str:
    return f"{side['experiment']}/{side['variant']}" + ("" if metric == "s_per_sample" else f" ({side['phase']})")


def _run(side: dict) -> tuple[str, str]:
    return side["experiment"], side["variant"]


@dataclass
class Result:
    """A claim's effects (the required ones make its verdict), those reported beside it, and, for a
    claim timed on a device the run did not have, why it is n/a and the FLOPs per sample."""
    name: str
    claim: dict
    effects: list[Effect]
    beside: list[Effect] = field(default_factory=list)
    device_na: str | None = None
    flops: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str | None:
        if self.device_na is not None:
            return None
        return combine([e.verdict for e in self.effects if e.required])

    @property
    def counted(self) -> bool:
        return self.verdict is not None and "apart" not in self.claim


def pair_effect(inputs: Inputs, comp: dict, a: dict, b: dict, label: str) -> Effect:
    """The oriented effect of a against b (n/a with the reason when a result is missing)."""
    metric = comp["metric"]
    try:
        ea = metric_estimate(inputs, _run(a), a["phase"], metric)
        eb = metric_estimate(inputs, _run(b), b["phase"], metric)
    except Missing as e:
        return Effect(label, na=str(e))
    d, reps, how = difference(ea, eb)
    return oriented(label, d, reps, _sign(comp["better"]), how, f"{_fmt(ea.value)} vs {_fmt(eb.value)}")


def comparison_effect(inputs: Inputs, comp: dict) -> Effect:
    metric = comp["metric"]
    head = f"{comp['prefix']}{COLUMNS[metric].label} ({comp['better']} is better)"
    if "na" in comp:  # a run the suite lacks (the plan said why)
        return Effect(head, na=comp["na"], required=comp.get("required", True))
    label = f"{head}: {_side_text(comp['a'], metric)} vs {_side_text(comp['b'], metric)}"
    if comp.get("seeds"):
        seeds = [pair_effect(inputs, comp, p["a"], p["b"], f"{head}: {_side_text(p['a'], metric)} vs "
                                                            f"{_side_text(p['b'], metric)}")
                 for p in comp["seeds"]]
        each = f", each of the {len(seeds)} training seeds against the same seed" if len(seeds) > 1 else ""
        effect = over_seeds(label + each, seeds)
    else:
        effect = pair_effect(inputs, comp, comp["a"], comp["b"], label)
    effect.required = comp.get("required", True)
    effect.paper_effect = comp.get("paper_effect")
    return effect


def flops_lines(src: Sources, spec_runs: dict, comps: list[dict]) -> list[str]:
    """The FLOPs per sample of the runs of s/sample comparisons (drr.sampling.flops)."""
    lines, values = [], {}
    for comp in comps:
        for s in ("a", "b"):
            run = _run(comp[s])
            if run in values:
                continue
            name = spec_runs.get(run, {}).get("flops")
            try:
                if name is None:
                    raise Missing(f"the spec names no FLOPs count of {run[0]}/{run[1]}")
                rec = src.flops.read(name)
                total = rec.get("flops_per_sample")
                if not isinstance(total, (int, float)):
                    raise DrrError(f"{name}: field 'flops_per_sample' is {total!r}, not a number")
            except Missing as e:
                values[run] = None
                lines.append(f"{run[0]}/{run[1]}: n/a, because {e}")
                continue
            values[run] = float(total)
            phases = rec.get("flops_per_sample_by_phase") or {}
            split = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in phases.items())
            lines.append(f"{run[0]}/{run[1]}: {total / 1e9:.3g} GFLOPs per sample" + (f" ({split})" if split else ""))
    for comp in comps:
        a, b = values.get(_run(comp["a"])), values.get(_run(comp["b"]))
        if a and b:
            lines.append(f"{_side_text(comp['a'], 's_per_sample')} does {a / b:.3g} times the work of "
                         f"{_side_text(comp['b'], 's_per_sample')} per sample")
    return lines


def evaluate(src: Sources | Inputs, entry: dict, claims_file: str = "claims",
             spec_runs: dict | None = None) -> Result:
    """The result of one claim of the spec (comparisons that cannot be computed carry their n/a
    reason)."""
    if isinstance(src, Inputs):  # metrics and speed only
        src = Sources(src, *(Files(o, o, [], []) for o in ("flops", "models", "selections")))
    inputs = src.inputs
    name, claim = entry["name"], entry["claim"]
    where = f"{claims_file}: claims.{name}"
    if "na" in entry:  # the plan could name no run (the suite lacks the experiment)
        return Result(name, claim, [Effect(f"{claim['report']}", na=entry["na"])])
    if claim["kind"] == "pairs":
        result = Result(name, claim, [comparison_effect(inputs, c) for c in entry["comparisons"]],
                        [comparison_effect(inputs, c) for c in entry.get("beside", [])])
        if claim.get("timed_on") == "gpu":
            timed = [c for c in entry["comparisons"] if c["metric"] == "s_per_sample"]
            devices = []
            for comp in timed:
                for s in ("a", "b"):
                    try:
                        rec, _ = _speed_record(inputs, _run(comp[s]))
                        devices.append((on_gpu(rec), str(rec.get("device"))))
                    except Missing:
                        pass
            off = [d for gpu, d in devices if not gpu]
            if off:
                result.device_na = (f"timed on {off[0]}, not a GPU: the paper's ordering is GPU latency at "
                                    "batch 100, and on a CPU the cost is the FLOPs of each sample")
                for e in result.effects:
                    e.withheld = "not timed on a GPU"
            result.flops = flops_lines(src, spec_runs or {}, timed)
        return result
    cells = entry["cells"]  # the report's cells varying the parameter, by its value
    param = claim["parameter"]
    if len(cells) < 2:
        raise DrrError(f"{where}: report {claim['report']} has {len(cells)} cells varying "
                       f"{param}; a trend needs 2 or more")
    xs = [c["x"] for c in cells]
    shown = ", ".join(f"{param}={x}" for x in xs)
    scale = claim.get("x", "log2")
    if scale == "log2" and any(x <= 0 for x in xs):
        raise DrrError(f"{where}.x: log2 needs positive values of {param} (have {shown}); set x: linear")
    x = np.log2(xs) if scale == "log2" else np.asarray(xs, np.float64)
    metric, phase = claim["metric"], claim.get("phase", "revised")
    label = f"{COLUMNS[metric].label} ({phase}) vs {'log2 ' if scale == 'log2' else ''}{param}"
    try:
        points = [metric_estimate(inputs, _run(dict(c, phase=phase)), phase, metric) for c in cells]
    except Missing as e:
        return Result(name, claim, [Effect(label, na=str(e))])
    effects = trend_effects(x, points, _sign(claim["better"], claim["direction"]), label)
    effects[0].shown = ", ".join(f"{xv}: {_fmt(p.value)}" for xv, p in zip(xs, points))
    effects[1].label = f"{COLUMNS[metric].label} ({phase}) at {param}={xs[-1]} minus at {param}={xs[0]}"
    effects[1].shown = f"{_fmt(points[-1].value)} vs {_fmt(points[0].value)}"
    effects[1].paper_effect = claim.get("paper_effect")
    return Result(name, claim, effects)


# --- the evidence ----------------------------------------------------------------------------------

def model_line(experiment: str, rep: dict) -> str:
    """A model's training in one line: held-out NLL at the end and its drop over the last quarter
    of training (from the evaluation nearest 3/4 of the steps to the last; the transformer report's
    curve), and the chain-rule NLL."""
    parts = []
    steps = rep.get("trained_steps")
    curve = [(s, v) for s, v in rep.get("heldout_curve") or [] if isinstance(s, (int, float))]
    if curve and isinstance(steps, int):
        end_step, end = curve[-1]
        quarter = min(curve, key=lambda p: abs(p[0] - 0.75 * steps))  # the evaluation nearest 3/4 of training
        text = f"held-out NLL {end:.4f} nats per code at step {end_step} of {steps}"
        if quarter[0] < end_step:
            text += (f", {quarter[1] - end:+.4f} over the last quarter (step {quarter[0]} to {end_step}; "
                     "positive: still falling)")
        parts.append(text)
    else:
        parts.append("no held-out NLL curve (transformer.train.eval_every unset)")
    chain = rep.get("chain_rule_nll")
    if chain and chain.get("nats_per_map") is not None:
        se = f" ± {chain['se_over_maps']:.1f}" if chain.get("se_over_maps") is not None else ""
        spread = chain.get("order_spread")
        how = ("raster order" if chain.get("order") == "raster" else
               f"mean of {chain.get('orders')} random orders"
               + (f", spread {spread:.1f}" if isinstance(spread, (int, float)) else ""))
        parts.append(f"chain-rule NLL {chain['nats_per_map']:.1f}{se} nats per map ({how}, {chain.get('maps')} maps)")
    else:
        parts.append("no chain-rule NLL (transformer.report.chain_rule_maps is 0)")
    return f"`{experiment}`: " + "; ".join(parts)


def models_text(src: Sources, spec: dict) -> list[str]:
    lines = []
    for experiment, named in spec.get("models", {}).items():
        try:
            lines.append(model_line(experiment, src.models.read(named)))
        except Missing as e:
            lines.append(f"`{experiment}`: n/a, because {e}")
    return lines


def _metrics_of(result: Result) -> list[tuple[str, str]]:
    """(metric, phase) pairs a claim compares (not s/sample)."""
    entry_metrics = []
    claim = result.claim
    if claim["kind"] == "trend":
        entry_metrics.append((claim["metric"], claim.get("phase", "revised")))
    for c in claim.get("comparisons", []):
        m = c.get("metric", claim.get("metric"))
        entry_metrics.append((m, c["a"].get("phase", claim.get("phase", "revised"))))
    return [m for m in dict.fromkeys(entry_metrics) if m[0] != "s_per_sample"]


def spread_lines(src: Sources, spec: dict, result: Result) -> list[str]:
    """The same metric at the default settings for every training seed (protocol v6 §7)."""
    runs = [tuple(r) for r in spec.get("spread", [])]
    if len(runs) < 2:
        return []
    lines = []
    for metric, _ in _metrics_of(result):
        try:
            values = [metric_estimate(src.inputs, r, "revised", metric).value for r in runs]
        except Missing as e:
            lines.append(f"{COLUMNS[metric].label} at the default settings: n/a, because {e}")
            continue
        each = ", ".join(f"{r[0]}/{r[1]} {_fmt(v)}" for r, v in zip(runs, values))
        lines.append(f"{COLUMNS[metric].label} (revised) at the default settings, one per training seed: {each}; "
                     f"spread {_fmt(max(values) - min(values))}")
    return lines


def resolution_lines(result: Result) -> list[str]:
    lines = []
    for e in result.effects:
        if e.na is not None:
            continue
        widths = [s.half_width for s in e.seeds if s.na is None] or [e.half_width]
        ours = f"half-width {_fmt(max(widths))}"
        paper = (f"the paper's effect {_fmt(e.paper_effect)}" if e.paper_effect is not None
                 else "the paper gives no number for it")
        lines.append(f"{e.label}: {ours}, {paper}")
    return lines


def evidence_text(src: Sources, spec: dict, result: Result, models: list[str]) -> list[str]:
    """What bears on the cause of a claim not reproduced (protocol v6 §11)."""
    out = ["Evidence (the claim is not reproduced):", ""]
    out += [f"- Training: {line}" for line in models] or ["- Training: no transformer report"]
    spread = spread_lines(src, spec, result)
    out += [f"- Seeds: {line}" for line in spread] or (["- Seeds: one training seed"] if not spec.get("spread") else [])
    out += [f"- Resolution: {line}" for line in resolution_lines(result)]
    return out + [""]


def selections_text(src: Sources, spec: dict) -> list[str]:
    """The workflow's choices (drr.workflow.select records): every value's score and the choice."""
    if not spec.get("selections"):
        return []
    lines = ["## Settings chosen before the runs", "",
             "Chosen on their own runs by a rule fixed in advance (docs/small-suite.md, protocol v6 §3, §5), "
             "for seed 0 and used for every seed:", "",
             "| experiment | setting | rule | each value's result | chosen |", "|---|---|---|---|---|"]
    for sel in spec["selections"]:
        try:
            rec = src.selections.read(sel["record"])
            scores = ", ".join(f"{c['value_of_key']}: {_fmt(c['value'])}" for c in rec["candidates"])
            chosen = f"**{rec['chosen']}**" + (" (at the edge of the values)" if rec.get("at_edge") else "")
            lines.append(f"| `{sel['experiment']}` | `{rec['key']}` | {_cell(rec['rule'])} | {scores} | {chosen} |")
        except Missing as e:
            lines.append(f"| `{sel['experiment']}` | {sel['name']} | | n/a, because {_cell(str(e))} | n/a |")
        except (KeyError, TypeError) as e:
            raise DrrError(f"{sel['record']}: not a selection record of drr.workflow.select "
                           f"(field {e})") from None
    return lines + [""]


# --- the report ------------------------------------------------------------------------------------

def _effect_text(e: Effect) -> str:
    if e.na is not None:
        return f"n/a, because {e.na}"
    return f"{e.value:+.4g} [{e.lo:+.4g}, {e.hi:+.4g}]" + (f", {e.how}" if e.how else "")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rows(effects: list[Effect]) -> list[str]:
    lines = ["| comparison | values | effect (95% interval) | verdict |", "|---|---|---|---|"]
    for e in effects:
        for s in e.seeds:
            lines.append(f"| {_cell('one seed: ' + s.label)} | {_cell(s.shown)} | {_cell(_effect_text(s))} | "
                         f"{s.verdict or 'n/a'} |")
        v = f"no verdict ({e.withheld})" if e.withheld else e.verdict or "n/a"
        lines.append(f"| {_cell(e.label)} | {_cell(e.shown)} | {_cell(_effect_text(e))} | "
                     f"{v if e.required else f'{v} (reported, not required)'} |")
    return lines


def render(spec: dict, results: list[Result], src: Sources | None = None) -> str:
    """The Markdown report of the claims' results."""
    links = spec.get("links") or {}
    counted = [r for r in results if r.counted]
    counts = {v: sum(1 for r in counted if r.verdict == v) for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}
    apart = [r for r in results if "apart" in r.claim and r.verdict is not None]
    device = [r for r in results if r.device_na is not None]
    missing = [r for r in results if r.verdict is None and r.device_na is None]
    lines = [f"# The paper's claims on suite `{spec['suite']}`", "",
             f"Computed by `drr.reports.claims` from {spec['claims_file']}; the rules are fixed in "
             "docs/small-suite.md (protocol v6). Every effect is oriented so that a positive value is the "
             f"paper's direction, with its {LEVEL:.0%} half-sampling interval: reproduced when the interval is above 0, "
             "not reproduced when below, inconclusive when it contains 0; a claim of several "
             "comparisons is reproduced only when every required one is (intersection-union); a claim made per "
             "training seed needs every seed.", "",
             f"**Summary: {len(counted)} claims with a verdict: {counts[REPRODUCED]} reproduced, "
             f"{counts[NOT_REPRODUCED]} not reproduced, {counts[INCONCLUSIVE]} inconclusive.**", ""]
    uncounted = ([f"`{r.name}` (reported apart: {r.verdict})" for r in apart]
                 + [f"`{r.name}` (n/a on this run's device)" for r in device]
                 + [f"`{r.name}` (n/a: a result is missing)" for r in missing])
    if uncounted:
        lines += ["Not counted: " + ", ".join(uncounted) + ".", ""]
    models = models_text(src, spec) if src is not None else []
    if src is not None:
        lines += selections_text(src, spec)
    if models:
        lines += ["## Models", "",
                  "Held-out NLL in nats per code is each model's own training objective (eq. 11 for the contextual "
                  "model, next-code NLL for the AR model: not comparable); the chain-rule NLL in nats per map is "
                  "the likelihood both kinds share (protocol v6 §10).", ""]
        lines += [f"- {line}" for line in models] + [""]
    for r in results:
        claim = r.claim
        quote = str(claim["paper"]).strip()
        quote = quote if quote.startswith('"') else f'"{quote}"'
        lines += [f"## {r.name}", "", f"> {_cell(quote)} ({claim['source']})", "",
                  f"Setting: {claim['setting']}  ", f"Paper: {claim['paper_setting']}", ""]
        if "apart" in claim:
            lines += [f"Reported apart, not counted: {claim['apart']}.", ""]
        if claim["report"] in links:
            lines += [f"Shown in: [{links[claim['report']]}]({links[claim['report']]})", ""]
        lines += _rows(r.effects) + [""]
        if r.device_na is not None:
            lines += [f"**Verdict: n/a (not counted), because {r.device_na}**", ""]
        else:
            tail = " (reported apart, not counted)" if "apart" in claim and r.verdict is not None else ""
            lines += [f"**Verdict: {r.verdict or 'n/a (no verdict: a result is missing)'}{tail}**", ""]
        if r.flops:
            lines += ["FLOPs per sample (drr.sampling.flops: spatial and depth transformers, decoding left out):", ""]
            lines += [f"- {line}" for line in r.flops] + [""]
        if r.beside:
            lines += ["Reported beside the verdict, not counted:", ""] + _rows(r.beside) + [""]
        if claim.get("note"):
            lines += [f"Note: {claim['note']}", ""]
        if r.verdict == NOT_REPRODUCED and src is not None:
            lines += evidence_text(src, spec, r, models)
    return "\n".join(lines)


def build(spec: dict, metrics: list, speed: list, root=".", where: str = "the claims spec",
          flops=(), models=(), selections=()) -> str:
    """The claims report of a spec (drr.workflow.report_spec.claims_spec) from the given files."""
    inputs = Inputs(spec, metrics, speed, root, where)
    named_flops = [r["flops"] for r in spec["runs"] if r.get("flops")]
    src = Sources(inputs,
                  Files("flops", "FLOPs count (drr.sampling.flops)", flops, named_flops, root, where),
                  Files("models", "transformer report", models, list((spec.get("models") or {}).values()),
                        root, where),
                  Files("selections", "selection record", selections,
                        [s["record"] for s in spec.get("selections") or []], root, where))
    spec_runs = {(r["experiment"], r["variant"]): r for r in spec["runs"]}
    results = [evaluate(src, e, spec["claims_file"], spec_runs) for e in spec["claims"]]
    return render(spec, results, src)


def main(argv=None) -> None:
    from drr.core.files import write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, type=Path,
                   help="the claims' spec (results/reports/claims.spec.json, drr.workflow.report_spec)")
    p.add_argument("--metrics", nargs="*", default=[], help="the metrics files of the spec's runs")
    p.add_argument("--speed", nargs="*", default=[], help="the speed files of the spec's runs")
    p.add_argument("--flops", nargs="*", default=[], help="the FLOPs counts of the spec's runs")
    p.add_argument("--models", nargs="*", default=[], help="the transformer reports (report.json) the spec names")
    p.add_argument("--selections", nargs="*", default=[], help="the selection records the spec names")
    p.add_argument("--root", default=".", help="folder the relative input paths are in")
    p.add_argument("--out", required=True, type=Path, help="Markdown report")
    args = p.parse_args(argv)
    with user_errors():
        spec = read_spec(args.spec, ("claims",))
        md = build(spec, args.metrics, args.speed, args.root, where=str(args.spec), flops=args.flops,
                   models=args.models, selections=args.selections)
        write_text(args.out, md)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
