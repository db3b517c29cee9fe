"""The workflow plan (drr.workflow.plan): what an edit of the configs makes the workflow rebuild.

Three classes of edit (issue 14), each against the plan of the unedited configs:
- a key that cannot change a result (NEUTRAL: SLURM settings, logging and checkpoint intervals,
  batch sizes of encoding, generation and metrics, torch.compile, where the data lives, how many
  speed batches are timed) plans no job;
- one value of one study plans that cell (samples, metrics) and the reports that show it;
- a training hyper-parameter plans that model and everything after it, and nothing of the others.

`drr.workflow.plan.rebuilt` computes this from the same stage hashes the rules carry as their `hash`
parameter; tests/test_workflow_tiny.py checks a few of these edits with real dry runs after a real
build.
"""

import pytest
import yaml

from drr.core import stages
from drr.core.config import load_config
from drr.workflow import plan as plan_mod

import plan_jobs
from workflow_fixtures import REPO, copy_workflow


def set_key(path, dotted: str, value) -> None:
    """Set a dotted key in a YAML file (creating the sections it needs)."""
    doc = yaml.safe_load(path.read_text()) or {}
    node = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def make_plan(root, suite="tiny"):
    wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
    wf["suite"] = suite
    return plan_mod.Plan(root, wf)


@pytest.fixture
def root(tmp_path):
    return copy_workflow(tmp_path)


def rebuilt_after(root, edit, suite="tiny"):
    before = plan_jobs.jobs(make_plan(root, suite))
    edit(root)
    return plan_jobs.rebuilt(before, make_plan(root, suite))


# An edit of each of these keys changes no result (value: a new value for the tiny experiment).
NEUTRAL_EDITS = {
    "transformer.launch.timeout_min": 100,
    "transformer.launch.partition": "gpu",
    "transformer.launch.mem_gb": 64,
    "tokenizer.train.log_every": 7,
    "tokenizer.train.checkpoint_every": 11,
    "tokenizer.train.num_workers": 2,
    "tokenizer.encode.batch_size": 17,
    "transformer.train.log_every": 7,
    "transformer.train.checkpoint_every": 13,
    "transformer.train.compile": True,
    "generation.batch_size": 7,
    "generation.speed_batches": 5,
    "data.root": "/somewhere/else",
    "data.cache_dir": "/tmp/elsewhere",
    "metrics.batch_size": 9,
}


@pytest.mark.parametrize("key", sorted(NEUTRAL_EDITS))
def test_a_neutral_edit_plans_no_job(root, key):
    for name in ("tiny", "tiny-ar"):
        assert rebuilt_after(root, lambda r: set_key(r / f"configs/experiments/{name}.yaml", key,
                                                     NEUTRAL_EDITS[key])) == set(), (name, key)


def test_neutral_edits_of_a_paper_experiment_plan_no_job(root):
    """The paper suite too (submitit experiments): its SLURM settings and intervals."""
    path = root / "configs/experiments/in256-crq-821m.yaml"

    def edit(r):
        for key, value in [("transformer.launch.timeout_min", 100), ("transformer.launch.nodes", 2),
                           ("transformer.train.log_every", 5), ("generation.batch_size", 50)]:
            set_key(path, key, value)
    assert rebuilt_after(root, edit, suite="paper") == set()


def test_every_neutral_key_is_a_key_of_base_yaml():
    base = load_config(REPO / "configs/base.yaml")
    for key in stages.NEUTRAL:
        assert stages._get(base, key)[0], f"NEUTRAL key {key} is not in configs/base.yaml"
    assert set(NEUTRAL_EDITS) - {"transformer.launch.timeout_min", "transformer.launch.partition",
                                 "transformer.launch.mem_gb"} <= set(stages.NEUTRAL)


def test_one_cell_value_plans_that_cell_and_the_reports_that_show_it(root):
    def edit(r):
        path = r / "configs/studies.yaml"
        text = path.read_text()
        old = "cells: [{t_draft: [4, 8, 16, 32, 64]}]"
        assert old in text
        path.write_text(text.replace(old, "cells: [{t_draft: [4, 8, 16, 32, 48]}]"))
    got = rebuilt_after(root, edit)
    # the claims report reads Figure 4(a)'s cells (no time per sample: that is a test of the code)
    assert got == {"samples:tiny/t_draft=48", "metrics:tiny/t_draft=48", "report:fig4a", "report:claims",
                   "report:index"}


def test_a_cell_no_claim_reads_plans_no_claims_report(root):
    def edit(r):
        path = r / "configs/studies.yaml"
        old = "cells: [{M: [0, 1, 2, 3, 4, 5]}]"
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, "cells: [{M: [0, 1, 2, 3, 4, 5, 6]}]"))
    got = rebuilt_after(root, edit)
    assert {"samples:tiny/M=6", "metrics:tiny/M=6", "report:fig4b", "report:index"} <= got
    assert not any(k.startswith("speed:") for k in got)


