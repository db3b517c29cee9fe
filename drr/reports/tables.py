"""The paper's tables as Markdown: our numbers | published | Δ, with sample counts and references.

    python -m drr.reports.tables --suite tiny --report table1 --out reports/table1.md

Reports: table1 (class-conditional ImageNet), table2 (text-conditional CC-3M), table3 (guidance
placement), table4 (FID and s/sample vs T_draft), tableA2 (VQ vs RQ), tableA3 (Top-C / Top-C-50% /
Random). Which experiments and cells each shows is configs/studies.yaml; published numbers are
configs/published.yaml. A metric that could not be computed reads "n/a[k]" with footnote k giving
the reason; a row of an experiment outside the suite reads "—". Written atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from drr.errors import DrrError, user_errors
from drr.provenance import git_commit, write_text
from drr.reports.results import (DASH, Results, markdown_table, metric_header, reference_text,
                                 samples_text)


def codes_text(cfg: dict) -> str:
    h, w, d = cfg["tokenizer"]["model"]["code_shape"]
    return f"{h}×{w}×{d}"


def params_text(experiment: str, res: Results) -> str:
    from drr.transformer.model import TransformerConfig, count_parameters

    n = count_parameters(TransformerConfig.from_experiment(res.studies.config(experiment)))
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def model_table(res: Results, name: str, metrics: list[str], with_codes: bool = True,
                speed: bool = False) -> str:
    """Tables 1, 2 and A2: every published row; our experiments of the suite (those of the
    report's condition type, configs/studies.yaml) merged into the published row they reproduce,
    the others (the embedded default) as rows of their own."""
    pub = res.table(name)
    ours = [c.experiment for c in res.studies.cells(name, res.suite)]
    header = ["Model", "Params"] + (["H×W×D"] if with_codes else [])
    header = header + metric_header(metrics) + ["samples", "reference", "experiment"]
    rows, shown = [], set()

    def our_row(experiment):
        row = res.row(experiment, "default")
        if speed and row is not None:
            sp = res.speed(experiment, "default")
            row = dict(row, s_per_sample=sp["s_per_sample"], speed_device=sp["device"])
            res.note(f"s/sample of `{experiment}` measured on {sp['device']}, batch {sp['batch_size']}")
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
        if exp and exp not in res.suite["experiments"]:
            exp_cell += res.note(f"not in suite `{res.suite_name}`: run it with --config suite=paper")
        rows.append(cells + [samples_text(row), reference_text(row), exp_cell])
    for exp in ours:
        if exp in shown:
            continue
        row = our_row(exp)
        cfg = res.studies.config(exp)
        cells = [f"ours: `{exp}` ({cfg['data']['name']})", params_text(exp, res)]
        if with_codes:
            cells.append(codes_text(cfg))
        for m in metrics:
            cells += res.columns(m, row, None, compare=False)
        rows.append(cells + [samples_text(row), reference_text(row), f"`{exp}`"])
    text = markdown_table(header, rows)
    if pub.get("note"):
        text += f"\n{pub['note']}\n"
    return text


def cell_table(res: Results, name: str, label_columns, label_of, paper_of, metrics, phases=("revised",),
               speed: bool = False) -> str:
    """Tables 3, 4 and A3: one row per cell of the suite's ablation experiment."""
    pub = res.table(name)
    cells = res.studies.cells(name, res.suite)
    if not cells:
        return f"No `{res.studies.reports[name]['experiment']}` experiment in suite `{res.suite_name}`.\n"
    compare = res.is_paper_experiment(cells[0].experiment, pub.get("experiment"))
    header = list(label_columns)
    for ph in phases:
        header += [f"{h} ({ph})" if len(phases) > 1 else h for h in metric_header(metrics)]
    header += ["samples", "reference", "cell"]
    rows = []
    baselines = res.studies.baselines(name, res.suite)

    def baseline_row(label, experiment, paper):
        row = res.row(experiment, "default") if experiment in baselines else None
        if row is not None:
            sp = res.speed(experiment, "default")
            row = dict(row, s_per_sample=sp["s_per_sample"])
        out = [label] + [""] * (len(label_columns) - 1)
        for m in metrics:
            out += res.columns(m, row, paper.get(m), compare=row is not None)
        return out + [samples_text(row), reference_text(row),
                      f"`{experiment}/default`" if row is not None else DASH]

    for p in pub.get("rows", []):  # the published baselines, ours where the suite runs them (Table 4)
        rows.append(baseline_row(p["model"], p.get("experiment"), p))
    linked = {p.get("experiment") for p in pub.get("rows", [])}
    for experiment in baselines:
        if experiment not in linked:
            rows.append(baseline_row(f"ours: `{experiment}` (AR RQ-Transformer)", experiment, {}))
    for cell in cells:
        out = list(label_of(cell))
        row = None
        for ph in phases:
            row = res.row(cell.experiment, cell.name, ph)
            if speed:
                sp = res.speed(cell.experiment, cell.name)
                row = dict(row, s_per_sample=sp["s_per_sample"])
                res.note(f"s/sample measured on {sp['device']}, batch {sp['batch_size']}, "
                         f"{sp['timed_batches']} timed batches after {sp['warmup_batches']} warm-up")
            paper = paper_of(cell, ph) or {}
            for m in metrics:
                out += res.columns(m, row, paper.get(m), compare)
        rows.append(out + [samples_text(row), reference_text(row), f"`{cell.experiment}/{cell.name}`"])
    return markdown_table(header, rows)


TITLES = {
    "table1": "Table 1: class-conditional image generation (ImageNet 256×256 in the paper)",
    "table2": "Table 2: text-conditional image generation (CC-3M in the paper)",
    "table3": "Table 3: classifier-free guidance in the draft and revise phases",
    "table4": "Table 4: FID and sampling speed vs T_draft",
    "tableA2": "Appendix Table 2: Contextual VQ- vs RQ-Transformer",
    "tableA3": "Appendix Table 3: confidence-based vs random UPDATE in the draft phase",
}


def build(res: Results, name: str) -> str:
    pub = res.table(name)
    if name == "table1":
        body = model_table(res, name, ["fid", "is", "precision", "recall"])
    elif name == "table2":
        body = model_table(res, name, ["fid", "clip"], with_codes=False)
    elif name == "tableA2":
        body = model_table(res, name, ["fid", "precision", "recall", "s_per_sample"], speed=True)
    elif name == "table3":
        marks = {"none": ("", ""), "draft": ("✓", ""), "revise": ("", "✓"), "both": ("✓", "✓")}
        body = cell_table(res, name, ["Draft", "Revise"], lambda c: marks[c.value("guidance")],
                          lambda c, ph: pub["cells"].get(c.value("guidance")),
                          ["fid", "precision", "recall"])
    elif name == "table4":
        body = cell_table(res, name, ["Model / T_draft"], lambda c: [f"T_draft = {c.value('t_draft')}"],
                          lambda c, ph: pub["cells"].get(c.value("t_draft")), ["fid", "s_per_sample"],
                          speed=True)
    elif name == "tableA3":
        names = {"top-c": "Top-C", "top-c-50": "Top-C-50%", "random": "Random"}
        body = cell_table(res, name, ["T_draft", "Strategy"],
                          lambda c: [str(c.value("t_draft")), names[c.value("strategy")]],
                          lambda c, ph: pub["cells"].get(c.value("t_draft"), {})
                          .get(c.value("strategy"), {}).get(ph),
                          ["fid", "precision", "recall"], phases=("draft", "revised"))
    else:
        raise DrrError(f"--report {name}: not one of {', '.join(TITLES)}")
    experiments = sorted({c.experiment for c in res.studies.cells(name, res.suite)})
    parts = [f"# {TITLES[name]}\n", res.banner(experiments),
             f"Published: {pub['source']}. Each metric: ours | paper | Δ (ours − paper, only where our "
             f"experiment is the one the paper measured). Suite `{res.suite_name}`.\n", body]
    extractor = _extractor_note(res, experiments, name)
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


def _extractor_note(res: Results, experiments, name) -> str | None:
    for cell in res.studies.cells(name, res.suite):
        path = res.metrics_path(cell.experiment, cell.name)
        if path.is_file():
            row = res.row(cell.experiment, cell.name, "revised" if name != "tableA3" else "draft")
            return f"{row['extractor_id']} ({row['fid_network']} weights)"
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, help="suite of configs/workflow.yaml")
    p.add_argument("--report", required=True, choices=sorted(TITLES))
    p.add_argument("--out", required=True, type=Path, help="Markdown file to write")
    p.add_argument("--root", default=".", type=Path, help="working directory of the workflow run")
    args = p.parse_args(argv)
    with user_errors():
        res = Results(args.suite, args.root)
        write_text(args.out, build(res, args.report))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
