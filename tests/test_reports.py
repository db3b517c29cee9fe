"""Ablation variants and report cells (drr.workflow.studies), the reports' specs
(drr.workflow.report_spec) and the report scripts (drr.reports) on rows written by the metrics
code's own writer; the tiny workflow builds them for real in tests/test_workflow_tiny.py."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from drr.core.config import config_hash
from drr.core.errors import DrrError
from drr.metrics.score import ROW_FIELDS, write_rows
from drr.reports import figures, index, tables
from drr.reports.results import Results, read_spec
from drr.workflow import report_spec
from drr.workflow.plan import Plan
from drr.workflow.studies import Studies, load_suite

from workflow_fixtures import SNAKEMAKE, copy_workflow, planned_jobs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return tmp_path


def test_variants_are_named_by_the_values_that_differ_from_the_experiment():
    st = Studies()
    tiny = load_suite("tiny")
    names = [c.variant for c in st.cells("fig4a", tiny)]
    assert names == ["t_draft=4", "base", "t_draft=16", "t_draft=32", "t_draft=64"]  # tiny's T_draft is 8
    assert st.variant_name("tiny", {"t_draft": 64, "strategy": "top-c"}) == "t_draft=64+strategy=top-c"
    assert st.variant_name("tiny", {"strategy": "top-c", "t_draft": 64}) == "t_draft=64+strategy=top-c"
    # the paper's ablation model samples 50k with drafts kept by default: its base variant *is* default
    paper = load_suite("paper")
    assert [c.variant for c in st.cells("table4", paper)] == ["t_draft=8", "t_draft=32", "default"]
    cfg = st.config("tiny", "t_draft=16+M=3")
    assert cfg["sampling"]["t_draft"] == 16 and cfg["sampling"]["revise_iterations"] == 3
    assert cfg["generation"]["num_samples"] == st.config("tiny")["generation"]["ablation_samples"]
    assert cfg["generation"]["save_drafts"] is True
    assert cfg["transformer"] == st.config("tiny")["transformer"]  # an ablation variant never retrains anything


def test_bad_ablation_variant_names_are_refused_naming_the_variant():
    st = Studies()
    with pytest.raises(DrrError, match="variant 't_drafts=4': unknown parameter 't_drafts'"):
        st.ablation_values("t_drafts=4")
    with pytest.raises(DrrError, match="is not parameter=value"):
        st.ablation_values("t_draft")
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


INTERVAL = (-0.5, 0.75)  # fixture intervals: [value - 0.5, value + 0.75] (asymmetric, like a basic bootstrap's)


def write_cells(root, report, suite="tiny", experiment=None, speed=False, intervals=False,
                batch_seconds=None):
    """Rows for every cell of a report: FID grows with the cell's index so that tests can tell
    the cells apart in the output. `intervals`: with `<metric>_lo`/`_hi`; `batch_seconds`: the
    per-batch times of the speed files."""
    from drr.workflow.studies import Cell

    st = Studies(root)
    spec = load_suite(suite, root)
    cells = st.cells(report, spec)
    baselines = [Cell(e, "default", ()) for e in st.baselines(report, spec)]

    def row(cell, phase, **m):
        if intervals:
            m.update({f"{k}_{e}": v + d for k, v in list(m.items()) for e, d in zip(("lo", "hi"), INTERVAL)})
        return fake_row(cell.experiment, cell.variant, phase, **m)

    for i, cell in enumerate(cells + baselines):
        path = root / f"results/metrics/{cell.experiment}/{cell.variant}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rows([row(cell, "revised", fid=10.0 + i, precision=0.5, recall=0.4),
                    row(cell, "draft", fid=30.0 + i, precision=0.3, recall=0.6)], path)
        if speed:
            sp = root / f"results/speed/{cell.experiment}/{cell.variant}.json"
            sp.parent.mkdir(parents=True, exist_ok=True)
            rec = {"s_per_sample": 0.25, "device": "cpu (test)", "batch_size": 100, "timed_batches": 2,
                   "warmup_batches": 1}
            if batch_seconds is not None:
                rec["batch_seconds"] = batch_seconds
            sp.write_text(json.dumps(rec))
    return cells


def plan_of(root, suite, scale=None):
    wf = yaml.safe_load((REPO / "configs/workflow.yaml").read_text())
    wf["suite"], wf["scale"] = suite, scale
    return Plan(root, wf)


def spec_of(root, name, suite="tiny", scale=None):
    """The report's spec as its job reads it: written by the spec program, read back from JSON."""
    out = root / report_spec.spec_file(f"{name}-{suite}-{scale}")
    report_spec.main(["--suite", suite, *(["--scale", scale] if scale else []), "--report", name,
                      "--out", str(out), "--root", str(root)])
    return read_spec(out, ("table", "figure"))


