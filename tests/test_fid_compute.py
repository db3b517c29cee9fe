"""FID against training compute (docs/small-suite.md, protocol v6 §2, §8): the analytic training
FLOPs of both kinds (drr.transformer.flops), the core-seconds of a training log, the report that
puts both models in one figure (drr.reports.fid_compute), and the rules that make it."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from drr.core.errors import DrrError
from drr.reports import fid_compute as R
from drr.transformer import flops as F
from drr.transformer.build import build_transformer
from drr.transformer.model import TransformerConfig, sample_masks


def small_model(kind="contextual", cond="class") -> TransformerConfig:
    return TransformerConfig(n_spatial=2, n_depth=1, d_model=64, head_dim=32, code_shape=(4, 4, 3),
                             codebook_size=16, embed_dim=8, kind=kind, cond_type=cond, num_classes=10,
                             vocab_size=50, text_length=5)


# --- analytic training FLOPs ---------------------------------------------------------------------

def test_the_expected_mask_count_is_that_of_eq_10():
    assert F.expected_masked(64) == pytest.approx(41.221, abs=1e-3)
    assert F.expected_masked(64) - 128 / math.pi == pytest.approx(0.5, abs=0.05)   # 2N/π + about 1/2
    got = sample_masks(100_000, 64, torch.Generator().manual_seed(0)).sum(1).double().mean().item()
    assert got == pytest.approx(F.expected_masked(64), abs=0.1)    # standard error about 0.06
    assert F.expected_masked(1) == 1.0


@pytest.mark.parametrize("kind", ["contextual", "ar"])
@pytest.mark.parametrize("cond", ["class", "text"])
def test_the_forward_count_is_what_torch_counts_plus_the_attention(kind, cond):
    """torch's FLOP counter over the model's forward at a fixed mask sees every matrix product but
    not the CPU attention kernel: with the attention added (4·t·s·d a block) it is the analytic
    count, for both kinds and both condition types."""
    c = small_model(kind, cond)
    model = build_transformer(c, torch.randn(c.codebook_size, c.embed_dim))
    b, n, scored = 2, c.num_positions, 7
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, c.codebook_size, (b, n, c.depth), generator=g)
    cond_ids = torch.randint(1, c.cond_vocab, (b, c.cond_length), generator=g)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, : n if kind == "ar" else scored] = True
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(codes, mask, cond_ids)
    m = int(mask[0].sum())
    seq = c.cond_length + n - (kind == "ar")
    attention = 4 * c.d_model * (c.n_spatial * seq * seq + c.n_depth * m * c.depth ** 2)
    assert counter.get_total_flops() / b + attention == F.forward_flops_per_sample(c, m)
    assert F.train_flops_per_sample(c) == 3 * F.forward_flops_per_sample(c)


def test_training_flops_are_linear_in_steps_and_batch():
    for kind in ("contextual", "ar"):
        c = small_model(kind)
        one = F.train_flops(c, 1, 1)
        assert F.train_flops(c, 10, 32) == pytest.approx(320 * one)
        assert F.train_flops(c, 10, 64) == pytest.approx(2 * F.train_flops(c, 10, 32))
        assert F.train_flops(c, 0, 32) == 0


def test_contextual_against_ar_of_the_same_size():
    """The AR model scores every position (N against E|m|), reads one stack fewer and projects each
    depth's embedding apart; the difference is exactly those terms."""
    ctx, ar = small_model("contextual"), small_model("ar")
    d, lc, n, depth, nz, k = 64, 1, 16, 3, 8, 16
    m = F.expected_masked(n)

    def block(tokens, seq):
        return 2 * tokens * 12 * d * d + 4 * tokens * seq * d

    per_position = (ctx.n_depth * block(depth, depth) + 2 * (depth - 1) * nz * d + 2 * depth * d * k)
    want = (ctx.n_spatial * (block(lc + n - 1, lc + n - 1) - block(lc + n, lc + n))
            + 2 * (n - 1) * depth * nz * d - 2 * n * nz * d + (n - m) * per_position)
    assert F.forward_flops_per_sample(ar) - F.forward_flops_per_sample(ctx) == pytest.approx(want)
    assert F.train_flops_per_sample(ar) > F.train_flops_per_sample(ctx)
    # at the same number of scored positions only the spatial sequence and the input projection differ
    assert F.forward_flops_per_sample(ar, m) - F.forward_flops_per_sample(ctx, m) == pytest.approx(
        want - (n - m) * per_position)


