"""Settings the workflow chooses (docs/small-suite.md, protocol v6 §3, §5): the plan's seeds,
selections and named runs (drr.workflow.plan), the choice program (drr.workflow.select), the config
layer a job reads the choice from, the first sample index of a validation run
(generation.first_index), and the rules that build it all from one command (dry runs)."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from drr.core.cli import config_parser, resolve
from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.metrics.score import ROW_FIELDS, write_rows
from drr.workflow import plan as plan_mod
from drr.workflow import select as S

from transformer_fixtures import REPO, make_tokenizer_and_codes, tiny_config
from workflow_fixtures import copy_workflow, planned_jobs


def make_plan(root=REPO, suite="small"):
    wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
    wf["suite"] = suite
    return plan_mod.Plan(root, wf)


@pytest.fixture(scope="module")
def small():
    return make_plan()


@pytest.fixture
def root(tmp_path):
    return copy_workflow(tmp_path)


def edit_yaml(path, change):
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def job_config(args, root=REPO):
    """The config a job resolves from these --config/--set arguments (drr.core.cli), relative
    paths from `root`."""
    args = [str(root / a) if prev == "--config" else a for prev, a in zip([None, *args], args)]
    return resolve(config_parser("test").parse_args(args))


# --- the plan ------------------------------------------------------------------------------------

def test_the_small_suite_has_two_seeds_of_each_model_sharing_one_tokenizer(small):
    assert sorted(small.experiments) == ["small", "small-ar", "small-ar-seed1", "small-seed1"]
    assert small.seeds_of("small") == ["small", "small-seed1"]
    assert small.seeds_of("small-ar") == ["small-ar", "small-ar-seed1"]
    assert small.tokenizer_of == {"small-fmnist-rq8x8x4": "small"}   # built by seed 0
    assert small.experiments["small-seed1"]["seed"] == 1
    # the seed-1 model trains and samples with its own seed: its own model and runs
    assert small.hash("transformer", "small-seed1") != small.hash("transformer", "small")
    assert small.hash("samples", "small-seed1") != small.hash("samples", "small")
    assert small.reference_of["small-seed1"] == small.reference_of["small"]
    # the inpainting comparison puts each AR seed beside the contextual model of the same seed
    assert small.ar_partner == {"small-ar": "small", "small-ar-seed1": "small-seed1"}


def test_every_model_reads_the_choices_of_its_seed_0_experiment(small):
    assert small.select_source == {"small": "small", "small-seed1": "small",
                                   "small-ar": "small-ar", "small-ar-seed1": "small-ar"}
    assert small.config_value("small-seed1", "train") == [
        "configs/experiments/small-seed1.yaml", "--config", "results/select/small/lr.yaml"]
    assert small.transformer_inputs("small-ar-seed1")["select_lr"] == "results/select/small-ar/lr.yaml"
    assert "select_lr" not in small.transformer_inputs("small", choices=False)
    # sampling of the default variant and of every ablation variant reads the guidance choice; a named one does not
    assert small.variant_args("small", "default") == [
        "--config", "configs/experiments/small.yaml", "--config", "results/select/small/guidance.yaml"]
    assert small.variant_args("small", "t_draft=8")[:4] == small.variant_args("small", "default")
    assert small.sampling_inputs("small", "t_draft=8")["select_guidance"] == "results/select/small/guidance.yaml"
    for variant in ("plain", "guidance-1.4"):
        assert "select_guidance" not in small.sampling_inputs("small", variant)
        assert "results/select/small/guidance.yaml" not in small.variant_args("small", variant)


def test_tiny_and_paper_have_no_choices_and_unchanged_arguments():
    for suite in ("tiny", "paper"):
        plan = make_plan(suite=suite)
        assert plan.select_source == {} and plan.named == {} and plan.seed_of == {}
        for name in plan.experiments:
            assert plan.config_value(name, "train") == plan.config_value(name) == plan.config_value(name, "sample")
            assert plan.sweeps(name) == {}
            assert plan.transformer_inputs(name) == plan.transformer_inputs(name, choices=False)
    tiny = make_plan(suite="tiny")
    assert tiny.variant_args("tiny", "default") == ["--config", "configs/experiments/tiny.yaml"]
    assert "guidance-" not in tiny.variant_pattern() and "plain" not in tiny.variant_pattern()


def test_the_learning_rate_sweep_is_three_short_runs_per_model(small):
    assert sorted(small.sweeps("small")) == ["lr-0.0003", "lr-0.001", "lr-0.003"]
    assert small.sweeps("small-seed1") == {}                  # chosen on seed 0 only
    cfg = small.sweep_config("small-ar", "lr-0.003")
    train = cfg["transformer"]["train"]
    assert (train["lr"], train["steps"], train["warmup_steps"], train["snapshot_every"]) == (0.003, 500, 50, None)
    assert train["eval_every"] == 125 and cfg["seed"] == 0
    # the job resolves exactly the plan's config from the rule's arguments
    assert job_config(small.sweep_args("small-ar", "lr-0.003")) == cfg
    assert small.selection_inputs("small", "lr") == {"candidates": [
        f"results/select/small/lr-{v}/checkpoint.pt" for v in ("0.0003", "0.001", "0.003")]}


def test_guidance_validation_runs_start_at_sample_1000000(small):
    for exp, key in (("small", ("sampling", "guidance_scale")), ("small-ar", ("sampling", "ar", "guidance_scale"))):
        for value in (1.0, 1.4, 1.8, 2.0):
            cfg = small.resolved(exp, f"guidance-{value}")
            node = cfg
            for k in key:
                node = node[k]
            assert node == value
            assert cfg["generation"]["first_index"] == 1000000 and cfg["generation"]["num_samples"] == 200
            assert not cfg["generation"]["save_drafts"]
            assert job_config(small.variant_args(exp, f"guidance-{value}")) == cfg
        assert small.num_shards(exp, "guidance-1.4") == 1
        assert small.selection_inputs(exp, "guidance") == {"candidates": [
            f"results/metrics/{exp}/guidance-{v}.parquet" for v in ("1.0", "1.4", "1.8", "2.0")]}
    assert small.selection_args("small-ar", "guidance") == [
        "--name", "guidance", "--experiment", "small-ar", "--key", "sampling.ar.guidance_scale",
        "--lowest", "fid", "--values", "1.0", "1.4", "1.8", "2.0"]


def test_the_plain_rows_change_only_their_sampling(small):
    ctx = small.resolved("small", "plain")
    assert ctx["sampling"]["guidance_in"] == "none"
    assert ctx["sampling"]["draft"]["temperature"] == ctx["sampling"]["revise"]["temperature"] == 1.0
    assert ctx["generation"]["num_samples"] == 300 and ctx["generation"]["first_index"] == 0
    ar = small.resolved("small-ar", "plain")["sampling"]["ar"]
    assert ar == {"temperature": 1.0, "top_k": None, "top_p": None, "guidance_scale": None}
    assert job_config(small.variant_args("small-ar", "plain")) == small.resolved("small-ar", "plain")
    # the official recipe is the default run's (its guidance scale from the choice file)
    assert small.experiments["small-ar"]["sampling"]["ar"]["top_p"] == 0.92
    assert set(small.named) == {"small", "small-ar"}


def test_bad_seeds_selections_and_runs_are_one_line_errors(root):
    wf = root / "configs/workflow.yaml"
    cases = [
        (lambda d: d["suites"]["small"]["seeds"].update(small=["tiny"]),
         r"suites.small.seeds.small: 'tiny' is not one of its experiments"),
        (lambda d: d["suites"]["small"].update(select=["small-seed1"]),
         r"suites.small.select: 'small-seed1' is a seed of 'small' and takes its choices; select 'small'"),
        (lambda d: d["suites"]["small"]["runs"].update(greedy=["small"]),
         r"suites.small.runs: 'greedy' is not a run of studies.yaml `runs` \(plain\)"),
    ]
    for change, message in cases:
        text = wf.read_text()
        edit_yaml(wf, change)
        with pytest.raises(DrrError, match=message) as e:
            make_plan(root)
        assert "\n" not in str(e.value)
        wf.write_text(text)
    seed1 = root / "configs/experiments/small-seed1.yaml"
    seed1.write_text(seed1.read_text() + "sampling:\n  t_draft: 8\n")
    with pytest.raises(DrrError, match=r"suites.small.seeds.small: configs/experiments/small-seed1.yaml differs "
                                       r"from configs/experiments/small.yaml in key 'sampling.t_draft' \(8 vs 64\); "
                                       r"another seed changes `seed` only"):
        make_plan(root)
    seed1.write_text("extends: small\nseed: 0\n")
    with pytest.raises(DrrError, match=r"small-seed1.yaml has the same seed as"):
        make_plan(root)
    seed1.write_text("extends: small\nseed: 1\n")
    studies = root / "configs/studies.yaml"
    edit_yaml(studies, lambda d: d["selections"]["lr"]["settings"].update({"transformer.train.stepz": 5}))
    with pytest.raises(DrrError, match=r"studies.yaml: selections.lr.settings: 'transformer.train.stepz' is not "
                                       r"a setting of configs/base.yaml"):
        make_plan(root)


# --- the choice ---------------------------------------------------------------------------------

def sweep_run(folder, steps: int, curve: dict, extra_lines=()):
    """A stand-in for a finished training run: a checkpoint with its trained steps, and the
    training log beside it with held-out NLLs at the given steps."""
    folder.mkdir(parents=True)
    torch.save({"provenance": {"trained_steps": steps}}, folder / "checkpoint.pt")
    lines = [json.dumps({"step": s, "loss": 3.0, "lr": 1e-3}) for s in curve]
    lines += [json.dumps({"step": s, "heldout_nll": v}) for s, v in curve.items()]
    (folder / "metrics.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return folder / "checkpoint.pt"


def run_select(tmp_path, *args):
    out = {"yaml": tmp_path / "choice.yaml", "json": tmp_path / "choice.json"}
    S.main([*args, "--yaml", str(out["yaml"]), "--json", str(out["json"])])
    return yaml.safe_load(out["yaml"].read_text()), json.loads(out["json"].read_text()), out


def test_the_lowest_heldout_nll_at_the_last_step_wins(tmp_path):
    runs = [sweep_run(tmp_path / f"lr-{v}", 1000, {500: a, 1000: b})
            for v, a, b in (("0.0003", 1.4, 1.9), ("0.001", 1.5, 1.7), ("0.003", 1.6, 1.8))]
    chosen, record, out = run_select(tmp_path, "--name", "lr", "--experiment", "small", "--key", "transformer.train.lr",
                                     "--lowest", "heldout_nll", "--values", "0.0003", "0.001", "0.003",
                                     "--candidates", *map(str, runs))
    # the last step decides: 0.001 is lowest at step 1000, 0.0003 was lowest at step 500
    assert chosen == {"transformer": {"train": {"lr": 0.001}}}
    assert record["chosen"] == 0.001 and record["chosen_run"] == "lr-0.001" and not record["at_edge"]
    assert [c["value"] for c in record["candidates"]] == [1.9, 1.7, 1.8]
    assert record["candidates"][0]["heldout_curve"] == [[500, 1.4], [1000, 1.9]]
    assert record["provenance"]["git_commit"]
    assert out["yaml"].read_text().startswith("# lr of small, chosen by drr.workflow.select: lowest held-out NLL")
    # the layer is what a job reads after its experiment file
    cfg = load_config(REPO / "configs/experiments/small.yaml", out["yaml"])
    assert cfg["transformer"]["train"]["lr"] == 0.001


def test_a_winner_at_the_edge_is_taken_and_flagged_and_ties_go_to_the_first(tmp_path):
    runs = [sweep_run(tmp_path / f"r{i}", 10, {10: v}) for i, v in enumerate((1.0, 1.2, 1.0))]
    _, record, _ = run_select(tmp_path, "--name", "lr", "--experiment", "x", "--key", "transformer.train.lr",
                              "--lowest", "heldout_nll", "--values", "0.0003", "0.001", "0.003",
                              "--candidates", *map(str, runs))
    assert record["chosen"] == 0.0003 and record["at_edge"]
    assert S.choose([1, 2, 3], [5.0, 4.0, 4.0]) == 1


def metrics_file(path, experiment, variant, fid):
    row = {name: None for name, _, _ in ROW_FIELDS}
    row.update(experiment=experiment, variant=variant, phase="revised", n_samples=1000, fid=fid,
               fid_lo=fid - 1, fid_hi=fid + 1, precision=0.5, recall=0.4)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rows([row], path)
    return path


def test_the_lowest_validation_fid_wins(tmp_path):
    files = [metrics_file(tmp_path / f"guidance-{v}.parquet", "small-ar", f"guidance-{v}", fid)
             for v, fid in (("1.0", 60.0), ("1.4", 52.5), ("1.8", 51.0), ("2.0", 53.0))]
    chosen, record, _ = run_select(tmp_path, "--name", "guidance", "--experiment", "small-ar",
                                   "--key", "sampling.ar.guidance_scale", "--lowest", "fid",
                                   "--values", "1.0", "1.4", "1.8", "2.0", "--candidates", *map(str, files))
    assert chosen == {"sampling": {"ar": {"guidance_scale": 1.8}}}
    assert record["chosen_score"] == 51.0 and record["candidates"][2]["fid_lo"] == 50.0
    assert record["rule"] == "lowest FID of the validation samples (revised images)"


def test_bad_candidates_are_one_line_errors_naming_the_file_and_field(tmp_path, capsys):
    base = ["--name", "lr", "--experiment", "small", "--key", "transformer.train.lr", "--lowest", "heldout_nll"]
    short = sweep_run(tmp_path / "short", 1000, {750: 1.0})                      # never evaluated at its last step
    ok = sweep_run(tmp_path / "ok", 1000, {1000: 1.0})
    nan = sweep_run(tmp_path / "nan", 1000, {1000: float("nan")})
    wrong_run = metrics_file(tmp_path / "m.parquet", "small", "guidance-1.4", 50.0)
    cases = [
        ([*base, "--values", "0.001", "0.003", "--candidates", str(short), str(ok)],
         f"{tmp_path}/short/metrics.jsonl: no field 'heldout_nll' at step 1000"),
        ([*base, "--values", "0.001", "0.003", "--candidates", str(nan), str(ok)],
         "field 'heldout_nll' is nan, not a finite number"),
        ([*base, "--values", "0.001", "--candidates", str(ok)], "a selection chooses among two or more"),
        ([*base, "--values", "0.001", "0.003", "--candidates", str(ok)], "give one candidate per value"),
        ([*base, "--values", "0.001", "0.003", "--candidates", str(ok), str(tmp_path / "gone.pt")],
         "gone.pt: transformer checkpoint not found"),
        (["--name", "guidance", "--experiment", "small", "--key", "sampling.guidance_scale", "--lowest", "fid",
          "--values", "1.0", "1.4", "--candidates", str(wrong_run), str(wrong_run)],
         "m.parquet: field 'variant' is 'guidance-1.4', not the candidate run 'guidance-1.0'"),
        ([*base[:5], "transformer.train.lrr", *base[6:], "--values", "0.001", "0.003", "--candidates", str(ok), str(ok)],
         "--key transformer.train.lrr: --set: unknown key 'transformer.train.lrr'"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            S.main([*args, "--yaml", str(tmp_path / "c.yaml"), "--json", str(tmp_path / "c.json")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, (message, err)
        assert not (tmp_path / "c.yaml").exists()


def test_a_training_run_given_the_choice_records_it_in_its_checkpoint(tmp_path):
    """The layer is read like any config file: the checkpoint's config (its provenance) holds the
    chosen value."""
    from drr.core.config import save_config
    from drr.transformer.train import main as train_main

    torch.set_num_threads(1)
    cfg = tiny_config("transformer.train.steps=2")
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg)
    save_config(cfg, tmp_path / "exp.yaml")
    (tmp_path / "lr.yaml").write_text("transformer:\n  train:\n    lr: 0.0042\n")
    out = tmp_path / "run/checkpoint.pt"
    train_main(["--config", str(tmp_path / "exp.yaml"), "--config", str(tmp_path / "lr.yaml"),
                "--tokenizer", str(tok), "--codes", str(codes), "--out", str(out)])
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["config"]["transformer"]["train"]["lr"] == 0.0042
    saved = yaml.safe_load((out.parent / "config.yaml").read_text())
    assert saved["transformer"]["train"]["lr"] == 0.0042


# --- the first sample index -----------------------------------------------------------------------

def test_a_run_from_a_first_index_has_the_samples_of_those_indices(tmp_path):
    from drr.sampling.generate import generate
    from drr.transformer.train import train

    torch.set_num_threads(1)
    cfg = tiny_config("transformer.train.steps=2")
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg)
    model = train(cfg, tok, codes, tmp_path / "t.pt")

    def run(out, *settings):
        c = tiny_config("transformer.train.steps=2", "generation.num_samples=6", "generation.shard_size=4", *settings)
        generate(c, tok, model, tmp_path / out)
        with np.load(tmp_path / out / "samples.npz") as z:
            return {k: z[k] for k in z.files}

    whole = run("whole")
    later = run("later", "generation.first_index=3", "generation.num_samples=3")
    assert later["index"].tolist() == [3, 4, 5]
    for key in ("arr_0", "codes", "labels", "index"):
        assert np.array_equal(later[key], whole[key][3:]), key
    far = run("far", "generation.first_index=1000000", "generation.num_samples=2")
    assert far["index"].tolist() == [1000000, 1000001] and far["labels"].tolist() == [1000000 % 3, 1000001 % 3]


def test_first_index_0_keeps_every_stage_hash():
    from drr.core.stages import STAGES, stage_hash

    cfg = load_config(REPO / "configs/experiments/tiny.yaml")
    moved = load_config(REPO / "configs/experiments/tiny.yaml", {"generation": {"first_index": 5}})
    assert stage_hash(moved, "samples") != stage_hash(cfg, "samples")
    assert all(stage_hash(load_config(REPO / "configs/experiments/tiny.yaml", {"generation": {"first_index": 0}}), s)
               == stage_hash(cfg, s) for s in STAGES)


# --- one command builds it all --------------------------------------------------------------------

def test_one_dry_run_plans_the_sweeps_the_choices_and_the_runs_that_read_them(tmp_path):
    cwd = copy_workflow(tmp_path)
    counts = planned_jobs(cwd, "results/metrics/small-seed1/default.parquet", "--config", "suite=small")
    # seed 1's default run needs seed 0's two choices: lr (3 sweep runs) and guidance (4 validation
    # sets, sampled by the seed-0 model trained at the chosen lr)
    assert counts["sweep_transformer"] == 3 and counts["select_setting"] == 2
    assert counts["train_transformer"] == 2                      # small (for the validation) and small-seed1
    assert counts["compute_metrics"] == 5                        # 4 validation sets and the target
    assert counts["merge_samples"] == 5 and counts["generate_shard"] == 4 * 1 + 1