def report(root, name, suite="tiny", scale=None):
    """Results as the report's rule gives them: its spec and its declared input files, root-relative."""
    spec = spec_of(root, name, suite, scale)
    inputs = plan_of(root, suite, scale).report_inputs(name)
    return Results(spec, inputs["metrics"], inputs["speed"], root)


def table_rows(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_table3_shows_ours_beside_published_and_delta_only_for_the_papers_experiment(root):
    cells = write_cells(root, "table3")
    md = tables.build(report(root, "table3"))
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
    md = tables.build(report(root, "table4", "paper"))
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


def test_a_scaled_run_says_so_and_shows_no_delta(root):
    # the dress rehearsal (scale rehearsal) runs the paper's experiments shrunk: nothing to compare
    write_cells(root, "table4", suite="paper", speed=True)
    md = tables.build(report(root, "table4", "paper", scale="rehearsal"))
    assert "**Scale `rehearsal`**" in md and "not results" in md
    t8 = {r[0]: r for r in table_rows(md)}["T_draft = 8"]
    assert t8[1:4] == ["10.00", "5.41", "—"] and t8[4:7] == ["0.250", "0.030", "—"]


def test_table1_rows_and_na_footnotes(root):
    write_cells(root, "table1")
    md = tables.build(report(root, "table1"))
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
        tables.build(report(root, "table3"))


def test_figures_write_png_and_pdf(root):
    write_cells(root, "fig4a")
    out = root / "reports/fig4a.png"
    figures.draw(report(root, "fig4a"), out)
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").stat().st_size > 1000
    cli = root / "reports/cli/fig4a.png"  # the rule's command: the spec and the declared metrics files only
    spec = root / report_spec.spec_file("fig4a")
    report_spec.main(["--suite", "tiny", "--report", "fig4a", "--out", str(spec), "--root", str(root)])
    figures.main(["--spec", str(spec), "--out", str(cli), "--root", str(root),
                  "--metrics", *plan_of(root, "tiny").report_inputs("fig4a")["metrics"]])
    assert cli.stat().st_size > 10_000
    with pytest.raises(DrrError, match="has no 'vq' experiment"):
        figures.draw(report(root, "figA1"), root / "reports/figA1.png")


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


# The one lint the workflow answers by design: its rules declare no conda environment because every
# job runs the interpreter that runs Snakemake (make setup's .venv, or the conda env of
# environment.yml), so `--sdm conda` would build environments the jobs never use.
NO_CONDA_LINT = "Specify a conda environment or container for each rule."


@pytest.mark.slow
def test_snakemake_lint_is_clean():
    run = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    titles = re.findall(r"^    \* (.+?):$", out, flags=re.M)   # one line per lint, under "Lints for ..."
    assert out.count("Lints for") == len(titles) or titles, out[-3000:]
    assert [t for t in titles if t != NO_CONDA_LINT] == [], out[-3000:]
    assert run.returncode == (1 if titles else 0), out[-3000:]


# -- layouts as data (configs/studies.yaml), explicit inputs, intervals ----------------------------

BEFORE = REPO / "tests/data/reports_before"  # renderings by the per-table code of 9d3be16


@pytest.mark.parametrize("case", sorted(p.stem for p in BEFORE.glob("*.md")))
def test_the_generic_tables_render_what_the_per_table_code_rendered(root, case):
    """Same fixture rows (no intervals, speed files without per-batch times) as when the goldens
    were written: every table line is the same, and every other line of before is still there,
    in order (the generic code may only add lines, e.g. published notes)."""
    name, suite = case.split("-")
    write_cells(root, name, suite=suite, speed=plan_of(root, suite).reports[name].speed)
    new = tables.build(report(root, name, suite)).splitlines()
    old = (BEFORE / f"{case}.md").read_text().splitlines()
    assert [x for x in new if x.startswith("|")] == [x for x in old if x.startswith("|")]
    rest = iter(new)
    for line in (x for x in old if x.strip()):
        assert any(line == x for x in rest), f"{case}: line missing or out of order: {line}"


def test_our_numbers_show_the_rows_interval(root):
    write_cells(root, "table3", intervals=True)
    md = tables.build(report(root, "table3"))
    none = {(r[0], r[1]): r for r in table_rows(md)}[("", "")]
    assert none[2] == "10.00 [9.50, 10.75]"           # fid 10, fid_lo 9.5, fid_hi 10.75 of the row
    assert none[5] == "0.50 [0.00, 1.25]" and none[3] == "5.78" and none[4] == "—"
    assert "value [lo, hi]" in md and "95% interval (half-sampling" in md and "no ± is shown" in md
    # rows written before intervals existed print the value alone, and no interval note
    write_cells(root, "table3")
    md = tables.build(report(root, "table3"))
    assert {(r[0], r[1]): r for r in table_rows(md)}[("", "")][2] == "10.00"
    assert "[lo, hi]" not in md


def test_s_per_sample_interval_from_per_batch_times(root):
    # two timed batches of 100 samples: 20 s and 30 s in all -> 0.20 and 0.30 s/sample
    write_cells(root, "table4", speed=True, batch_seconds={"draft": [12.0, 18.0], "revise": [6.0, 9.0],
                                                            "decode": [2.0, 3.0]})
    md = tables.build(report(root, "table4"))
    t8 = next(r for r in table_rows(md) if r[0] == "T_draft = 8")
    # bootstrap means of two batches: 0.20, 0.25, 0.30 (1/4, 1/2, 1/4); basic interval 2·0.25 − q
    assert t8[4] == "0.250 [0.200, 0.300]"
    assert "basic bootstrap interval of the mean over the timed batches" in md
    write_cells(root, "table4", speed=True)  # no batch_seconds: the value alone, and said so
    md = tables.build(report(root, "table4"))
    assert next(r for r in table_rows(md) if r[0] == "T_draft = 8")[4] == "0.250"
    assert "s/sample without an interval (no per-batch times in the speed file): `tiny-ar/default`, " \
        "`tiny/base`, `tiny/t_draft=32`, `tiny/t_draft=64`." in md


def error_bars(fig):
    from matplotlib.container import ErrorbarContainer

    out = []
    for ax in fig.axes:
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer):
                segments = c.lines[2][0].get_segments()
                out.append((c.get_label(), [(s[0][1], s[1][1]) for s in segments]))
    return out


