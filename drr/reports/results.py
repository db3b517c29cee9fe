"""What the reports read: the suite, its cells' metrics rows and speed files, the published numbers.

A report reads only the files its rule declared (`--metrics FILE...`, `--speed FILE...`: the
Plan's `report_inputs`), each mapped to its run by the workflow's naming (drr.workflow.plan.Plan.metrics_file,
speed_file): ``results/metrics/<experiment>/<variant>.parquet`` (drr.metrics.score rows, one per
phase) and ``results/speed/<experiment>/<variant>.json`` (drr.sampling.speed). Asking for a run of
the suite that is not among them is an error naming the run; a run of an experiment outside the
suite is shown as "—".

Our numbers are printed as ``value [lo, hi]``, the row's 95% interval (``<metric>_lo``/``_hi``,
drr.metrics.intervals: a basic bootstrap, whose ends need not be symmetric about the value, so
they are printed as end points rather than ±); rows written before intervals existed print the
value alone. s/sample gets the 95% basic bootstrap interval of the mean over the speed file's
timed batches (``batch_seconds``; drr.metrics.intervals.speed_interval, as drr.reports.claims) when it has
at least two, else none, and the report says which.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from drr.core.columns import COLUMNS
from drr.core.errors import DrrError
from drr.workflow.plan import Plan
from drr.workflow.studies import PUBLISHED_FILE, Studies, load_suite, read_yaml

DASH = "—"
INTERVALS_NOTE = ("Ours: value [lo, hi], lo and hi the row's 95% interval (basic bootstrap over the "
                  "generated samples, reference fixed: drr.metrics.intervals; its ends need not be "
                  "symmetric about the value, so no ± is shown).")
SPEED_INTERVAL_NOTE = ("s/sample [lo, hi]: 95% basic bootstrap interval of the mean over the timed "
                       "batches of one measurement (batch-to-batch spread only, not run-to-run or device variation).")


class Results:
    """One suite's view of the results folder."""

    def __init__(self, suite: str, root=".", studies: Studies | None = None, metrics=(), speed=(),
                 scale: str | None = None):
        self.root = Path(root)
        self.suite_name = suite
        self.suite = load_suite(suite, self.root)
        self.studies = studies or Studies(self.root, scale=scale)
        self.published = read_yaml(self.root / PUBLISHED_FILE)
        self.notes: list[str] = []           # footnotes of the report being built
        self.shown: set[str] = set()         # kinds of interval shown: "bootstrap", "speed"
        self.no_interval: dict[str, list] = {}  # why -> runs whose s/sample has no interval
        self.metrics_files = self._runs(metrics, Plan.metrics_file, "--metrics")
        self.speed_files = self._runs(speed, Plan.speed_file, "--speed")

    # -- files ----------------------------------------------------------------------------------

    def _runs(self, paths, naming, flag) -> dict[tuple[str, str], Path]:
        """(experiment, variant) -> file, for the declared input files (relative paths are
        relative to `root`); a path not named like the workflow's is refused."""
        out = {}
        for p in paths:
            p = Path(p)
            run = (p.parent.name, p.stem)
            if not p.as_posix().endswith(naming(*run)) or p.suffix != Path(naming(*run)).suffix:
                raise DrrError(f"{flag} {p}: not a {naming('<experiment>', '<variant>')} path")
            out[run] = p if p.is_absolute() else self.root / p
        return out

    def _declared(self, files: dict, experiment: str, variant: str, what: str, flag: str) -> Path:
        path = files.get((experiment, variant))
        if path is None:
            raise DrrError(f"run {experiment}/{variant}: its {what} file is not among the report's "
                           f"{flag} inputs ({len(files)} given)")
        if not path.is_file():
            target = (Plan.metrics_file if what == "metrics" else Plan.speed_file)(experiment, variant)
            raise DrrError(f"{path}: {what} file not found (build it with snakemake {target})")
        return path

    def has_row(self, experiment: str, variant: str) -> bool:
        path = self.metrics_files.get((experiment, variant))
        return path is not None and path.is_file()

    def row(self, experiment: str, variant: str, phase: str = "revised") -> dict | None:
        """The metrics row of a phase; None when the experiment is not in the suite. A run of the
        suite that is not among the declared inputs, or whose file is missing, is an error naming it."""
        if experiment not in self.suite["experiments"]:
            return None
        path = self._declared(self.metrics_files, experiment, variant, "metrics", "--metrics")
        from drr.metrics.score import read_rows

        rows = [r for r in read_rows(path) if r["phase"] == phase]
        if not rows:
            raise DrrError(f"{path}: field 'phase' has no '{phase}' row")
        return rows[0]

    def speed(self, experiment: str, variant: str) -> dict | None:
        """The speed record, with `s_per_sample_lo`/`_hi` from its per-batch times (or
        `s_per_sample_note` saying why there is no interval)."""
        if experiment not in self.suite["experiments"]:
            return None
        path = self._declared(self.speed_files, experiment, variant, "speed", "--speed")
        rec = json.loads(path.read_text())
        rec.update(speed_interval(rec, path))
        return rec

    def with_speed(self, row: dict | None, sp: dict | None) -> dict | None:
        """A metrics row with the s/sample of a speed record (and its interval) merged in."""
        if row is None or sp is None:
            return row
        keys = ("s_per_sample", "s_per_sample_lo", "s_per_sample_hi")
        return dict(row, **{k: sp.get(k) for k in keys}, speed_device=sp.get("device"))

    # -- published ------------------------------------------------------------------------------

    def table(self, name: str) -> dict:
        if name not in self.published:
            raise DrrError(f"{self.root / PUBLISHED_FILE}: no section '{name}'")
        return self.published[name]

    def is_paper_experiment(self, experiment: str, published_experiment: str | None) -> bool:
        """Whether our experiment is the one the published numbers were measured on."""
        return published_experiment is not None and experiment == published_experiment

    def small_scale(self, experiments) -> list[str]:
        """Experiments of the list that reproduce no published row (e.g. the embedded default)."""
        linked = set()
        for section in self.published.values():
            if isinstance(section, dict):
                linked.update(r.get("experiment") for r in section.get("rows", []))
                if isinstance(section.get("experiment"), str):
                    linked.add(section["experiment"])
        return [e for e in experiments if e not in linked]

    # -- formatting -----------------------------------------------------------------------------

    def note(self, text: str) -> str:
        """A footnote marker for `text` (numbered once per distinct text)."""
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"

    def ours(self, metric: str, row: dict | None) -> tuple[str, float | None]:
        """(cell text, value) of one of our metrics from a metrics row or a speed dict."""
        if row is None:
            return DASH, None
        col = COLUMNS[metric]
        field, spec = col.field, col.fmt
        value = row.get(field)
        if value is None:
            why = row.get(col.note or "", None) or "n/a (not computed)"
            return f"n/a{self.note(f'{col.header}: {why}')}", None
        text = format(value, spec)
        lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
        if lo is not None and hi is not None and all(math.isfinite(x) for x in (lo, hi)):
            text += f" [{format(lo, spec)}, {format(hi, spec)}]"
            self.shown.add("speed" if metric == "s_per_sample" else "bootstrap")
        return text, float(value)

    def columns(self, metric: str, row: dict | None, paper: float | None, compare: bool) -> list[str]:
        """[ours, paper, Δ] for a metric; Δ only when our run is the paper's experiment."""
        text, value = self.ours(metric, row)
        spec = COLUMNS[metric].fmt
        p = DASH if paper is None else format(paper, spec)
        if compare and self.studies.scale is None and value is not None and paper is not None:
            d = format(value - paper, "+" + spec)
        else:
            d = DASH
        return [text, p, d]

    def banner(self, experiments) -> str:
        if self.studies.scale is not None:  # the paper's experiments, shrunk: nothing to compare
            return (f"> **Scale `{self.studies.scale}`** (suite `{self.suite_name}`): the experiments with "
                    f"the sizes of configs/scales/{self.studies.scale}/ (widths, steps, images, samples "
                    "shrunk). Their numbers show that the suite runs; they are **not results** and "
                    "not comparable to the paper's, so no Δ is shown.\n")
        small = self.small_scale(experiments)
        if not small:
            return ""
        verb = "reproduces" if len(small) == 1 else "reproduce"
        return (f"> **Small-scale run** (suite `{self.suite_name}`): {', '.join(f'`{e}`' for e in small)} "
                f"{verb} no published row (tiny models on a small dataset, few samples, offline "
                "Inception weights). Their numbers test the pipeline end to end and are **not "
                "comparable** to the paper's; Δ is shown only where our experiment is the paper's.\n"
                + ("> At this sample count they show that the pipeline runs, not the paper's effects: "
                   "the `small` suite measures those, with intervals and a verdict per claim "
                   "(`reports/claims.md`, docs/small-suite.md).\n" if self.suite_name == "tiny" else ""))