def test_the_small_suite_models():
    """small and small-ar have the same blocks; per code map the AR step costs 1.25x the
    contextual one (every position scored against E|m| = 41.2 of 64)."""
    from drr.core.config import REPO, load_config
    cfgs = {e: TransformerConfig.from_experiment(load_config(REPO / f"configs/experiments/{e}.yaml"))
            for e in ("small", "small-ar")}
    ctx, ar = (F.train_flops_per_sample(cfgs[e]) for e in ("small", "small-ar"))
    assert ctx == pytest.approx(927.07e6, rel=1e-4) and ar == pytest.approx(1159.10e6, rel=1e-4)
    assert ar / ctx == pytest.approx(1.25, abs=0.01)


# --- core-seconds from the training log ----------------------------------------------------------


def write_log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_core_seconds_of_each_logged_interval_from_its_tokens_per_second(tmp_path):
    tokens = 32 * 64 * 4            # batch x H·W x D
    log = write_log(tmp_path / "metrics.jsonl", [
        {"step": 50, "lr": 1e-4, "loss": 5.0, "masked_fraction": 0.6, "tokens_per_s": tokens / 0.5},
        {"step": 50, "heldout_nll": 5.1},                       # held-out rows carry no rate
        {"step": 100, "lr": 2e-4, "loss": 4.0, "masked_fraction": 0.6, "tokens_per_s": tokens / 1.0},
        {"step": 130, "lr": 2e-4, "loss": 4.0, "masked_fraction": 0.6, "tokens_per_s": tokens / 2.0},
    ])
    rows = R.read_log(log)
    assert [r["step"] for r in rows] == [50, 100, 130]
    curve = R.core_seconds(rows, tokens)
    assert curve == [(0, 0.0), (50, 25.0), (100, 75.0), (130, 135.0)]
    assert R.seconds_at(curve, 75) == 50.0                       # inside 50..100 at 1 s a step
    assert R.seconds_at(curve, 120) == 115.0                     # inside 100..130 at 2 s a step
    assert R.seconds_at(curve, 130) == 135.0 and R.seconds_at(curve, 0) == 0.0
    assert R.core_seconds(rows, tokens, cores=2)[-1] == (130, 270.0)
    with pytest.raises(DrrError, match="logs steps up to 130, not step 131"):
        R.seconds_at(curve, 131)


def test_a_bad_training_log_is_one_line_naming_it(tmp_path):
    with pytest.raises(DrrError, match="training log not found"):
        R.read_log(tmp_path / "none.jsonl")
    bad = write_log(tmp_path / "a.jsonl", [{"step": 50, "tokens_per_s": 10.0},
                                           {"step": 50, "tokens_per_s": 9.0}])
    with pytest.raises(DrrError, match="step 50 is logged twice"):
        R.read_log(bad)
    with pytest.raises(DrrError, match="no row with tokens_per_s"):
        R.read_log(write_log(tmp_path / "b.jsonl", [{"step": 50, "heldout_nll": 3.0}]))
    (tmp_path / "c.jsonl").write_text('{"step": 50, "tokens_per_s": 1.0}\n{"step": 1\n')
    with pytest.raises(DrrError, match="line 2 is not JSON"):
        R.read_log(tmp_path / "c.jsonl")


# --- the report from synthetic steps, logs and configs -------------------------------------------

MAPS = 1200                         # training rows of the stand-in code map: an epoch is 37.5 steps


def fid_row(steps, phase, fid, key):
    return {"steps": steps, "phase": phase, "n_samples": 1000, "fid": fid, "fid_lo": fid - 2,
            "fid_hi": fid + 3,
            "precision": 0.5, "recall": 0.3, "boot_key": key, "boot_fid": np.full(20, fid),
            "checkpoint": f"ck-{steps}"}


