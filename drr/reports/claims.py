"""Verdicts on the paper's claims (configs/claims.yaml) from the suite's metrics rows and speed files.

    python -m drr.reports.claims --spec results/reports/claims.spec.json \
        --metrics results/metrics/small/base.parquet ... --speed results/speed/small/base.json ... \
        --out reports/claims.md

The spec (drr.workflow.report_spec.claims_spec, written by the plan) holds each claim of
configs/claims.yaml with the runs it compares, resolved from configs/studies.yaml; the rule
`claims` (workflow/rules/claims.smk) passes the metrics and speed files of those runs. A metrics
row is found by its own experiment, variant and phase columns; a speed file is the run's whose
file the spec names so. A run a claim needs whose file is not given or not there reads
"n/a, because ..." and gives no verdict.

Verdicts (docs/small-suite.md, Protocol; nothing here is typed by hand):

- Each comparison is an *effect* oriented so that a positive value is the paper's direction, with a
  95% basic bootstrap interval (drr.metrics.intervals.basic_interval). *reproduced*: the interval is
  above 0; *not reproduced*: below 0; *inconclusive*: it contains 0.
- The difference of two metrics rows uses their stored bootstrap replicates: rows with the same
  ``boot_key`` were resampled at the same sample indices, so replicate b of one minus replicate b
  of the other is the paired bootstrap of the difference. Rows with different keys were resampled
  independently; replicate b of each is then an independent draw and their difference is the
  two-sample bootstrap (the report says "unpaired" on that line).
- s/sample: the speed file's per-batch times (``batch_seconds``, every phase summed, over
  ``batch_size``); replicates resample the timed batches of each run independently
  (drr.metrics.intervals.speed_interval, the same replicates the tables' intervals come from).
- A claim of several comparisons (``for_each: cells``, a list of comparisons, a trend's slope and
  end-point difference) follows the intersection-union rule: reproduced when every comparison is,
  not reproduced when any one is, inconclusive otherwise; n/a when any is n/a.
- Trend: least-squares slope of the metric against log2 of the parameter (``x: linear``: the
  parameter itself), slope replicates from the cells' replicates, and the end-point difference
  (largest minus smallest parameter value).
- Linear time: the slope of s/sample against the parameter must be positive, and the largest
  |residual| of the least-squares line, relative to the fitted range (fit at the largest minus fit
  at the smallest value), below MAX_RELATIVE_RESIDUAL: the effect is 0.15 minus that residual.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drr.core.columns import COLUMNS
from drr.core.errors import DrrError, user_errors
from drr.metrics.intervals import LEVEL, SPEED_REPLICATES, basic_interval, batch_replicates, speed_interval
from drr.metrics.intervals import per_batch_seconds as per_batch_seconds_of
from drr.metrics.intervals import speed_seed as _speed_seed
from drr.reports.results import Absent, Inputs, read_spec

MAX_RELATIVE_RESIDUAL = 0.15     # the protocol's bound on the linear fit's largest residual

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

    @property
    def verdict(self) -> str | None:
        return None if self.na is not None else verdict(self.lo, self.hi)


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


def slopes(x, y) -> np.ndarray:
    """Least-squares slope of each row of y (..., k) against x (k,)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean()
    y = np.asarray(y, np.float64)
    return (y - y.mean(-1, keepdims=True)) @ xc / float(xc @ xc)


def max_relative_residual(x, y) -> np.ndarray:
    """Largest |residual| of the least-squares line of each row of y against x, over the fitted
    range |fit(max x) − fit(min x)| (inf when the fit is flat)."""
    x = np.asarray(x, np.float64)
    y = np.atleast_2d(np.asarray(y, np.float64))
    b = slopes(x, y)
    a = y.mean(-1) - b * x.mean()
    fit = a[:, None] + b[:, None] * x[None, :]
    span = np.abs(b * (x.max() - x.min()))
    res = np.abs(y - fit).max(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, res / span, np.inf)


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