def test_a_speed_report_cell_also_plans_its_speed_measurement(root):
    def edit(r):
        path = r / "configs/studies.yaml"
        path.write_text(path.read_text().replace("cells: [{t_draft: [8, 32, 64]}]",
                                                 "cells: [{t_draft: [8, 32, 48]}]"))
    got = rebuilt_after(root, edit)
    assert got == {"samples:tiny/t_draft=48", "metrics:tiny/t_draft=48", "speed:tiny/t_draft=48",
                   "report:table4", "report:claims", "report:index"}  # Table 4 is also a claim


def test_a_published_number_plans_only_its_report(root):
    def edit(r):
        path = r / "configs/published.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["table3"]["source"] = doc["table3"]["source"] + " (edited)"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert rebuilt_after(root, edit) == {"report:table3", "report:index"}


def test_a_training_hyper_parameter_plans_that_model_and_everything_after_it(root):
    got = rebuilt_after(root, lambda r: set_key(r / "configs/experiments/tiny.yaml",
                                                "transformer.train.lr", 5.0e-4))
    jobs = plan_jobs.jobs(make_plan(root))
    of_tiny = {k for k in jobs if k.split(":", 1)[1].split("/")[0] == "tiny"}
    assert {"transformer:tiny", "transformer_report:tiny", "samples:tiny/default", "metrics:tiny/default",
            "speed:tiny/default", "samples:tiny/t_draft=4", "metrics:tiny/t_draft=4"} <= got
    assert of_tiny <= got
    # nothing of the AR experiment's model or runs, nor the shared tokenizer, code maps, reference
    assert not any(k.startswith(("tokenizer", "codes:", "reference:")) for k in got)
    assert not any("tiny-ar" in k for k in got)
    # every report that shows a run of tiny, and only those
    reports = {k for k in got if k.startswith("report:")}
    assert "report:fig4a" in reports and "report:table1" in reports


def test_a_tokenizer_hyper_parameter_plans_both_models_but_not_the_reference(root):
    def edit(r):
        for name in ("tiny", "tiny-ar"):  # they share the tokenizer, so both must agree
            set_key(r / f"configs/experiments/{name}.yaml", "tokenizer.train.lr", 1.0e-3)
    got = rebuilt_after(root, edit)
    assert {"tokenizer:tiny-fmnist-rq8x8x4", "transformer:tiny", "transformer:tiny-ar",
            "metrics:tiny-ar/default"} <= got
    assert not any(k.startswith("reference:") for k in got)


def test_a_sampling_setting_plans_the_runs_but_no_model(root):
    got = rebuilt_after(root, lambda r: set_key(r / "configs/experiments/tiny.yaml",
                                                "sampling.revise.temperature", 0.9))
    assert "samples:tiny/default" in got and "metrics:tiny/t_draft=4" in got
    assert not any(k.startswith(("transformer", "tokenizer", "codes", "reference")) for k in got)
    assert not any("tiny-ar" in k for k in got)


def test_the_resume_check_and_the_shard_identity_share_the_plan(tmp_path):
    """drr.core.training's resume check is first_difference over the stage keys: a neutral key never
    stops a resume, a hyper-parameter does; the generation shard identity leaves batch size out."""
    base = load_config(REPO / "configs/experiments/tiny.yaml")
    edited = load_config(REPO / "configs/experiments/tiny.yaml",
                         {"transformer": {"train": {"log_every": 3, "checkpoint_every": 9},
                                          "launch": {"timeout_min": 5}}})
    assert stages.first_difference(base, edited, "transformer") is None
    lr = load_config(REPO / "configs/experiments/tiny.yaml", {"transformer": {"train": {"lr": 0.5}}})
    assert stages.first_difference(base, lr, "transformer").startswith("transformer.train.lr 0.001")
    shards = stages.stage_config(base, "samples")
    assert "batch_size" not in shards["generation"] and "speed_batch_size" not in shards["generation"]
    assert stages.stage_config(base, "speed")["generation"]["speed_batch_size"] == 100


# -- scales: size overlays (configs/scales/<scale>/) -----------------------------------------------

def test_a_scale_layers_its_overlays_on_every_experiment_of_the_suite():
    wf = yaml.safe_load((REPO / "configs/workflow.yaml").read_text())
    plain = plan_mod.Plan(REPO, dict(wf, suite="paper"))
    scaled = plan_mod.Plan(REPO, dict(wf, suite="paper", scale="rehearsal"))
    assert sorted(scaled.experiments) == sorted(plain.experiments)
    cfg = scaled.experiments["in256-crq-1400m"]
    assert cfg["data"]["resolution"] == 32 and cfg["transformer"]["model"]["d_model"] == 64
    assert cfg["tokenizer"]["checkpoint"].startswith("results/rehearsal/weights/")
    assert scaled.experiments["in256-cvq-350m"]["tokenizer"]["model"]["ch_mult"] == [1, 2]
    # what a scale keeps: the experiments' rules and sampling, so the same cells and reports
    assert cfg["sampling"] == plain.experiments["in256-crq-1400m"]["sampling"]
    assert cfg["transformer"]["launch"]["executor"] == "slurm"
    assert [c.variant for c in scaled.cells("fig4a")] == [c.variant for c in plain.cells("fig4a")]
    assert scaled.config_args("in256-cvq-350m") == [
        "--config", "configs/experiments/in256-cvq-350m.yaml",
        "--config", "configs/scales/rehearsal/all.yaml",
        "--config", "configs/scales/rehearsal/in256-cvq-350m.yaml"]
    assert scaled.config_value("in256-cvq-350m")[1::2] == ["--config", "--config"]
    # the jobs resolve what the plan resolved: every stage hash differs from the paper's
    assert scaled.hash("transformer", "in256-crq-1400m") != plain.hash("transformer", "in256-crq-1400m")