def test_figures_draw_the_intervals_as_error_bars(root):
    from drr.reports.plotting import pyplot

    cells = write_cells(root, "fig4a", intervals=True)
    fig, title = figures.build(report(root, "fig4a"))
    bars = dict(error_bars(fig))
    assert set(bars) == {"ours, revised", "ours, drafts"}
    assert len(bars["ours, revised"]) == len(cells) == 5
    # the cells sorted by T_draft are the write order here: revised FID 10 + i, bar [9.5 + i, 10.75 + i]
    assert [tuple(round(y, 6) for y in b) for b in bars["ours, revised"]] == \
        [(9.5 + i, 10.75 + i) for i in range(5)]
    assert "error bars: 95% half-sampling intervals" in title
    pyplot().close(fig)
    write_cells(root, "fig4b")                           # rows without intervals: zero-length bars
    fig, title = figures.build(report(root, "fig4b"))
    assert all(lo == hi for _, b in error_bars(fig) for lo, hi in b) and "no error bars" in title
    pyplot().close(fig)


def test_a_report_asked_for_a_run_not_among_its_inputs_fails_with_one_line(root):
    write_cells(root, "table3")
    inputs = plan_of(root, "tiny").report_inputs("table3")
    spec = spec_of(root, "table3")
    res = Results(spec, inputs["metrics"][1:], root=root)  # guidance=none left out
    with pytest.raises(DrrError) as e:
        tables.build(res)
    assert str(e.value) == ("run tiny/guidance=none: its metrics file is not among the report's "
                            "--metrics inputs (2 given)")
    # a file whose rows are of no run of the spec, or a speed file the spec does not name
    other = root / "results/metrics/tiny/t_draft=16.parquet"
    write_rows([fake_row("tiny", "t_draft=16", "revised")], other)
    with pytest.raises(DrrError, match=r"t_draft=16\.parquet: fields 'experiment', 'variant': a row of "
                                       r"tiny/t_draft=16, which is not a run of the spec") as e:
        tables.build(Results(spec, [*inputs["metrics"], other], root=root))
    assert "\n" not in str(e.value)
    with pytest.raises(DrrError, match=r"--speed results/speed/tiny\.json: not the speed file of a run"):
        Results(spec, inputs["metrics"], ["results/speed/tiny.json"], root=root)
    # the program reads only its spec and what --metrics names (the rule's {input.metrics:q})
    out = root / "reports/table3.md"
    spec_file = root / report_spec.spec_file("table3")
    report_spec.main(["--suite", "tiny", "--report", "table3", "--out", str(spec_file), "--root", str(root)])
    with pytest.raises(SystemExit):
        tables.main(["--spec", str(spec_file), "--out", str(out), "--root", str(root),
                     "--metrics", *inputs["metrics"][:2]])
    assert not out.exists()
    tables.main(["--spec", str(spec_file), "--out", str(out), "--root", str(root),
                 "--metrics", *inputs["metrics"]])
    assert "`tiny/guidance=none`" in out.read_text()