def linear_time_effects(x, per_batch: list, seeds: list, label: str = "s/sample",
                        b: int = SPEED_REPLICATES) -> list[Effect]:
    """[slope > 0, MAX_RELATIVE_RESIDUAL − largest relative residual > 0] of s/sample against x,
    from each run's per-batch s/sample (runs resampled independently)."""
    x = np.asarray(x, np.float64)
    y = np.array([np.mean(t) for t in per_batch])
    reps = np.stack([batch_replicates(t, b, s) for t, s in zip(per_batch, seeds)], axis=1)
    how = "bootstrap over timed batches"
    slope = oriented(f"slope of {label}", float(slopes(x, y)), slopes(x, reps), +1, how)
    r_hat = float(max_relative_residual(x, y)[0])
    r_reps = max_relative_residual(x, reps)
    resid = oriented(f"{MAX_RELATIVE_RESIDUAL} − largest relative residual", MAX_RELATIVE_RESIDUAL - r_hat,
                     MAX_RELATIVE_RESIDUAL - r_reps, +1, how, f"largest relative residual {r_hat:.3g}")
    if not math.isfinite(r_hat):
        resid = Effect(resid.label, na="the fitted line is flat (no range to compare residuals with)")
    return [slope, resid]


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


def _speed(inputs: Inputs, run) -> tuple[np.ndarray, Path]:
    try:
        rec, path = inputs.speed(tuple(run))
    except Absent as e:
        raise Missing(e.reason()) from None
    return per_batch_seconds(rec, path), Path(path)


def speed_estimate(inputs: Inputs, run) -> Estimate:
    t, path = _speed(inputs, run)
    return Estimate(float(t.mean()), speed_interval(t, path)[2], None)


# --- evaluating a claim ----------------------------------------------------------------------------

def _fmt(v) -> str:
    return f"{v:.4g}"


def _sign(better: str, direction: str = "improves") -> int:
    """+1 when the paper's direction is the metric growing."""
    return (1 if better == "higher" else -1) * (1 if direction == "improves" else -1)


def _side_text(run, phase, metric) -> str:
    return f"{run[0]}/{run[1]}" + ("" if metric == "s_per_sample" else f" ({phase})")


def _run(side: dict) -> tuple[str, str]:
    return side["experiment"], side["variant"]


def evaluate(inputs: Inputs, entry: dict, claims_file: str = "claims") -> list[Effect]:
    """The oriented effects of one claim of the spec (those that cannot be computed carry their
    n/a reason)."""
    name, claim = entry["name"], entry["claim"]
    where = f"{claims_file}: claims.{name}"
    kind = claim["kind"]
    if "na" in entry:  # the plan could name no run (the suite lacks the experiment)
        return [Effect(f"{claim['report']}", na=entry["na"])]
    try:
        if kind == "pairs":
            effects = []
            for comp in entry["comparisons"]:
                a, b, metric, better = comp["a"], comp["b"], comp["metric"], comp["better"]
                ra, rb = _run(a), _run(b)
                label = (f"{comp['prefix']}{COLUMNS[metric].label} ({better} is better): "
                         f"{_side_text(ra, a['phase'], metric)} vs {_side_text(rb, b['phase'], metric)}")
                try:
                    ea = metric_estimate(inputs, ra, a["phase"], metric)
                    eb = metric_estimate(inputs, rb, b["phase"], metric)
                except Missing as e:
                    effects.append(Effect(label, na=str(e)))
                    continue
                d, reps, how = difference(ea, eb)
                effects.append(oriented(label, d, reps, _sign(better), how,
                                        f"{_fmt(ea.value)} vs {_fmt(eb.value)}"))
            return effects
        cells = entry["cells"]  # the report's cells varying the parameter, by its value
        param = claim["parameter"]
        least = 3 if kind == "linear_time" else 2
        if len(cells) < least:
            raise DrrError(f"{where}: report {claim['report']} has {len(cells)} cells varying "
                           f"{param}; a {kind} needs {least} or more")
        xs = [c["x"] for c in cells]
        shown = ", ".join(f"{param}={x}" for x in xs)
        if kind == "linear_time":
            try:
                data = [_speed(inputs, _run(c)) for c in cells]
            except Missing as e:
                return [Effect(f"s/sample against {param}", na=str(e))]
            effects = linear_time_effects(xs, [t for t, _ in data], [_speed_seed(p) for _, p in data],
                                          f"s/sample against {param}")
            effects[0].shown = ", ".join(f"{x}: {_fmt(t.mean())}" for x, (t, _) in zip(xs, data))
            return effects
        scale = claim.get("x", "log2")
        if scale == "log2" and any(x <= 0 for x in xs):
            raise DrrError(f"{where}.x: log2 needs positive values of {param} (have {shown}); "
                           "set x: linear")
        x = np.log2(xs) if scale == "log2" else np.asarray(xs, np.float64)
        metric, phase = claim["metric"], claim.get("phase", "revised")
        label = f"{COLUMNS[metric].label} ({phase}) vs {'log2 ' if scale == 'log2' else ''}{param}"
        try:
            points = [metric_estimate(inputs, _run(c), phase, metric) for c in cells]
        except Missing as e:
            return [Effect(label, na=str(e))]
        effects = trend_effects(x, points, _sign(claim["better"], claim["direction"]), label)
        effects[0].shown = ", ".join(f"{xv}: {_fmt(p.value)}" for xv, p in zip(xs, points))
        effects[1].label = f"{COLUMNS[metric].label} ({phase}) at {param}={xs[-1]} minus at {param}={xs[0]}"
        effects[1].shown = f"{_fmt(points[-1].value)} vs {_fmt(points[0].value)}"
        return effects
    except Missing as e:
        return [Effect(f"{claim['report']}", na=str(e))]


