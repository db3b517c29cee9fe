"""What the reports read: their spec and the metrics rows and speed files their rule gives them.

A report's job reads its spec (``results/reports/<report>.spec.json``, written by the plan:
drr.workflow.report_spec) and the files of its runs (``--metrics FILE...``, ``--speed FILE...``),
nothing else. The spec says what the report shows (its cells with their typed values, published
numbers, layout, the banner's facts) and names each run's files. A metrics row is found by its own
columns (``experiment``, ``variant``, ``phase``: drr.metrics.score); a speed record carries no run,
so a given speed file is the run's whose file the spec names so. Asking for a run whose file was
not given, or is not there, is an error naming the run or the file; a run of an experiment outside
the suite is shown as "—".

Our numbers are printed as ``value [lo, hi]``, the row's 95% interval (``<metric>_lo``/``_hi``,
drr.metrics.intervals: half-sampling of the generated samples, printed as end points rather than ±,
as a row from before that method may be asymmetric); rows written before intervals existed print the
value alone. s/sample gets the 95% basic bootstrap interval of the mean over the speed file's
timed batches (``batch_seconds``; drr.metrics.intervals.speed_interval, as drr.reports.claims) when it has
at least two, else none, and the report says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from drr.core.columns import COLUMNS
from drr.core.errors import DrrError

DASH = "—"
INTERVALS_NOTE = ("Ours: value [lo, hi], lo and hi the row's 95% interval (half-sampling of the "
                  "generated samples, reference fixed: drr.metrics.intervals; printed as end points, "
                  "so no ± is shown).")
SPEED_INTERVAL_NOTE = ("s/sample [lo, hi]: 95% basic bootstrap interval of the mean over the timed "
                       "batches of one measurement (batch-to-batch spread only, not run-to-run or device variation).")

# The fields every spec has, and those of each kind (drr.workflow.report_spec writes them).
SPEC_FIELDS = {
    "table": ("studies", "cells", "baselines", "published", "unpublished", "experiments", "runs",
              "suite_experiments"),
    "figure": ("studies", "cells", "published", "runs", "suite_experiments"),
    "index": ("tables", "figures", "missing", "pictures", "tokenizers", "unpublished", "suite_experiments"),
    "claims": ("claims_file", "claims", "links", "runs"),
}


def read_spec(path, kinds) -> dict:
    """A report's spec (JSON), checked to be of one of `kinds` and to have that kind's fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DrrError(f"{path}: file not found (a report's spec: build it with snakemake {path})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DrrError(f"{path}: not a report spec (not JSON: {e})") from None
    if not isinstance(data, dict):
        raise DrrError(f"{path}: not a report spec (expected a JSON object)")
    if data.get("kind") not in kinds:
        raise DrrError(f"{path}: field 'kind' is {data.get('kind')!r}, not {' or '.join(kinds)}")
    for key in ("name", "suite", "scale") + SPEC_FIELDS[data["kind"]]:
        if key not in data:
            raise DrrError(f"{path}: missing field '{key}'")
    return data


@dataclass(frozen=True)
class Cell:
    """One cell of a report: a run (an experiment and its variant) and the typed values of the
    parameters the report varies."""
    experiment: str
    variant: str
    values: dict = field(default_factory=dict)       # parameter -> value (int, str, ...)
    published: dict = field(default_factory=dict)    # phase -> {metric: the paper's value}

    def value(self, parameter: str):
        return self.values[parameter]


class Absent(Exception):
    """A run's file is not there: `how` is 'not given' (not among the --metrics / --speed files),
    'missing' (given, not on disk) or 'no row' (no row of the phase); `path` the file (as given,
    or as the spec names it when not given)."""

    def __init__(self, how: str, kind: str, run: tuple[str, str], path, phase: str | None = None,
                 given: int = 0, target: str | None = None):
        self.how, self.kind, self.run, self.path, self.phase, self.given = how, kind, run, path, phase, given
        self.target = target or path  # the file as the spec names it (a Snakemake target)
        super().__init__(self.reason())

    def reason(self) -> str:
        """The claims report's wording ("n/a, because <reason>")."""
        if self.how == "not given":
            return f"{self.path} was not given (--{self.kind})"
        if self.how == "missing":
            return f"{self.path} is missing"
        return f"{self.path} has no {self.phase} row"

    def error(self) -> DrrError:
        """The tables' and figures' wording (a report that cannot show a run is not written)."""
        e, v = self.run
        if self.how == "not given":
            return DrrError(f"run {e}/{v}: its {self.kind} file is not among the report's "
                            f"--{self.kind} inputs ({self.given} given)")
        if self.how == "missing":
            return DrrError(f"{self.path}: {self.kind} file not found (build it with snakemake {self.target})")
        return DrrError(f"{self.path}: field 'phase' has no '{self.phase}' row")


class Inputs:
    """The metrics rows and speed records of a spec's runs, from the files given (relative paths
    are relative to `root`); `where` names the spec in messages."""

    def __init__(self, spec: dict, metrics=(), speed=(), root=".", where: str = "the spec"):
        self.root = Path(root)
        self.where = where
        self.runs = {(r["experiment"], r["variant"]): r for r in spec["runs"]}
        self.metrics_given = [Path(p) for p in metrics]
        self.speed_given: dict[tuple[str, str], Path] = {}
        speed_of = {self._key(r["speed"]): run for run, r in self.runs.items() if r.get("speed")}
        for p in map(Path, speed):
            run = speed_of.get(self._key(p))
            if run is None:
                raise DrrError(f"--speed {p}: not the speed file of a run of {where}")
            self.speed_given[run] = p
        self._rows: dict | None = None           # (experiment, variant) -> {phase: (row, path)}

    def _path(self, p) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def _key(self, p) -> Path:
        return self._path(p).resolve()

    def _index(self) -> dict:
        """Every row of the given metrics files, by its own experiment, variant and phase columns."""
        if self._rows is not None:
            return self._rows
        from drr.metrics.score import read_rows

        self._rows = {}
        for p in self.metrics_given:
            path = self._path(p)
            if not path.is_file():  # said when a run of it is asked for (Absent 'missing')
                continue
            try:
                rows = read_rows(path)
            except Exception as e:  # noqa: BLE001 - any unreadable file is the input's fault
                raise DrrError(f"{p}: not a metrics file of drr.metrics.score ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
            for row in rows:
                run = (row.get("experiment"), row.get("variant"))
                if run not in self.runs:
                    raise DrrError(f"{p}: fields 'experiment', 'variant': a row of {run[0]}/{run[1]}, "
                                   f"which is not a run of {self.where}")
                phases = self._rows.setdefault(run, {})
                first = phases.get(row.get("phase"))
                if first is not None and first[1] != p:
                    raise DrrError(f"{p}: fields 'experiment', 'variant', 'phase': a second "
                                   f"{row.get('phase')} row of {run[0]}/{run[1]} ({first[1]} has one)")
                phases.setdefault(row.get("phase"), (row, p))  # within a file, its first row
        return self._rows

    def _absent_file(self, run, kind: str, given: list) -> Absent:
        named = self.runs.get(run, {}).get(kind)
        if named is None:  # not a run of the spec at all
            return Absent("not given", kind, run, f"the {kind} file of {run[0]}/{run[1]}", given=len(given))
        same = [p for p in given if self._key(p) == self._key(named)]
        if same:
            return Absent("missing", kind, run, same[0], target=named)
        return Absent("not given", kind, run, named, given=len(given))

    def row(self, run: tuple[str, str], phase: str) -> tuple[dict, Path]:
        """(metrics row, its file) of a run's phase, or Absent."""
        phases = self._index().get(run)
        if phases is None:
            raise self._absent_file(run, "metrics", self.metrics_given)
        if phase not in phases:
            raise Absent("no row", "metrics", run, next(iter(phases.values()))[1], phase)
        return phases[phase]

    def speed(self, run: tuple[str, str]) -> tuple[dict, Path]:
        """(speed record, its file as the spec names it) of a run (drr.sampling.speed), or Absent.
        The name, which is the path the rule gives, seeds the record's bootstrap
        (drr.metrics.intervals.speed_seed), so an interval does not depend on where the files are."""
        p = self.speed_given.get(run)
        if p is None or not self._path(p).is_file():
            raise self._absent_file(run, "speed", list(self.speed_given.values()))
        try:
            rec = json.loads(self._path(p).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DrrError(f"{p}: not a speed file of drr.sampling.speed (not JSON: {e})") from None
        if not isinstance(rec, dict):
            raise DrrError(f"{p}: not a speed file of drr.sampling.speed (expected a JSON object)")
        return rec, Path(self.runs[run]["speed"])


class Results:
    """A table's or figure's view of its spec and input files."""

    def __init__(self, spec: dict, metrics=(), speed=(), root=".", where: str = "the spec"):
        self.spec = spec
        self.name = spec["name"]
        self.suite_name = spec["suite"]
        self.scale = spec["scale"]
        self.suite_experiments = list(spec["suite_experiments"])
        self.entry = spec["studies"]                 # its configs/studies.yaml entry
        self.published = spec["published"]           # its configs/published.yaml section
        self.cells = [Cell(c["experiment"], c["variant"], c["values"], c.get("published", {}))
                      for c in spec["cells"]]
        self.inputs = Inputs(spec, metrics, speed, root, where)
        self.notes: list[str] = []           # footnotes of the report being built
        self.shown: set[str] = set()         # kinds of interval shown: "bootstrap", "speed"
        self.no_interval: dict[str, list] = {}  # why -> runs whose s/sample has no interval

    # -- files ----------------------------------------------------------------------------------

    def has_row(self, experiment: str, variant: str) -> bool:
        return (experiment, variant) in self.inputs._index()

    def row(self, experiment: str, variant: str, phase: str = "revised") -> dict | None:
        """The metrics row of a phase; None when the experiment is not in the suite. A run of the
        suite whose file was not given, or is missing, is an error naming it."""
        if experiment not in self.suite_experiments:
            return None
        try:
            return self.inputs.row((experiment, variant), phase)[0]
        except Absent as e:
            raise e.error() from None

    def speed(self, experiment: str, variant: str) -> dict | None:
        """The speed record, with `s_per_sample_lo`/`_hi` from its per-batch times (or
        `s_per_sample_note` saying why there is no interval)."""
        if experiment not in self.suite_experiments:
            return None
        try:
            rec, path = self.inputs.speed((experiment, variant))
        except Absent as e:
            raise e.error() from None
        rec.update(speed_interval(rec, path))
        return rec

    def with_speed(self, row: dict | None, sp: dict | None) -> dict | None:
        """A metrics row with the s/sample of a speed record (and its interval) merged in."""
        if row is None or sp is None:
            return row
        keys = ("s_per_sample", "s_per_sample_lo", "s_per_sample_hi")
        return dict(row, **{k: sp.get(k) for k in keys}, speed_device=sp.get("device"))

    # -- published ------------------------------------------------------------------------------

    def is_paper_experiment(self, experiment: str, published_experiment: str | None) -> bool:
        """Whether our experiment is the one the published numbers were measured on."""
        return published_experiment is not None and experiment == published_experiment

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
        field_, spec = col.field, col.fmt
        value = row.get(field_)
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
        if compare and self.scale is None and value is not None and paper is not None:
            d = format(value - paper, "+" + spec)
        else:
            d = DASH
        return [text, p, d]

    def banner(self) -> str:
        return banner(self.spec)


def banner(spec: dict) -> str:
    """The line at the top of a report: a scaled run's numbers are not results; a small-scale
    run's experiments (`unpublished`: they reproduce no published row) are not comparable."""
    suite, scale = spec["suite"], spec["scale"]
    if scale is not None:  # the paper's experiments, shrunk: nothing to compare
        return (f"> **Scale `{scale}`** (suite `{suite}`): the experiments with "
                f"the sizes of configs/scales/{scale}/ (widths, steps, images, samples "
                "shrunk). Their numbers show that the suite runs; they are **not results** and "
                "not comparable to the paper's, so no Δ is shown.\n")
    small = spec["unpublished"]
    if not small:
        return ""
    verb = "reproduces" if len(small) == 1 else "reproduce"
    return (f"> **Small-scale run** (suite `{suite}`): {', '.join(f'`{e}`' for e in small)} "
            f"{verb} no published row (tiny models on a small dataset, few samples, offline "
            "Inception weights). Their numbers test the pipeline end to end and are **not "
            "comparable** to the paper's; Δ is shown only where our experiment is the paper's.\n"
            + ("> At this sample count they show that the pipeline runs, not the paper's effects: "
               "the `small` suite measures those, with intervals and a verdict per claim "
               "(`reports/claims.md`, docs/small-suite.md).\n" if suite == "tiny" else ""))


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