def speed_interval(rec: dict, path) -> dict:
    """{s_per_sample_lo, s_per_sample_hi}: the 95% basic bootstrap interval of the mean s/sample
    over the timed batches (drr.metrics.intervals.speed_interval, the replicates drr.reports.claims uses),
    or {s_per_sample_note} when the record has fewer than two per-batch times."""
    from drr.metrics.intervals import per_batch_seconds
    from drr.metrics.intervals import speed_interval as interval

    try:
        per_batch = per_batch_seconds(rec)
    except ValueError:
        return {"s_per_sample_note": "no per-batch times in the speed file"}
    if len(per_batch) < 2:
        return {"s_per_sample_note": f"{len(per_batch)} timed batch"}
    lo, hi, _ = interval(per_batch, path)
    return {"s_per_sample_lo": lo, "s_per_sample_hi": hi}


def metric_header(metrics) -> list[str]:
    out = []
    for m in metrics:
        label, better = COLUMNS[m].header, COLUMNS[m].arrow
        out += [f"{label}{better} ours", f"{label} paper", f"Δ{label}"]
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def reference_text(row: dict | None) -> str:
    if row is None:
        return DASH
    if row.get("reference_kind") == "computed":
        return f"{row['reference_id']} ({row['reference_dataset']}, {row['reference_images']:,} images)"
    return f"{row.get('reference_id')} (imported)"


def samples_text(row: dict | None) -> str:
    return DASH if row is None else f"{row['n_samples']:,}"