def model_files(root, name, fids, seconds_per_step, log_every=50):
    """config.yaml, metrics.jsonl and an empty checkpoint in results/transformers/<name>/, and the
    steps JSON results/steps/<name>.json; fids {step: (draft FID or None, revised FID)}."""
    from drr.core.config import REPO, load_config, save_config
    from drr.sampling.steps import summary

    cfg = load_config(REPO / f"configs/experiments/{name}.yaml")
    run = root / "results/transformers" / name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    (run / "checkpoint.pt").write_bytes(b"")
    last = cfg["transformer"]["train"]["steps"]
    tokens = 32 * 64 * 4
    logged = [*range(log_every, last, log_every), last]
    write_log(run / "metrics.jsonl", [{"step": s, "loss": 3.0, "tokens_per_s": tokens / seconds_per_step}
                                      for s in logged] + [{"step": last, "heldout_nll": 3.2}])
    rows = [fid_row(s, p, f, name) for s, (d, r) in fids.items() for p, f in (("draft", d), ("revised", r))
            if f is not None]
    record = {"table": summary(rows), "experiment": name, "kind": cfg["transformer"]["model"]["kind"],
              "samples": 1000, "sampling": cfg["sampling"], "transformer": str(run / "checkpoint.pt")}
    steps = root / "results/steps" / f"{name}.json"
    steps.parent.mkdir(parents=True, exist_ok=True)
    steps.write_text(json.dumps(record, default=lambda a: a.tolist()))
    return steps, run / "checkpoint.pt"


@pytest.fixture
def suite_files(tmp_path):
    from drr.codes.store import CodeMapWriter
    codes = tmp_path / "results/codes/train"
    w = CodeMapWriter(codes, {"code_shape": [1, 1, 1], "codebook_size": 4, "tokenizer": "t",
                              "tokenizer_sha256": "a" * 64, "dataset": "d", "split": "train",
                              "num_rows": MAPS}, 500)
    w.write(np.arange(MAPS), np.zeros((MAPS, 1, 1, 1), dtype=np.int64), np.zeros(MAPS, dtype=np.int64))
    w.finish()
    ctx = model_files(tmp_path, "small", {625: (160.0, 120.0), 1250: (140.0, 100.0), 1875: (130.0, 90.0)},
                      0.5)
    ar = model_files(tmp_path, "small-ar", {250: (None, 150.0), 500: (None, 115.0), 625: (None, 105.0)},
                     0.6)
    return tmp_path, codes, ctx, ar


def test_the_report_puts_both_models_in_one_figure_and_table(suite_files):
    root, codes, (ctx_steps, ctx_ck), (ar_steps, ar_ck) = suite_files
    out = root / "reports/fid_compute.png"
    R.main(["--steps", str(ctx_steps), str(ar_steps), "--transformers", str(ctx_ck), str(ar_ck),
            "--codes", str(codes), str(codes), "--out", str(out)])
    md = (root / "reports/fid_compute.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| `small")]
    # 1875 steps: 1850 steps at 0.5 s, then 25 more at the 1875-row's rate, 0.5 s: 937.5 s;
    # FLOPs: steps x 32 maps x the analytic count of one code map
    from drr.core.config import REPO, load_config
    c = TransformerConfig.from_experiment(load_config(REPO / "configs/experiments/small.yaml"))
    a = TransformerConfig.from_experiment(load_config(REPO / "configs/experiments/small-ar.yaml"))
    expected = [(c, "`small` (Contextual RQ-Transformer)", 625, "16.67", "312", "160.00 [158.00, 163.00]",
                 "120.00 [118.00, 123.00]"),
                (c, "`small` (Contextual RQ-Transformer)", 1250, "33.33", "625", "140.00 [138.00, 143.00]",
                 "100.00 [98.00, 103.00]"),
                (c, "`small` (Contextual RQ-Transformer)", 1875, "50.00", "938", "130.00 [128.00, 133.00]",
                 "90.00 [88.00, 93.00]"),
                (a, "`small-ar` (AR RQ-Transformer)", 250, "6.67", "150", "— (no draft)",
                 "150.00 [148.00, 153.00]"),
                (a, "`small-ar` (AR RQ-Transformer)", 500, "13.33", "300", "— (no draft)",
                 "115.00 [113.00, 118.00]"),
                (a, "`small-ar` (AR RQ-Transformer)", 625, "16.67", "375", "— (no draft)",
                 "105.00 [103.00, 108.00]")]
    assert rows == [f"| {name} | {s:,} | {ep} | {sec} | {s * 32 * F.train_flops_per_sample(m):.3g} | {d} | "
                    f"{r} |" for m, name, s, ep, sec, d, r in expected]
    assert "![FID against training compute](fid_compute.png)" in md
    assert "- `small` (Contextual RQ-Transformer): learning rate 0.001, guidance scale 1.8, batch 32" in md
    assert "- `small-ar` (AR RQ-Transformer): learning rate 0.001, guidance scale 1, batch 32" in md
    assert "41.2 of 64 positions scored" in md and "64.0 of 64 positions scored" in md
    # a PNG with content: both panels drawn, several colours, much of it not background
    import matplotlib.image
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 800
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50
    assert (rgb.min(axis=1) < 200).mean() > 0.02
    assert (root / "reports/fid_compute.pdf").read_bytes()[:4] == b"%PDF"