def test_without_a_scale_a_rule_parameter_keeps_its_old_value():
    # a run made before scales existed stays finished: its `config` parameter was the file name
    plan = plan_mod.Plan(REPO)
    assert plan.config_value("tiny") == "configs/experiments/tiny.yaml"
    assert plan.variant_args("tiny", "default") == ["--config", "configs/experiments/tiny.yaml"]


def test_an_unknown_scale_is_one_line_naming_the_key(root):
    wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
    with pytest.raises(plan_mod.DrrError, match=r"configs/workflow.yaml: key 'scale' is 'huge': no folder "
                                                r"configs/scales/huge/ \(scales: rehearsal; null for none\)"):
        plan_mod.Plan(root, dict(wf, scale="huge"))


def test_a_bad_key_in_an_overlay_names_the_overlay_file(root):
    set_key(root / "configs/scales/rehearsal/all.yaml", "transformer.model.d_modle", 8)
    wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
    with pytest.raises(plan_mod.DrrError, match=r"configs/scales/rehearsal/all.yaml: unknown key "
                                                r"'transformer.model.d_modle' \(did you mean 'transformer.model.d_model'\?\)"):
        plan_mod.Plan(root, dict(wf, suite="paper", scale="rehearsal"))


def test_a_class_grid_shows_every_class_of_a_small_label_set():
    wf = yaml.safe_load((REPO / "configs/workflow.yaml").read_text())
    assert plan_mod.Plan(REPO, dict(wf, suite="small")).grid_classes("small") == list(range(10))
    assert plan_mod.Plan(REPO, dict(wf, suite="paper")).grid_classes("in256-crq-821m") == [7, 9, 200, 812, 933, 980]


# -- the small suite's choices (configs/studies.yaml selections, configs/workflow.yaml select) -------

def studies_edit(old: str, new: str):
    """An edit for rebuilt_after: `old` replaced by `new` in configs/studies.yaml (which must hold it)."""
    def edit(r):
        path = r / "configs/studies.yaml"
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
    return edit


def test_a_guidance_grid_value_plans_its_validation_run_the_choice_and_the_runs_that_read_it(root):
    got = rebuilt_after(root, studies_edit("values: [1.0, 1.4, 1.8, 2.0]", "values: [1.0, 1.4, 1.8, 2.5]"),
                        suite="small")
    assert {"samples:small/guidance-2.5", "metrics:small/guidance-2.5", "select:small/guidance",
            "samples:small-ar/guidance-2.5", "select:small-ar/guidance", "samples:small/default",
            "samples:small-seed1/default", "samples:small/t_draft=8", "metrics:small-ar-seed1/default"} <= got
    # no model, no sweep, and not the runs that set their sampling themselves
    assert not any(k.startswith(("transformer", "sweep:", "tokenizer", "codes", "reference")) for k in got)
    assert not {"samples:small/plain", "samples:small/guidance-1.4", "select:small/lr"} & got


def test_a_learning_rate_value_plans_its_sweep_run_and_every_model_that_reads_the_choice(root):
    got = rebuilt_after(root, studies_edit("values: [3.0e-4, 1.0e-3, 3.0e-3]", "values: [3.0e-4, 1.0e-3, 1.0e-2]"),
                        suite="small")
    assert {"sweep:small/lr-0.01", "sweep:small-ar/lr-0.01", "select:small/lr", "transformer:small",
            "transformer:small-seed1", "transformer:small-ar-seed1", "select:small/guidance",
            "metrics:small/plain"} <= got
    assert not {"sweep:small/lr-0.001", "tokenizer:small-fmnist-rq8x8x4"} & got


def test_the_small_suite_plans_the_protocols_runs():
    jobs = plan_jobs.jobs(make_plan(REPO, "small"))
    count = lambda prefix: sum(k.startswith(prefix) for k in jobs)
    assert count("transformer:") == 4 and count("sweep:") == 6 and count("select:") == 4
    assert {f"samples:{e}/{v}" for e in ("small", "small-ar") for v in ("plain", "guidance-1.0", "guidance-2.0")} <= set(jobs)
    assert "samples:small-seed1/plain" not in jobs
    assert "select:small/lr" in jobs["transformer:small-seed1"].needs
    assert {"flops:small/t_draft=8", "flops:small-ar/default", "transformer_report:small-ar-seed1",
            "select:small-ar/guidance", "metrics:small-ar/plain"} <= set(jobs["report:claims"].needs)
