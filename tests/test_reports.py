"""Ablation cells (drr.studies) and the report scripts (drr.reports) on rows written by the metrics
code's own writer; the tiny workflow builds them for real in tests/test_workflow_tiny.py."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drr.errors import DrrError
from drr.metrics.score import ROW_FIELDS, write_rows
from drr.reports import figures, tables
from drr.reports.results import Results
from drr.studies import Studies, load_suite
from workflow_fixtures import SNAKEMAKE, copy_workflow, planned_jobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return tmp_path


def test_cells_are_named_by_the_values_that_differ_from_the_experiment():
    st = Studies()
    tiny = load_suite("tiny")
    names = [c.name for c in st.cells("fig4a", tiny)]
    assert names == ["t_draft=4", "base", "t_draft=16", "t_draft=32", "t_draft=64"]  # tiny's T_draft is 8
    assert st.cell_name("tiny", {"t_draft": 64, "strategy": "top-c"}) == "t_draft=64,strategy=top-c"
    assert st.cell_name("tiny", {"strategy": "top-c", "t_draft": 64}) == "t_draft=64,strategy=top-c"
    # the paper's ablation model samples 50k with drafts kept by default: its base cell *is* default
    paper = load_suite("paper")
    assert [c.name for c in st.cells("table4", paper)] == ["t_draft=8", "t_draft=32", "default"]
    cfg = st.config("tiny", "t_draft=16,M=3")
    assert cfg["sampling"]["t_draft"] == 16 and cfg["sampling"]["revise_iterations"] == 3
    assert cfg["generation"]["num_samples"] == st.config("tiny")["generation"]["ablation_samples"]
    assert cfg["generation"]["save_drafts"] is True
    assert cfg["transformer"] == st.config("tiny")["transformer"]  # a cell never retrains anything


def test_bad_cell_names_are_refused_naming_the_variant():
    st = Studies()
    with pytest.raises(DrrError, match="variant 't_drafts=4': unknown parameter 't_drafts'"):
        st.parse_cell("t_drafts=4")
    with pytest.raises(DrrError, match="is not parameter=value"):
        st.parse_cell("t_draft")
    with pytest.raises(DrrError, match="sampling.strategy"):
        st.config("tiny", "strategy=best")  # the schema refuses the value, naming the key


def test_a_study_naming_an_unknown_parameter_is_refused(root):
    path = root / "configs/studies.yaml"
    path.write_text(path.read_text().replace("cells: [{t_revise: [2, 4, 8, 16]}]",
                                             "cells: [{T_revise: [2, 4, 8, 16]}]"))
    with pytest.raises(DrrError, match=r"studies.yaml: reports.fig4c.cells: unknown parameter 'T_revise'"):
        Studies(root)


def fake_row(experiment, variant, phase, n=100, **metrics):
    row = {name: None for name, _, _ in ROW_FIELDS}
    row.update(experiment=experiment, variant=variant, phase=phase, n_samples=n, pr_k=3,
               reference_id="ref-0123456789abcdef", reference_kind="computed", reference_images=500,
               reference_dataset="fashion-mnist/train", extractor_id="inception-v3-compat/trunk-x",
               fid_network="fid-helper", is_note="n/a (Inception logits unavailable)", **metrics)
    return row


def write_cells(root, report, suite="tiny", experiment=None, speed=False):
    """Rows for every cell of a report: FID grows with the cell's index so that tests can tell
    the cells apart in the output."""
    from drr.studies import Cell

    st = Studies(root)
    spec = load_suite(suite, root)
    cells = st.cells(report, spec)
    baselines = [Cell(e, "default", ()) for e in st.baselines(report, spec)]
    for i, cell in enumerate(cells + baselines):
        path = root / f"results/metrics/{cell.experiment}/{cell.name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rows([fake_row(cell.experiment, cell.name, "revised", fid=10.0 + i, precision=0.5,
                             recall=0.4),
                    fake_row(cell.experiment, cell.name, "draft", fid=30.0 + i, precision=0.3,
                             recall=0.6)], path)
        if speed:
            sp = root / f"results/speed/{cell.experiment}/{cell.name}.json"
            sp.parent.mkdir(parents=True, exist_ok=True)
            sp.write_text('{"s_per_sample": 0.25, "device": "cpu (test)", "batch_size": 100, '
                          '"timed_batches": 2, "warmup_batches": 1}')
    return cells


def table_rows(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_table3_shows_ours_beside_published_and_delta_only_for_the_papers_experiment(root):
    cells = write_cells(root, "table3")
    md = tables.build(Results("tiny", root), "table3")
    assert "Small-scale run" in md and "not comparable" in md
    rows = table_rows(md)
    assert len(rows) == len(cells) == 3
    by_mark = {(r[0], r[1]): r for r in rows}
    none, revise, both = by_mark[("", "")], by_mark[("", "✓")], by_mark[("✓", "✓")]
    assert none[2:5] == ["10.00", "5.78", "—"]          # ours | paper | Δ (tiny is not the paper's)
    assert revise[2:5] == ["11.00", "3.45", "—"] and both[2] == "12.00"
    assert none[-1] == "`tiny/guidance=none`" and none[-3] == "100"


def test_table4_computes_delta_when_the_suite_runs_the_papers_experiment(root):
    cells = write_cells(root, "table4", suite="paper", speed=True)
    assert {c.experiment for c in cells} == {"in256-crq-821m"}
    md = tables.build(Results("paper", root), "table4")
    assert "Small-scale run" not in md
    rows = {r[0]: r for r in table_rows(md)}
    assert rows["VQGAN"][1:4] == ["—", "15.78", "—"]
    t8 = rows["T_draft = 8"]
    assert t8[1:4] == ["10.00", "5.41", "+4.59"]
    assert t8[4:7] == ["0.250", "0.030", "+0.220"]
    assert "measured on cpu (test)" in md
    # the AR baseline the suite imports sits in the published RQ-Transformer row, measured
    assert rows["RQ-Transformer"][1:7] == ["13.00", "8.71", "+4.29", "0.250", "0.040", "+0.210"]
    assert rows["RQ-Transformer"][-1] == "`in256-rq-1400m-ar/default`"


def test_table1_rows_and_na_footnotes(root):
    write_cells(root, "table1")
    md = tables.build(Results("tiny", root), "table1")
    rows = table_rows(md)
    ours = [r for r in rows if r[0].startswith("ours: `tiny`")]
    assert len(ours) == 1 and ours[0][3] == "10.00"
    assert ours[0][6].startswith("n/a[")                 # IS: no logits offline, with a footnote
    note = re.search(r"\[(\d+)\] IS: n/a \(Inception logits unavailable\)", md)
    assert note and ours[0][6] == f"n/a[{note.group(1)}]"
    published = {r[0]: r for r in rows if "Contextual" in r[0]}
    assert published["Contextual RQ-Transformer"][3] == "—"  # 821M etc. are not in suite tiny
    assert "not in suite `tiny`" in md
    assert [r[0] for r in rows if r[0].startswith("ours")] == ["ours: `tiny` (fashion-mnist)",
                                                              "ours: `tiny-ar` (fashion-mnist)"]
    assert len(rows) == 19                                 # 17 published rows + ours (D&R and AR)


def test_a_missing_metrics_file_is_named(root):
    with pytest.raises(DrrError, match=r"results/metrics/tiny/guidance=none.parquet: metrics file not found"):
        tables.build(Results("tiny", root), "table3")


def test_figures_write_png_and_pdf(root):
    write_cells(root, "fig4a")
    out = root / "reports/fig4a.png"
    figures.draw(Results("tiny", root), "fig4a", out)
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").stat().st_size > 1000
    with pytest.raises(DrrError, match="has no 'vq' experiment"):
        figures.draw(Results("tiny", root), "figA1", root / "reports/figA1.png")


REPORT_TARGETS = ["reports/table1.md", "reports/table2.md", "reports/table3.md", "reports/table4.md",
                  "reports/tableA2.md", "reports/tableA3.md", "reports/fig4a.png", "reports/fig4b.png",
                  "reports/fig4c.png", "reports/figA1.png", "reports/fig5.png", "reports/index.md"]


@pytest.mark.slow
def test_every_report_target_resolves_for_the_paper_suite(tmp_path):
    cwd = copy_workflow(tmp_path, official_standins=True)
    counts = planned_jobs(cwd, *REPORT_TARGETS, "--profile", "slurm")
    assert counts["report_table"] == 6 and counts["report_figure"] == 4 and counts["figure5"] == 1
    # table1 alone: the four class-conditional ImageNet models' default samples and nothing else
    only1 = planned_jobs(cwd, "reports/table1.md", "--profile", "slurm")
    assert only1["compute_metrics"] == 5 and "sampling_speed" not in only1  # 4 contextual + AR
    assert only1["generate_shard"] == 50 and "train_text_tokenizer" not in only1
    # figure 4(a): five T_draft cells of the 821M model, one of them its default run
    only4a = planned_jobs(cwd, "reports/fig4a.png", "--profile", "slurm")
    assert only4a["compute_metrics"] == 5 and only4a["submit_transformer"] == 1


@pytest.mark.slow
def test_snakemake_lint_is_clean():
    run = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Lints for" not in run.stdout + run.stderr, run.stdout[-3000:]