def test_the_report_refuses_files_of_another_model(suite_files):
    root, codes, (ctx_steps, ctx_ck), (ar_steps, _) = suite_files
    out = root / "reports/fid_compute.png"
    with pytest.raises(DrrError, match="the steps given for it are of experiment 'small-ar'"):
        R.build([ar_steps], [ctx_ck], [codes], out)
    with pytest.raises(DrrError, match="one --steps, --transformers and --codes per model"):
        R.build([ctx_steps, ar_steps], [ctx_ck], [codes], out)
    log = ctx_ck.parent / "metrics.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:-3]))  # stopped early
    with pytest.raises(DrrError, match="metrics.jsonl: logs steps up to 1800, not step 1875"):
        R.build([ctx_steps], [ctx_ck], [codes], out)
    assert not out.exists()


@pytest.mark.usefixtures("one_thread")
def test_a_real_training_run_s_log_and_config_give_its_points(tmp_path):
    """The files drr.transformer.train writes beside its checkpoint (config.yaml, metrics.jsonl) and
    its snapshots, read as the report reads them: a tiny AR run of 6 steps logged every 4 (the
    snapshot at step 2 lies inside the first logged interval)."""
    from transformer_fixtures import make_tokenizer_and_codes, tiny_config

    from drr.codes.store import count_rows
    from drr.sampling import steps as steps_mod
    from drr.transformer import train as train_mod

    settings = ("transformer.model.kind=ar", "transformer.train.steps=6", "transformer.train.log_every=4",
                "transformer.train.snapshot_every=2")
    cfg = tiny_config(*settings)
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg)
    final = train_mod.train(cfg, tok, codes, tmp_path / "run" / "tiny-ar" / "checkpoint.pt")
    steps = [s for s, _ in steps_mod.checkpoints(final)]
    assert steps == [2, 4, 6]
    rows = R.read_log(final.parent / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 6]
    tokens = 8 * 16 * 2                                       # batch x H·W x D of the tiny settings
    first, second = (4 * tokens / rows[0]["tokens_per_s"], 2 * tokens / rows[1]["tokens_per_s"])
    record = {"table": steps_mod.summary([fid_row(s, "revised", 100.0 - s, "k") for s in steps]),
              "experiment": "tiny-ar", "kind": "ar", "samples": 1000, "sampling": cfg["sampling"]}
    m = R.model_points(record, final.parent, count_rows(codes))
    assert [p["step"] for p in m["points"]] == [2, 4, 6] and m["tokens_per_step"] == tokens
    assert [p["core_seconds"] for p in m["points"]] == pytest.approx([first / 2, first, first + second])
    c = TransformerConfig.from_experiment(cfg)
    assert [p["flops"] for p in m["points"]] == pytest.approx([s * 8 * F.train_flops_per_sample(c)
                                                               for s in steps])
    assert m["points"][-1]["epochs"] == pytest.approx(6 * 8 / count_rows(codes))
    assert m["points"][0]["draft"] is None and m["points"][0]["revised"]["fid"] == 98.0


# --- the plan and the rules ----------------------------------------------------------------------

def make_plan(suite):
    from drr.workflow.report_spec import plan_of
    return plan_of(suite)


def test_only_models_that_keep_snapshots_are_in_the_figure_seed_0_only():
    small, tiny, paper = make_plan("small"), make_plan("tiny"), make_plan("paper")
    assert small.compute_experiments() == ["small", "small-ar"]          # not small-seed1, small-ar-seed1
    assert tiny.compute_experiments() == [] and paper.compute_experiments() == []
    assert tiny.compute_targets() == [] and "compute" not in tiny.index_spec()
    assert small.index_spec()["compute"] == ["reports/fid_compute.png"]
    with pytest.raises(DrrError, match="suite tiny has no FID-against-compute figure"):
        tiny.compute_inputs()
    with pytest.raises(DrrError, match="small-seed1 is not a model of the FID-against-compute figure"):
        small.steps_inputs("small-seed1")