@pytest.mark.parametrize("key, value, message", [
    ("table3.layout", "rows", r"reports\.table3\.layout: 'rows' is not one of models, cells"),
    ("table3.title", None, r"reports\.table3: missing field 'title'"),
    ("table3.title", " ", r"reports\.table3\.title: expected a non-empty string"),
    ("table1.metrics", ["fid", "kid"], r"reports\.table1\.metrics: 'kid' is not one of"),
    ("tableA3.columns", [{"header": "S", "parameter": "strategy", "values": {"top-c": "Top-C"}}],
     r"reports\.tableA3\.columns\[0\]\.values: no text for strategy value 'top-c-50'"),
    ("table4.columns", [{"header": "T", "parameter": "t_revise", "format": "{}"}],
     r"reports\.table4\.columns\[0\]\.parameter: 't_revise' is not a parameter of the report's cells"),
    ("table4.paper", ["M"], r"reports\.table4\.paper: 'M' is neither phase nor a parameter"),
    ("fig4a.panels", [{"parameter": "t_draft", "label": "T", "show": "kid"}],
     r"reports\.fig4a\.panels\[0\]\.show: 'kid' is not one of fid, fid_revised, pr"),
])
def test_a_bad_layout_is_refused_naming_file_and_key(root, key, value, message):
    path = root / "configs/studies.yaml"
    doc = yaml.safe_load(path.read_text())
    report, field = key.split(".")
    if value is None:
        del doc["reports"][report][field]
    else:
        doc["reports"][report][field] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    with pytest.raises(DrrError, match=r"studies\.yaml: " + message) as e:
        Studies(root)
    assert "\n" not in str(e.value)


def add_report_by_data(root):
    """A copy of table4 at other T_draft values (table4b) and of fig4a over M (fig4d), made by
    editing configs only."""
    path = root / "configs/studies.yaml"
    doc = yaml.safe_load(path.read_text())
    # a deep copy: lists shared with table4 would be written as YAML anchors, which drr refuses
    doc["reports"]["table4b"] = dict(copy.deepcopy(doc["reports"]["table4"]),
                                     title="Table 4b: FID and s/sample vs T_draft 4, 16", cells=[{"t_draft": [4, 16]}])
    doc["reports"]["fig4d"] = {"title": "Figure 4(d): FID vs M", "experiment": "ablation",
                               "cells": [{"M": [1, 3]}],
                               "panels": [{"parameter": "M", "label": "M (revise passes)", "show": "fid"}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    pub = root / "configs/published.yaml"
    p = yaml.safe_load(pub.read_text())
    p["table4b"] = {"source": "made up for the test", "experiment": "in256-crq-821m",
                    "rows": [{"model": "VQGAN", "fid": 15.78, "s_per_sample": 0.16}],
                    "cells": {4: {"fid": 9.99}, 16: {"fid": 4.44, "s_per_sample": 0.05}}}
    pub.write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))