# --- the report ------------------------------------------------------------------------------------

def _effect_text(e: Effect) -> str:
    if e.na is not None:
        return f"n/a, because {e.na}"
    return f"{e.value:+.4g} [{e.lo:+.4g}, {e.hi:+.4g}]" + (f", {e.how}" if e.how else "")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(suite: str, claims_path, results: list[tuple[str, dict, list[Effect]]],
           links: dict[str, str] | None = None) -> str:
    """The Markdown report; `links` (report -> file beside the report) adds a 'Shown in' line."""
    links = links or {}
    verdicts = [combine([e.verdict for e in effects]) for _, _, effects in results]
    counts = {v: sum(1 for x in verdicts if x == v) for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)}
    na = sum(1 for v in verdicts if v is None)
    lines = [f"# The paper's claims on suite `{suite}`", "",
             f"Computed by `drr.reports.claims` from {claims_path}; the rules are fixed in docs/small-suite.md "
             "(Protocol). Every effect is oriented so that a positive value is the paper's direction, "
             f"with its {LEVEL:.0%} basic bootstrap interval: reproduced when the interval is above 0, "
             "not reproduced when below, inconclusive when it contains 0; a claim of several "
             "comparisons is reproduced only when every one is (intersection-union).", "",
             f"**Summary: {len(results)} claims: {counts[REPRODUCED]} reproduced, "
             f"{counts[NOT_REPRODUCED]} not reproduced, {counts[INCONCLUSIVE]} inconclusive, {na} n/a.**", ""]
    for (name, claim, effects), v in zip(results, verdicts):
        quote = str(claim["paper"]).strip()
        quote = quote if quote.startswith('"') else f'"{quote}"'
        lines += [f"## {name}", "", f"> {_cell(quote)} ({claim['source']})", ""]
        if claim["report"] in links:
            lines += [f"Shown in: [{links[claim['report']]}]({links[claim['report']]})", ""]
        lines += ["| comparison | values | effect (95% interval) | verdict |", "|---|---|---|---|"]
        for e in effects:
            lines.append(f"| {_cell(e.label)} | {_cell(e.shown)} | {_cell(_effect_text(e))} | "
                         f"{e.verdict or 'n/a'} |")
        lines += ["", f"**Verdict: {v or 'n/a (no verdict: a result is missing)'}**", ""]
        if claim.get("note"):
            lines += [f"Note: {claim['note']}", ""]
    return "\n".join(lines)


def build(spec: dict, metrics: list, speed: list, root=".", where: str = "the claims spec") -> str:
    """The claims report of a spec (drr.workflow.report_spec.claims_spec) from the runs' files."""
    inputs = Inputs(spec, metrics, speed, root, where)
    results = [(e["name"], e["claim"], evaluate(inputs, e, spec["claims_file"])) for e in spec["claims"]]
    return render(spec["suite"], spec["claims_file"], results, spec["links"])


def main(argv=None) -> None:
    from drr.core.files import write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, type=Path,
                   help="the claims' spec (results/reports/claims.spec.json, drr.workflow.report_spec)")
    p.add_argument("--metrics", nargs="*", default=[], help="the metrics files of the spec's runs")
    p.add_argument("--speed", nargs="*", default=[], help="the speed files of the spec's runs")
    p.add_argument("--root", default=".", help="folder the relative --metrics / --speed paths are in")
    p.add_argument("--out", required=True, type=Path, help="Markdown report")
    args = p.parse_args(argv)
    with user_errors():
        spec = read_spec(args.spec, ("claims",))
        md = build(spec, args.metrics, args.speed, args.root, where=str(args.spec))
        write_text(args.out, md)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