def test_the_steps_job_samples_at_the_chosen_guidance_and_the_report_reads_both_models():
    small = make_plan("small")
    for exp in ("small", "small-ar"):
        inputs = small.steps_inputs(exp)
        assert inputs["select_guidance"] == f"results/select/{exp}/guidance.yaml"
        assert inputs["transformer"] == f"results/transformers/{exp}/checkpoint.pt"
        assert inputs["reference"] == f"results/reference/{small.reference_of[exp]}.npz"
        assert "select_lr" not in inputs      # the chosen lr is in the trained checkpoint (its input)
        assert small.config_args(exp, "sample")[-1] == f"results/select/{exp}/guidance.yaml"
    assert small.steps_samples() == 200
    assert small.compute_inputs() == {
        "steps": ["results/steps/small.json", "results/steps/small-ar.json"],
        "transformers": ["results/transformers/small/checkpoint.pt",
                         "results/transformers/small-ar/checkpoint.pt"],
        "codes": ["results/codes/small-fmnist-rq8x8x4/fashion-mnist/train"] * 2}
    assert small.steps_hash("small") != small.steps_hash("small-ar")


def test_the_steps_hash_follows_sampling_metrics_and_snapshots_not_training(tmp_path):
    import shutil

    import yaml

    from drr.core.config import REPO
    from drr.workflow.plan import Plan

    def plan(edit=None):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(REPO / "configs", root / "configs")
        if edit:
            path = root / "configs/experiments/small.yaml"
            doc = yaml.safe_load(path.read_text())
            edit(doc)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
        wf["suite"] = "small"
        wf["suites"]["small"].pop("seeds")         # small-seed1.yaml is not edited alike
        wf["suites"]["small"]["experiments"] = ["small", "small-ar"]
        return Plan(root, wf)

    base = plan().steps_hash("small")
    assert plan(lambda d: d["sampling"].update(t_draft=32)).steps_hash("small") != base
    assert plan(lambda d: d["metrics"].update(reference_images=4000)).steps_hash("small") != base
    assert plan(lambda d: d["transformer"]["train"].update(snapshot_every=1875)).steps_hash("small") != base
    assert plan(lambda d: d["transformer"]["train"].update(checkpoint_every=100)).steps_hash("small") == base
    off = plan(lambda d: d["transformer"]["train"].update(snapshot_every=None))
    assert off.compute_experiments() == ["small-ar"]


def test_the_index_links_the_figure_where_the_suite_makes_it():
    from pathlib import Path

    from drr.reports.index import build
    out = Path("reports/index.md")                           # as the rule gives it: links relative to it
    assert ("- FID against training compute, both models: [fid_compute.png](fid_compute.png) "
            "([fid_compute.md](fid_compute.md))") in build(make_plan("small").index_spec(), out)
    assert "FID against training compute" not in build(make_plan("tiny").index_spec(), out)


def dry_run(cwd, *args) -> tuple[int, str]:
    """Return code and output of `snakemake --dry-run --printshellcmds` with these arguments."""
    import subprocess

    from workflow_fixtures import SNAKEMAKE
    run = subprocess.run([*SNAKEMAKE, *args, "--dry-run", "--printshellcmds"], cwd=cwd, capture_output=True,
                         text=True, timeout=300, check=False)
    return run.returncode, run.stdout + run.stderr


def test_the_small_suite_dry_run_plans_a_steps_job_per_model_at_the_chosen_guidance(tmp_path):
    from workflow_fixtures import copy_workflow, planned_jobs
    cwd = copy_workflow(tmp_path)
    counts = planned_jobs(cwd, "reports/fid_compute.png", "--config", "suite=small")
    assert counts["fid_steps"] == 2 and counts["fid_compute"] == 1
    assert counts["train_transformer"] == 2                   # seed 0 of each model, at the chosen lr
    assert counts["select_setting"] == 4                      # lr and guidance of each model
    assert counts["compute_metrics"] == 8                     # the guidance validation sets only
    rc, out = dry_run(cwd, "reports/fid_compute.png", "--config", "suite=small")
    assert rc == 0, out[-3000:]
    for exp in ("small", "small-ar"):
        job = out[out.index(f"output: results/steps/{exp}.json") - 400:]
        assert f"results/select/{exp}/guidance.yaml" in job.split("output:")[0]
        assert (f"-m drr.sampling.steps --config configs/experiments/{exp}.yaml --config "
                f"results/select/{exp}/guidance.yaml") in job
    # the tiny suite: nothing new in its default plan, and one line for the figure it cannot make
    assert "fid_steps" not in planned_jobs(cwd) and "fid_compute" not in planned_jobs(cwd)
    rc, out = dry_run(cwd, "reports/fid_compute.png")
    assert rc != 0 and "suite tiny has no FID-against-compute figure" in out