def test_a_new_table_and_figure_are_an_edit_of_data_only(tmp_path):
    root = copy_workflow(tmp_path)
    add_report_by_data(root)
    plan = plan_of(root, "tiny")
    assert "table4b" in plan.report_names("table") and "fig4d" in plan.report_names("figure")
    assert plan.report_inputs("table4b") == {
        "metrics": ["results/metrics/tiny/t_draft=4.parquet", "results/metrics/tiny/t_draft=16.parquet",
                    "results/metrics/tiny-ar/default.parquet"],
        "speed": ["results/speed/tiny/t_draft=4.json", "results/speed/tiny/t_draft=16.json",
                  "results/speed/tiny-ar/default.json"]}
    counts = planned_jobs(root, "reports/table4b.md", "reports/fig4d.png")
    assert counts["report_table"] == 1 and counts["report_figure"] == 1 and counts["report_spec"] == 2
    assert counts["compute_metrics"] == 5 and counts["sampling_speed"] == 3  # 2 + 2 cells, AR default
    write_cells(root, "table4b", speed=True, intervals=True)
    md = tables.build(report(root, "table4b"))
    assert md.startswith("# Table 4b: FID and s/sample vs T_draft 4, 16\n")
    rows = {r[0]: r for r in table_rows(md)}
    assert set(rows) == {"VQGAN", "ours: `tiny-ar` (AR RQ-Transformer)", "T_draft = 4", "T_draft = 16"}
    assert rows["T_draft = 4"][1:3] == ["10.00 [9.50, 10.75]", "9.99"]
    assert rows["T_draft = 16"][5] == "0.050"
    write_cells(root, "fig4d", intervals=True)
    fig, title = figures.build(report(root, "fig4d"))
    assert title.startswith("Figure 4(d): FID vs M\n") and len(dict(error_bars(fig))["ours, revised"]) == 2
    figures.save_png_pdf(fig, root / "reports/fig4d.png", title)
    assert (root / "reports/fig4d.pdf").is_file()


def test_where_the_paper_contradicts_itself_the_reports_say_so(root):
    """821M, T_draft 8, Random draft strategy, T_revise 2, M 2: revised FID 5.41 in Table 4 but 6.28
    in Appendix Table 3 (the paper's own numbers, /work/shared/paper)."""
    pub = yaml.safe_load((root / "configs/published.yaml").read_text())
    assert pub["table4"]["cells"][8]["fid"] == 5.41
    assert pub["tableA3"]["cells"][8]["random"]["revised"]["fid"] == 6.28
    for name in ("table4", "tableA3"):
        write_cells(root, name, suite="paper", speed=name == "table4")
        md = tables.build(report(root, name, "paper"))
        assert "5.41" in md.split("|")[-1] and "6.28" in md.split("|")[-1], name  # under the table
        assert "Table 4" in pub[name]["note"] and "Appendix Table 3" in pub[name]["note"]
    write_cells(root, "fig4a", suite="paper")
    fig, title = figures.build(report(root, "fig4a", "paper"))
    assert "5.41" in title and "6.28" in title
    from drr.reports.plotting import pyplot
    pyplot().close(fig)


# -- what a report receives: its spec (drr.workflow.report_spec) --------------------------------------

