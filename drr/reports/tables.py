"""The paper's tables as Markdown: our numbers | published | Δ, with sample counts and references.

    python -m drr.reports.tables --spec results/reports/table1.spec.json --out reports/table1.md \
        --metrics results/metrics/tiny/default.parquet ... [--speed results/speed/tiny/default.json ...]

Which tables there are, what each shows and how it looks is data: configs/studies.yaml (its
experiment, cells, `title`, `layout: models | cells` and the layout's keys) and
configs/published.yaml (the paper's numbers, their source and `note`), which the plan resolves
into the table's spec (drr.workflow.report_spec). The code knows no table by name and reads no
config: only the spec and the files given with --metrics / --speed (the rule's declared inputs).
A metric that could not be computed reads "n/a[k]" with footnote k giving the reason; a row of an
experiment outside the suite reads "—". Written atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from drr.core.errors import DrrError, user_errors
from drr.core.files import write_text
from drr.core.provenance import git_commit
from drr.reports.results import (
    DASH,
    INTERVALS_NOTE,
    SPEED_INTERVAL_NOTE,
    Results,
    markdown_table,
    metric_header,
    read_spec,
    reference_text,
    samples_text,
)


def codes_text(facts: dict) -> str:
    h, w, d = facts["code_shape"]
    return f"{h}×{w}×{d}"


def params_text(facts: dict) -> str:
    n = facts["parameters"]
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def model_table(res: Results, metrics: list[str], with_codes: bool = True, speed: bool = False) -> str:
    """`layout: models` (Tables 1, 2 and A2): every published row; our experiments of the suite
    (those of the report's condition type, configs/studies.yaml) merged into the published row they
    reproduce, the others (the embedded default) as rows of their own."""
    pub = res.published
    ours = [c.experiment for c in res.cells]
    header = ["Model", "Params"] + (["H×W×D"] if with_codes else [])
    header = header + metric_header(metrics) + ["samples", "reference", "experiment"]
    rows, shown = [], set()

    def our_row(experiment):
        row = res.row(experiment, "default")
        if speed and row is not None:
            sp = res.speed(experiment, "default")
            row = res.with_speed(row, sp)
            res.note(f"s/sample of `{experiment}` measured on {sp['device']}, batch {sp['batch_size']}")
            _speed_interval_note(res, sp, f"{experiment}/default")
        return row

    for p in pub["rows"]:
        exp = p.get("experiment")
        row = our_row(exp) if exp in ours else None
        if row is not None:
            shown.add(exp)
        cells = [p["model"], str(p.get("params", DASH))] + ([p.get("codes", DASH)] if with_codes else [])
        for m in metrics:
            cells += res.columns(m, row, p.get(m), compare=row is not None)
        exp_cell = f"`{exp}`" if exp else DASH
        if exp and exp not in res.suite_experiments:
            exp_cell += res.note(f"not in suite `{res.suite_name}`: run it with --config suite=paper")
        rows.append(cells + [samples_text(row), reference_text(row), exp_cell])
    for exp in ours:
        if exp in shown:
            continue
        row = our_row(exp)
        facts = res.spec["experiments"][exp]
        cells = [f"ours: `{exp}` ({facts['dataset']})", params_text(facts)]
        if with_codes:
            cells.append(codes_text(facts))
        for m in metrics:
            cells += res.columns(m, row, None, compare=False)
        rows.append(cells + [samples_text(row), reference_text(row), f"`{exp}`"])
    return markdown_table(header, rows)


def _speed_interval_note(res: Results, sp: dict | None, run: str) -> None:
    """Remember a run whose s/sample has no interval (said in one line under the table; not a
    numbered footnote, so that the numbering of the others does not depend on it)."""
    if sp is not None and sp.get("s_per_sample_note"):
        runs = res.no_interval.setdefault(sp["s_per_sample_note"], [])
        if f"`{run}`" not in runs:
            runs.append(f"`{run}`")


def label_text(column: dict, cell) -> str:
    """A label column's text for a cell (configs/studies.yaml `columns`: values or format; the
    spec gives `values` as [value, text] pairs)."""
    v = cell.value(column["parameter"])
    if "values" in column:
        return next(text for value, text in column["values"] if value == v)
    return column["format"].format(v)


def cell_table(res: Results, columns: list[dict], metrics, phases=("revised",), speed: bool = False) -> str:
    """`layout: cells` (Tables 3, 4 and A3): the published baselines (`rows`), the suite's
    baselines, then one row per cell of the suite's ablation experiment, beside the cell's
    published numbers (the spec's, from configs/published.yaml by the studies.yaml `paper` path)."""
    pub = res.published
    cells = res.cells
    if not cells:
        return f"No `{res.entry['experiment']}` experiment in suite `{res.suite_name}`.\n"
    compare = res.is_paper_experiment(cells[0].experiment, pub.get("experiment"))
    header = [c["header"] for c in columns]
    for ph in phases:
        header += [f"{h} ({ph})" if len(phases) > 1 else h for h in metric_header(metrics)]
    header += ["samples", "reference", "cell"]
    rows = []
    baselines = res.spec["baselines"]

    def baseline_row(label, experiment, paper_row):
        row = res.row(experiment, "default") if experiment in baselines else None
        if row is not None:
            sp = res.speed(experiment, "default")
            row = res.with_speed(row, sp)
            _speed_interval_note(res, sp, f"{experiment}/default")
        out = [label] + [""] * (len(columns) - 1)
        for m in metrics:
            out += res.columns(m, row, paper_row.get(m), compare=row is not None)
        return out + [samples_text(row), reference_text(row),
                      f"`{experiment}/default`" if row is not None else DASH]

    for p in pub.get("rows", []):  # the published baselines, ours where the suite runs them (Table 4)
        rows.append(baseline_row(p["model"], p.get("experiment"), p))
    linked = {p.get("experiment") for p in pub.get("rows", [])}
    for experiment in baselines:
        if experiment not in linked:
            rows.append(baseline_row(f"ours: `{experiment}` (AR RQ-Transformer)", experiment, {}))
    for cell in cells:
        out = [label_text(c, cell) for c in columns]
        row = None
        for ph in phases:
            row = res.row(cell.experiment, cell.variant, ph)
            if speed:
                sp = res.speed(cell.experiment, cell.variant)
                row = res.with_speed(row, sp)
                res.note(f"s/sample measured on {sp['device']}, batch {sp['batch_size']}, "
                         f"{sp['timed_batches']} timed batches after {sp['warmup_batches']} warm-up")
                _speed_interval_note(res, sp, f"{cell.experiment}/{cell.variant}")
            numbers = cell.published.get(ph, {})
            for m in metrics:
                out += res.columns(m, row, numbers.get(m), compare)
        rows.append(out + [samples_text(row), reference_text(row), f"`{cell.experiment}/{cell.variant}`"])
    return markdown_table(header, rows)


def build(res: Results) -> str:
    """The Markdown of the table the spec describes."""
    if res.spec["kind"] != "table":
        raise DrrError(f"spec of {res.name}: not a table (kind {res.spec['kind']!r})")
    spec = res.entry
    pub = res.published
    speed = bool(spec.get("speed", False))
    phases = tuple(spec.get("phases", ["revised"]))
    if spec["layout"] == "models":
        body = model_table(res, spec["metrics"], with_codes=spec.get("codes", False), speed=speed)
    else:
        body = cell_table(res, spec["columns"], spec["metrics"], phases, speed)
    if pub.get("note"):
        body += f"\n{pub['note']}\n"
    shown = [text for kind, text in (("bootstrap", INTERVALS_NOTE), ("speed", SPEED_INTERVAL_NOTE))
             if kind in res.shown]
    shown += [f"s/sample without an interval ({why}): {', '.join(runs)}."
              for why, runs in res.no_interval.items()]
    parts = [f"# {spec['title']}\n", res.banner(),
             f"Published: {pub['source']}. Each metric: ours | paper | Δ (ours − paper, only where our "
             f"experiment is the one the paper measured). Suite `{res.suite_name}`.\n"]
    if shown:  # what the brackets after our numbers are, or that s/sample has none
        parts.append(" ".join(shown) + "\n")
    parts.append(body)
    extractor = _extractor_note(res, phases[0])
    if extractor:
        parts.append(f"\nFeatures: {extractor}. Precision/recall: k = 3 nearest neighbours "
                     "(Kynkäänniemi et al.) in Inception pool features against the reference's "
                     "evenly spaced subset (the `pr_reference_size` in each row's metrics file; the "
                     "ADM evaluator uses 10,000).\n")
    if res.notes:
        parts.append("\n" + "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(res.notes)) + "\n")
    parts.append(f"\n_Generated by drr.reports.tables from results/metrics at commit {git_commit()}, "
                 f"{time.strftime('%Y-%m-%d %H:%M')}._\n")
    return "\n".join(parts)


def _extractor_note(res: Results, phase) -> str | None:
    for cell in res.cells:
        if res.has_row(cell.experiment, cell.variant):
            row = res.row(cell.experiment, cell.variant, phase)
            return f"{row['extractor_id']} ({row['fid_network']} weights)"
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, type=Path,
                   help="the table's spec (results/reports/<table>.spec.json, drr.workflow.report_spec)")
    p.add_argument("--out", required=True, type=Path, help="Markdown file to write")
    p.add_argument("--metrics", nargs="*", default=[], type=Path,
                   help="the metrics files of the table's runs (the spec's `runs`)")
    p.add_argument("--speed", nargs="*", default=[], type=Path, help="the speed files of its runs")
    p.add_argument("--root", default=".", type=Path, help="folder the relative --metrics / --speed paths are in")
    args = p.parse_args(argv)
    with user_errors():
        spec = read_spec(args.spec, ("table",))
        res = Results(spec, args.metrics, args.speed, args.root, where=str(args.spec))
        write_text(args.out, build(res))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
