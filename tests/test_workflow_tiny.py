"""The tiny workflow end to end in a temporary folder, built once and checked step by step: tokenizer
and its report, code maps, transformer and its report, samples, metrics and every report of suite
tiny (tables, figures, pictures); a second run has nothing to do; edits plan exactly what they
should; a kill in the middle is resumed after --unlock."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workflow_fixtures import SNAKEMAKE, copy_workflow, planned_jobs

# A smaller tiny experiment so that the test takes well under a minute.
FAST_TINY = """
seed: 0
data:
  max_images: 512
tokenizer:
  name: tiny-fmnist-rq8x8x4
  train:
    steps: 20
    batch_size: 16
    warmup_steps: 5
    checkpoint_every: 10
    log_every: 5
  encode:
    batch_size: 128
    rows_per_shard: 200
transformer:
  train:
    steps: 30
    batch_size: 16
    warmup_steps: 5
    checkpoint_every: 10
    log_every: 5
generation:
  num_samples: 40
  ablation_samples: 12
  batch_size: 20
  shard_size: 20
  grid_samples: 16
  speed_batch_size: 20
  speed_batches: 1
metrics:
  reference_images: 64
  pr_reference_size: 64
  kid_subset_size: 20
  batch_size: 32
"""


# Fewer values per study than configs/studies.yaml, so that the test builds every report in a few
# minutes: (original, replacement) pairs applied to the copy.
FEWER_CELLS = [
    ("cells: [{guidance: [none, revise, both]}]", "cells: [{guidance: [none, revise]}]"),
    ("cells: [{t_draft: [8, 32, 64]}]", "cells: [{t_draft: [8, 64]}]"),
    ("cells: [{t_draft: [4, 8, 16, 32, 64]}]", "cells: [{t_draft: [4, 8]}]"),
    ("cells: [{M: [0, 1, 2, 3, 4, 5]}]", "cells: [{M: [0, 2]}]"),
    ("cells: [{t_revise: [2, 4, 8, 16]}]", "cells: [{t_revise: [2, 4]}]"),
    ("cells: [{t_draft: [8, 64], strategy: [top-c, top-c-50, random]}]",
     "cells: [{t_draft: [8, 64], strategy: [top-c, random]}]"),
]


def have_fashion_mnist() -> bool:
    return Path("/usr/share/datasets/fashion-mnist").is_dir()


@pytest.fixture
def workdir(tmp_path):
    if not have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed (make setup installs Debian's dataset-fashion-mnist "
                    "as root); this test does not download")
    return make_workdir(tmp_path)


def make_workdir(tmp_path: Path) -> Path:
    """A copy of the workflow with the fast tiny experiments and fewer ablation cells."""
    copy_workflow(tmp_path)
    (tmp_path / "configs" / "experiments" / "tiny.yaml").write_text(FAST_TINY)
    studies = tmp_path / "configs" / "studies.yaml"
    text = studies.read_text()
    for old, new in FEWER_CELLS:
        assert old in text, old
        text = text.replace(old, new)
    studies.write_text(text)
    (tmp_path / "configs" / "experiments" / "tiny-ar.yaml").write_text(
        FAST_TINY.replace("transformer:\n  train:", "transformer:\n  model:\n    kind: ar\n  train:"))
    return tmp_path


def snakemake(workdir, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([*SNAKEMAKE, "--cores", "2", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=1500)


# --- the tiny workflow built once, then checked step by step (the tests below run in file order and
# share one work folder: later steps edit its configs) ---------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A work folder in which the whole tiny workflow ran once (`snakemake --cores 2`)."""
    if not have_fashion_mnist():
        pytest.skip("Fashion-MNIST not installed (make setup installs Debian's dataset-fashion-mnist "
                    "as root); this test does not download")
    workdir = make_workdir(tmp_path_factory.mktemp("tiny"))
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def png(path: Path) -> np.ndarray:
    """The picture at `path` as an array, checked to be a real picture (not one flat colour)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.std() > 5, f"{path} is one flat colour"
    return a


def mean_image_psnr(workdir: Path) -> float:
    """PSNR of the eval split against its own mean image: what a tokenizer that learned nothing
    about each image would reach (per-image MSE on [0, 1], averaged as the report averages)."""
    from drr.data import build_dataset, collate
    from drr.workflow.studies import Studies

    cfg = Studies(workdir).config("tiny")
    ds = build_dataset(cfg["data"], cfg["data"]["eval_split"])
    x = collate([ds[i] for i in range(len(ds))])["image"].float() / 255
    err = (x - x.mean(0, keepdim=True)).pow(2).flatten(1).mean(1)
    return float((-10 * err.clamp_min(1e-10).log10()).mean())


@pytest.mark.slow
def test_step_tokenizer_and_its_report(built):
    tok = built / "results/tokenizers/tiny-fmnist-rq8x8x4"
    assert (tok / "checkpoint.pt").is_file() and (tok / "config.yaml").is_file()
    report = json.loads((tok / "report.json").read_text())
    assert report["num_images"] == 512 and len(report["usage_per_depth"]) == 4
    # a trained tokenizer reconstructs each image better than the split's mean image does
    assert report["psnr"] > mean_image_psnr(built) + 1.0, report["psnr"]
    grid = png(built / "reports/tokenizers/tiny-fmnist-rq8x8x4.png")  # originals over reconstructions
    assert grid.shape[0] >= 2 * 32 and grid.shape[1] >= 8 * 32


@pytest.mark.slow
def test_step_code_maps(built):
    from drr.codes import open_code_map
    from drr.core.files import sha256_file

    tok = built / "results/tokenizers/tiny-fmnist-rq8x8x4"
    for split in ("train", "test"):
        cm = open_code_map(built / f"results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/{split}",
                           tokenizer_sha256=sha256_file(tok / "checkpoint.pt"))
        assert cm.codes.shape == (512, 8, 8, 4) and cm.codes.max() < 256
        assert set(cm.labels.tolist()) <= set(range(10))
        assert cm.meta["provenance"]["config_hash"]
        assert len(np.unique(cm.codes[..., 0])) > 8  # the first depth uses more than a few codes


@pytest.mark.slow
def test_step_transformer_and_its_report(built):
    run_dir = built / "results/transformers/tiny"
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "train-state.pt").is_file()
    treport = json.loads((run_dir / "report.json").read_text())
    assert treport["trained_steps"] == 30 and len(treport["curve"]) == 6
    assert treport["eval_nll"] < treport["uniform_nll"]  # it learned something in 30 steps
    png(built / "reports/transformers/tiny.png")


@pytest.mark.slow
def test_step_samples_speed_and_pictures(built):
    samples = built / "results/samples/tiny/default"
    with np.load(samples / "samples.npz") as npz:
        images = npz["arr_0"]
        assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
        assert npz["labels"].tolist() == [i % 10 for i in range(40)]
    assert images.std() > 5 and len({im.tobytes() for im in images}) == 40  # 40 different pictures
    assert sorted(p.name for p in (samples / "shards").glob("*.npz")) == ["shard-00000.npz",
                                                                         "shard-00001.npz"]
    grid = png(built / "reports/samples/tiny/default.png")
    assert grid.shape[0] >= 4 * 32 and grid.shape[1] >= 4 * 32  # 16 samples, at least 4 x 4
    png(built / "reports/figures/tiny/inpainting.png")
    speed = json.loads((built / "results/speed/tiny/default.json").read_text())
    assert speed["s_per_sample"] > 0 and speed["s_per_sample_revise"] > 0


@pytest.mark.slow
def test_step_metrics_row(built):
    import pyarrow.parquet as pq

    rows = pq.read_table(built / "results/metrics/tiny/default.parquet").to_pylist()
    revised = [r for r in rows if r["phase"] == "revised"]
    assert len(revised) == 1 and revised[0]["n_samples"] == 40
    assert revised[0]["experiment"] == "tiny" and revised[0]["variant"] == "default"
    assert revised[0]["fid"] > 0 and 0 <= revised[0]["precision"] <= 1 and 0 <= revised[0]["recall"] <= 1
    assert (revised[0]["is_mean"] is not None) or revised[0]["is_note"].startswith("n/a")


@pytest.mark.slow
def test_step_tables_and_figures(built):
    """Tables hold the computed numbers; figures are pictures; the index links them."""
    import pyarrow.parquet as pq

    revised = [r for r in pq.read_table(built / "results/metrics/tiny/default.parquet").to_pylist()
               if r["phase"] == "revised"][0]
    table1 = (built / "reports/table1.md").read_text()
    assert "Small-scale run" in table1
    ours = [line for line in table1.splitlines() if line.startswith("| ours: `tiny`")]
    assert len(ours) == 1
    cells = [c.strip() for c in ours[0].strip("|").split("|")]
    fid = re.fullmatch(r"(\S+)(?: \[(\S+), (\S+)\])?", cells[3])      # value [lo, hi] (95% interval)
    assert float(fid.group(1)) == pytest.approx(revised["fid"], abs=0.006)  # FID ours, as computed
    if revised["fid_lo"] is not None:
        assert float(fid.group(2)) == pytest.approx(revised["fid_lo"], abs=0.006)
        assert float(fid.group(3)) == pytest.approx(revised["fid_hi"], abs=0.006)
    assert cells[-3] == "40"                                                   # samples
    table3 = (built / "reports/table3.md").read_text()
    assert "`tiny/guidance=none`" in table3 and "`tiny/base`" in table3
    for name in ("fig4a", "fig4b", "fig4c", "fig5"):
        png(built / f"reports/{name}.png")
    for name in ("fig4a", "fig4b", "fig4c"):
        assert (built / f"reports/{name}.pdf").read_bytes()[:5] == b"%PDF-"
    png(built / "reports/figures/tiny/classes.png")
    index = (built / "reports/index.md").read_text()
    assert "(table1.md)" in index and "figA1: not made in this suite" in index
    # drafts of cells that differ only after the draft phase are put through Inception once
    # (cells: base, guidance=none, t_draft=4, t_draft=64, M=0, t_revise=4, strategy=top-c,
    # t_draft=64+strategy=top-c; the drafts of base, M=0, t_revise=4 and guidance=none are one set)
    assert len(list((built / "results/cache/features").glob("*.npz"))) < 2 * 8


@pytest.mark.slow
def test_step_a_second_run_has_nothing_to_do(built):
    again = snakemake(built, "--dry-run")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_step_the_html_report(built):
    html = snakemake(built, "--report", "report.html")
    assert html.returncode == 0, html.stderr[-2000:]
    assert (built / "report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_step_edits_that_change_no_result_plan_nothing(built):
    """A SLURM time limit, log and batch sizes: the same results, so nothing reruns."""
    experiment = built / "configs/experiments/tiny.yaml"
    neutral = (FAST_TINY.replace("    log_every: 5", "    log_every: 3")
               .replace("  batch_size: 20\n", "  batch_size: 10\n")
               .replace("    batch_size: 128\n", "    batch_size: 64\n")
               .replace("transformer:\n  train:", "transformer:\n  launch:\n    timeout_min: 100\n  train:"))
    assert neutral.count("log_every: 3") == 2 and "timeout_min" in neutral and "batch_size: 64" in neutral
    experiment.write_text(neutral)
    try:
        again = snakemake(built, "--dry-run")
        assert again.returncode == 0, again.stderr[-2000:]
        assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]
    finally:
        experiment.write_text(FAST_TINY)


@pytest.mark.slow
def test_step_a_training_setting_plans_that_model_and_what_is_built_on_it(built):
    experiment = built / "configs/experiments/tiny.yaml"
    experiment.write_text(FAST_TINY.replace("transformer:\n  train:", "transformer:\n  train:\n    lr: 5.0e-4"))
    try:
        counts = planned(built)
        assert counts.get("train_transformer") == 1 and "train_tokenizer" not in counts, counts
        assert "encode_codes" not in counts and "reference_stats" not in counts, counts
    finally:
        experiment.write_text(FAST_TINY)


@pytest.mark.slow
def test_step_a_new_ablation_value_plans_only_its_cell_and_survives_a_kill(built):
    """One new T_draft value: only its cell (samples, metrics) and Figure 4(a) (its spec, then the
    figure) are planned."""
    studies = built / "configs/studies.yaml"
    studies.write_text(studies.read_text().replace("cells: [{t_draft: [4, 8]}]",
                                                   "cells: [{t_draft: [2, 8]}]"))
    counts = planned(built, "reports/fig4a.png")
    assert counts == {"generate_shard": 1, "merge_samples": 1, "compute_metrics": 1,
                      "report_spec": 1, "report_figure": 1, "total": 5}, counts
    # killed while it generates that cell's shard: after --unlock the plain command finishes the
    # work, and a file left at the shard's path by the killed job is not taken for a finished one
    killed_then_rerun(built, "reports/fig4a.png", "results/samples/tiny/t_draft=2/shards/shard-00000")


def planned(workdir, *targets) -> dict[str, int]:
    plan = snakemake(workdir, *targets, "--dry-run", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr[-2000:]
    return {p[0]: int(p[1]) for p in (line.split() for line in plan.stdout.splitlines())
            if len(p) == 2 and p[1].isdigit()}


def killed_then_rerun(workdir, target, shard):
    import signal
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run = subprocess.Popen([*SNAKEMAKE, "--cores", "2", target], cwd=workdir, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log, npz = workdir / f"{shard}.log", workdir / f"{shard}.npz"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not log.exists() and run.poll() is None:
        time.sleep(0.1)
    assert log.exists(), "the shard job did not start"
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake, its job's shell and the generator at once
    run.wait()
    assert list((workdir / ".snakemake/incomplete").iterdir()), "Snakemake marked no job incomplete"
    assert list((workdir / ".snakemake/locks").glob("*.lock")), "the killed session left no lock"
    if not npz.exists():  # what a job killed while writing in place would leave
        npz.write_bytes(b"not a finished shard")
    locked = snakemake(workdir, target)  # Snakemake's own lock stays until --unlock (make unlock)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    assert snakemake(workdir, target, "--unlock").returncode == 0
    rerun = snakemake(workdir, target)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "IncompleteFilesException" not in rerun.stderr  # profiles/default: rerun-incomplete
    with np.load(npz) as z:
        assert z["images"].shape[0] == 12  # the rerun made the shard anew


@pytest.mark.slow
def test_workflow_rejects_a_bad_config_naming_file_and_key(workdir):
    path = workdir / "configs" / "experiments" / "tiny.yaml"
    path.write_text(FAST_TINY.replace("    steps: 20", "    stepz: 20"))
    run = snakemake(workdir, "--dry-run")
    assert run.returncode != 0
    assert "configs/experiments/tiny.yaml: unknown key 'tokenizer.train.stepz'" in run.stdout + run.stderr
    assert not (workdir / "results").exists()


def test_paper_suite_plans_submitit_training_and_caption_tokenizers(tmp_path):
    cwd = copy_workflow(tmp_path, official_standins=True)
    counts = planned_jobs(cwd, "--profile", "slurm")
    assert counts["submit_transformer"] == 6        # every paper experiment submits itself via submitit
    assert "train_transformer" not in counts
    assert counts["train_text_tokenizer"] == 1      # one BPE for the CC-3M tokenizer's captions
    assert counts["import_tokenizer"] == 2          # the official ImageNet (shared by the AR model) and CC-3M RQ-VAEs
    assert counts["submit_tokenizer"] == 1 and "train_tokenizer" not in counts  # the VQ tokenizer, via submitit
    assert counts["import_transformer"] == 1                # the official AR RQ-Transformer 1.4B
    # 50k samples in 10 shards for each ImageNet run, 15,840 in 8 for each CC-3M one: the seven
    # default runs, then the ablation cells of configs/studies.yaml (18 of the 821M model besides
    # its default run, 9 of the VQ model), each a full 50k run as in the paper
    assert counts["generate_shard"] == 5 * 10 + 2 * 8 + (18 + 9) * 10
    assert counts["merge_samples"] == 7 + 18 + 9 and counts["compute_metrics"] == 7 + 18 + 9