def test_the_spec_is_what_the_plan_says_as_json_with_typed_values(root):
    plan = plan_of(root, "tiny")
    spec = spec_of(root, "table4")
    assert spec == plan.report_spec("table4")            # JSON gives the plan's dict back unchanged
    cells = {c["variant"]: c for c in spec["cells"]}
    # T_draft 8 is tiny's own value, so its cell's variant is `base`; the value stays the number 8, and the
    # paper's numbers of that cell come with it (configs/published.yaml table4.cells.8)
    assert cells["base"]["values"] == {"t_draft": 8} and cells["t_draft=64"]["values"] == {"t_draft": 64}
    assert cells["base"]["published"] == {"revised": {"fid": 5.41, "s_per_sample": 0.03}}
    assert "cells" not in spec["published"] and spec["baselines"] == ["tiny-ar"]
    assert spec["runs"][-1] == {"experiment": "tiny-ar", "variant": "default",
                                "metrics": "results/metrics/tiny-ar/default.parquet",
                                "speed": "results/speed/tiny-ar/default.json"}
    assert spec["unpublished"] == ["tiny"] and spec["suite"] == "tiny" and spec["scale"] is None
    a3 = plan.report_spec("tableA3")  # a label column's text by typed value, as [value, text] pairs
    assert a3["studies"]["columns"][1]["values"][0] == ["top-c", "Top-C"]
    assert a3["cells"][0]["values"] == {"t_draft": 8, "strategy": "top-c"}
    assert a3["cells"][0]["published"]["draft"] == {"fid": 18.28, "precision": 0.67, "recall": 0.43}
    t1 = plan.report_spec("table1")  # a models table: the facts of the experiments in rows of their own
    assert t1["experiments"]["tiny"]["code_shape"] == [8, 8, 4] and t1["experiments"]["tiny"]["dataset"] == "fashion-mnist"
    assert 0.5e6 < t1["experiments"]["tiny"]["parameters"] < 2e6


def test_the_spec_hash_changes_with_what_the_report_shows_only(root):
    before = {r: report_spec.spec_hash(plan_of(root, "tiny"), r) for r in ("table3", "table4", "table1", "index")}
    assert before["table3"] == config_hash(plan_of(root, "tiny").report_spec("table3"))
    pub = root / "configs/published.yaml"
    doc = yaml.safe_load(pub.read_text())
    doc["table4"]["cells"][8]["fid"] = 5.42
    pub.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    after = {r: report_spec.spec_hash(plan_of(root, "tiny"), r) for r in before}
    assert [r for r in before if before[r] != after[r]] == ["table4"]
    # a model's size changes the parameter count that table1 prints, without torch in the hash
    exp = root / "configs/experiments/tiny.yaml"
    exp.write_text(exp.read_text() + "transformer: {model: {n_spatial: 5}}\n")
    assert report_spec.spec_hash(plan_of(root, "tiny"), "table1") != after["table1"]


def test_rows_are_found_by_their_own_columns_not_their_paths(root):
    write_cells(root, "table3")
    inputs = plan_of(root, "tiny").report_inputs("table3")
    moved = []
    for i, f in enumerate(inputs["metrics"]):  # the same rows under names that say nothing
        dst = root / f"elsewhere/{i}.parquet"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(root / f, dst)
        moved.append(str(dst))
    md = tables.build(Results(spec_of(root, "table3"), moved[::-1], root=root))
    assert table_rows(md) == table_rows(tables.build(report(root, "table3")))


def test_a_bad_spec_is_a_one_line_error_naming_file_and_field(root):
    path = root / "x.spec.json"
    path.write_text("{")
    with pytest.raises(DrrError, match=r"x.spec.json: not a report spec \(not JSON"):
        read_spec(path, ("table",))
    spec = plan_of(root, "tiny").report_spec("fig4a")
    path.write_text(json.dumps(spec))
    with pytest.raises(DrrError, match=r"x.spec.json: field 'kind' is 'figure', not table"):
        read_spec(path, ("table",))
    del spec["runs"]
    path.write_text(json.dumps(spec))
    with pytest.raises(DrrError, match=r"x.spec.json: missing field 'runs'"):
        read_spec(path, ("figure",))
    with pytest.raises(DrrError, match=r"--report table9: not a report of studies.yaml"):
        report_spec.spec(plan_of(root, "tiny"), "table9")


def test_the_index_lists_what_its_spec_says(root, monkeypatch):
    monkeypatch.chdir(root)  # the workflow's working directory: links are relative to reports/
    spec = report_spec.spec_file("index")
    report_spec.main(["--suite", "tiny", "--report", "index", "--out", spec])
    index.main(["--spec", spec, "--out", "reports/index.md"])
    md = (root / "reports/index.md").read_text()
    assert "- Table 4: FID and sampling speed vs T_draft: [table4.md](table4.md)" in md
    assert "- figA1: not made in this suite (suite tiny has no vq experiment (configs/workflow.yaml))" in md
    assert "Small-scale run" in md and "[tokenizers/" in md
