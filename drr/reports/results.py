"""What the reports read: the suite, its cells' metrics rows and speed files, the published numbers.

Paths are the workflow's (relative to `root`, the working directory of a run):
``results/metrics/<experiment>/<variant>.parquet`` (drr.metrics.score rows, one per phase) and
``results/speed/<experiment>/<variant>.json`` (drr.sampling.speed).
"""

from __future__ import annotations

import json
from pathlib import Path

from drr.errors import DrrError
from drr.studies import PUBLISHED_FILE, Studies, load_suite, read_yaml

# metric key -> (row field in results/metrics, label, format, better)
METRICS = {
    "fid": ("fid", "FID", ".2f", "↓"),
    "is": ("is_mean", "IS", ".1f", "↑"),
    "precision": ("precision", "P", ".2f", "↑"),
    "recall": ("recall", "R", ".2f", "↑"),
    "clip": ("clip_score", "CLIP-s", ".3f", "↑"),
    "s_per_sample": ("s_per_sample", "s/sample", ".3f", "↓"),
}
NOTE_FIELDS = {"fid": "fid_note", "is": "is_note", "precision": "pr_note", "recall": "pr_note",
               "clip": "clip_note"}
DASH = "—"


class Results:
    """One suite's view of the results folder."""

    def __init__(self, suite: str, root=".", studies: Studies | None = None):
        self.root = Path(root)
        self.suite_name = suite
        self.suite = load_suite(suite, self.root)
        self.studies = studies or Studies(self.root)
        self.published = read_yaml(self.root / PUBLISHED_FILE)
        self.notes: list[str] = []           # footnotes of the report being built

    # -- files ----------------------------------------------------------------------------------

    def metrics_path(self, experiment: str, variant: str) -> Path:
        return self.root / "results" / "metrics" / experiment / f"{variant}.parquet"

    def speed_path(self, experiment: str, variant: str) -> Path:
        return self.root / "results" / "speed" / experiment / f"{variant}.json"

    def row(self, experiment: str, variant: str, phase: str = "revised") -> dict | None:
        """The metrics row of a phase; None when the experiment is not in the suite. A file the
        workflow should have made but that is missing is an error naming it."""
        if experiment not in self.suite["experiments"]:
            return None
        path = self.metrics_path(experiment, variant)
        if not path.is_file():
            raise DrrError(f"{path}: metrics file not found (build it with snakemake {path})")
        from drr.metrics.score import read_rows

        rows = [r for r in read_rows(path) if r["phase"] == phase]
        if not rows:
            raise DrrError(f"{path}: field 'phase' has no '{phase}' row")
        return rows[0]

    def speed(self, experiment: str, variant: str) -> dict | None:
        if experiment not in self.suite["experiments"]:
            return None
        path = self.speed_path(experiment, variant)
        if not path.is_file():
            raise DrrError(f"{path}: speed file not found (build it with snakemake {path})")
        return json.loads(path.read_text())

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
        field, _, spec, _ = METRICS[metric]
        value = row.get(field)
        if value is None:
            why = row.get(NOTE_FIELDS.get(metric, ""), None) or "n/a (not computed)"
            return f"n/a{self.note(f'{METRICS[metric][1]}: {why}')}", None
        return format(value, spec), float(value)

    def columns(self, metric: str, row: dict | None, paper: float | None, compare: bool) -> list[str]:
        """[ours, paper, Δ] for a metric; Δ only when our run is the paper's experiment."""
        text, value = self.ours(metric, row)
        spec = METRICS[metric][2]
        p = DASH if paper is None else format(paper, spec)
        if compare and value is not None and paper is not None:
            d = format(value - paper, "+" + spec)
        else:
            d = DASH
        return [text, p, d]

    def banner(self, experiments) -> str:
        small = self.small_scale(experiments)
        if not small:
            return ""
        verb = "reproduces" if len(small) == 1 else "reproduce"
        return (f"> **Small-scale run** (suite `{self.suite_name}`): {', '.join(f'`{e}`' for e in small)} "
                f"{verb} no published row (tiny models on a small dataset, few samples, offline "
                "Inception weights). Their numbers test the pipeline end to end and are **not "
                "comparable** to the paper's; Δ is shown only where our experiment is the paper's.\n")


def metric_header(metrics) -> list[str]:
    out = []
    for m in metrics:
        label, better = METRICS[m][1], METRICS[m][3]
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
