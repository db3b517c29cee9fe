"""The workflow on a real SLURM cluster: a private single-node cluster (tests/slurm/start.sh) that
advertises an A100 node, `snakemake --profile slurm` (the repository's profile, unchanged) running
a reduced target of the embedded default through the executor plugin, the transformer trained as
a submitit job that is preempted twice and resumes, and failing jobs.

Three runs go at once to save time: the SLURM run, the same target run locally (the reference the
SLURM results must equal), and a SLURM run whose first job fails. The cluster starts once per
session; these tests skip, with the reason, where it cannot start (not root, no apt).
Select or deselect them with `-m slurm` / `-m "not slurm"`.
"""

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TOKENIZER = "tiny-fmnist-rq8x8x4"
TARGET = "results/samples/tiny/default/samples.npz"
STEPS = 80             # transformer steps: long enough to preempt the job twice
FIRST_STOP = 20        # USR2 (what SLURM sends before the time limit) once the log reaches this step
SECOND_STOP = 45       # `scontrol requeue` (an administrator's or a preempting job's) at this step

# The tiny experiments, made small (as tests/test_workflow_tiny.py does) so that a run takes minutes.
FAST = {
    "seed": 0,
    "data": {"max_images": 512},
    "tokenizer": {"train": {"steps": 20, "batch_size": 16, "warmup_steps": 5, "checkpoint_every": 10,
                            "log_every": 5},
                  "encode": {"batch_size": 128, "rows_per_shard": 200}},
    "transformer": {"train": {"steps": STEPS, "batch_size": 16, "warmup_steps": 5,
                              "checkpoint_every": 10, "log_every": 5}},
    "generation": {"num_samples": 40, "batch_size": 20, "shard_size": 20, "grid_samples": 16,
                   "speed_batches": 1},
    "metrics": {"reference_images": 64, "pr_reference_size": 64, "kid_subset_size": 20,
                "batch_size": 32},
}
# The transformer of `tiny` as the paper configs train theirs: a submitit job on the a100 partition.
SLURM_LAUNCH = {"transformer": {"launch": {
    "executor": "slurm", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 10,
    "partition": "a100", "constraint": "a100", "signal_delay_s": 30, "max_requeues": 3}}}
GPU_RULES = ("train_tokenizer", "encode_codes", "generate_shard")


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def tiny_suite(root: Path) -> list:
    suite = yaml.safe_load((root / "configs" / "workflow.yaml").read_text())["suites"]["tiny"]
    return list(suite["experiments"] if isinstance(suite, dict) else suite)


def make_workdir(path: Path, tiny_extra: dict | None = None, all_extra: dict | None = None) -> Path:
    """A copy of the workflow (and the `slurm` profile) whose tiny suite is made small; every
    experiment of the suite gets FAST (they share one tokenizer, so they must agree on it)."""
    for item in ("Snakefile", "workflow", "configs", "slurm", "environment.yml"):
        src = REPO / item
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, path / item)
    for name in tiny_suite(path):
        f = path / "configs" / "experiments" / f"{name}.yaml"
        cfg = merge(merge(yaml.safe_load(f.read_text()) or {}, FAST), all_extra or {})
        if name == "tiny":
            cfg = merge(cfg, tiny_extra or {})
        f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env() -> dict:
    # Bit-identical results across processes on this CPU: one thread (with two, losses differed
    # in the last bit now and then under load) and MKL_CBWR (MKL's results otherwise depend on
    # memory alignment, which differs between a plain process and a submitit job: measured here,
    # the last bit of some losses from step 10 on). One thread is also fastest with three runs on
    # two cores.
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                MKL_CBWR="AUTO,STRICT")


def profile_cmd(*targets, extra=()):
    # The repository's profile; only the first status check comes sooner than its 40 s default.
    return [*SNAKEMAKE, "--profile", "slurm", "--config", "suite=tiny",
            "--slurm-init-seconds-before-status-checks", "2", *extra, *targets]


def start(cmd, cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def kill_tree(pid: int):
    """SIGKILL a process and all its descendants (only processes this test started)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, 9)
        except ProcessLookupError:
            pass


def sh(*cmd) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


def last_step(metrics: Path) -> int:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    return int(yaml.safe_load(lines[-1])["step"]) if lines else 0


# ----------------------------------------------------------------------------------------- fixtures

class Runs:
    pass


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed (make setup installs Debian's dataset-fashion-mnist "
                    "as root); this test does not download")
    r = Runs()
    r.t0 = time.time()
    r.slurm = make_workdir(tmp_path_factory.mktemp("on-slurm"), tiny_extra=SLURM_LAUNCH)
    r.local = make_workdir(tmp_path_factory.mktemp("local"))
    r.failing = make_workdir(tmp_path_factory.mktemp("failing"),
                             all_extra={"data": {"root": "/nonexistent/fashion-mnist"}})
    r.sacct_start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.t0 - 1))

    slurm = start(profile_cmd(TARGET), r.slurm, r.slurm / "run.log")
    local = start([*SNAKEMAKE, "--cores", "2", TARGET], r.local, r.local / "run.log")
    failing = start(profile_cmd(f"results/tokenizers/{TOKENIZER}/checkpoint.pt"), r.failing,
                    r.failing / "run.log")

    # While the SLURM run goes on: preempt the training job twice, and right after the second
    # time kill the whole Snakemake session (as a closed login shell would), unlock, and rerun.
    run_dir = r.slurm / "results/transformers/tiny"
    r.interrupts, r.job_id, r.reran = [], None, False
    deadline = time.monotonic() + 540
    while slurm.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        if r.job_id is None:
            m = re.search(r"submitted slurm job (\d+)", (run_dir / "submit.log").read_text()
                          if (run_dir / "submit.log").exists() else "")
            r.job_id = m and m.group(1)
            continue
        if len(r.interrupts) == 2:
            if not r.reran:
                kill_tree(slurm.pid)
                slurm.wait()
                subprocess.run(profile_cmd(TARGET, extra=("--unlock",)), cwd=r.slurm, env=env(),
                               capture_output=True, timeout=120)
                slurm = start(profile_cmd(TARGET), r.slurm, r.slurm / "rerun.log")
                r.reran = True
            continue
        if sh("squeue", "-h", "-j", r.job_id, "-o", "%T").strip() != "RUNNING":
            continue
        step = last_step(run_dir / "metrics.jsonl")
        errlog = run_dir / "submitit" / r.job_id / f"{r.job_id}_0_log.err"
        resumed = errlog.exists() and "resuming from" in errlog.read_text()
        if not r.interrupts and step >= FIRST_STOP:
            sh("scancel", "--signal=USR2", r.job_id)  # what the time limit's warning sends
            r.interrupts.append(("USR2", step))
        elif len(r.interrupts) == 1 and resumed and step >= SECOND_STOP:
            sh("scontrol", "requeue", r.job_id)
            r.interrupts.append(("scontrol requeue", step))
    for name, proc in (("slurm", slurm), ("local", local), ("failing", failing)):
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        setattr(r, f"{name}_rc", proc.returncode)
    r.slurm_log = (r.slurm / "run.log").read_text() + "\n".join(
        p.read_text() for p in [r.slurm / "rerun.log"] if p.exists())
    r.local_log = (r.local / "run.log").read_text()
    r.failing_log = (r.failing / "run.log").read_text()
    r.seconds = time.time() - r.t0
    print(f"\nSLURM, local and failing runs: {r.seconds:.0f} s; interrupts {r.interrupts}")
    return r


def sacct_jobs(since: str) -> list:
    """Every job record since `since` (requeued instances included), as dicts."""
    fields = ["JobID", "JobName", "Partition", "ReqTRES", "State", "Comment"]
    out = sh("sacct", "-X", "--duplicates", "-n", "-P", "-S", since, "-o", ",".join(fields))
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def state_dict(path: Path) -> dict:
    import torch
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt.get("state_dict") or ckpt["model"]


def assert_same_weights(a: Path, b: Path):
    import torch
    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{a} and {b} differ in {different[:5]}"


# ------------------------------------------------------------------------------------------- tests

@pytest.mark.slurm
@pytest.mark.slow
def test_profile_runs_the_workflow_through_the_executor_plugin(runs):
    assert runs.slurm_rc == 0, runs.slurm_log[-4000:]
    assert (runs.slurm / TARGET).is_file()
    jobs = sacct_jobs(runs.sacct_start)
    by_rule = {}
    for j in jobs:
        m = re.match(r"rule_([a-z_]+?)_wildcards", j["Comment"])
        if m and j["JobName"] != "drr-train-tiny":
            by_rule.setdefault(m.group(1), []).append(j)
    # Every rule but the local one (submit_transformer) was a SLURM job of this run, and succeeded.
    assert {"train_tokenizer", "encode_codes", "generate_shard", "merge_samples"} <= set(by_rule), jobs
    for rule in GPU_RULES:
        for j in by_rule[rule]:
            assert j["Partition"] == "a100" and "gres/gpu=1" in j["ReqTRES"], j
    assert len([j for j in by_rule["generate_shard"] if j["State"] == "COMPLETED"]) == 2
    for j in by_rule["merge_samples"]:  # a CPU rule: the default partition, no GPU
        assert j["Partition"] == "cpu" and "gpu" not in j["ReqTRES"] and j["State"] == "COMPLETED", j
    # The training ran as a submitit job on the a100 partition with one GPU.
    train = [j for j in jobs if j["JobName"] == "drr-train-tiny"]
    assert train and all(j["Partition"] == "a100" and "gres/gpu=1" in j["ReqTRES"] for j in train)
    assert train[-1]["State"] == "COMPLETED"
    assert "localrule submit_transformer" in runs.slurm_log
    dry = subprocess.run(profile_cmd(TARGET, extra=("--dry-run",)), cwd=runs.slurm, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:] + dry.stderr[-2000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_results_equal_a_local_run(runs):
    assert runs.slurm_rc == 0 and runs.local_rc == 0, runs.local_log[-3000:]
    import numpy as np

    from drr.codes import open_code_map
    # Jobs of the executor plugin give exactly what the same command gives locally.
    assert_same_weights(runs.slurm / f"results/tokenizers/{TOKENIZER}/checkpoint.pt",
                        runs.local / f"results/tokenizers/{TOKENIZER}/checkpoint.pt")
    codes = f"results/codes/{TOKENIZER}/fashion-mnist/train"
    assert np.array_equal(open_code_map(runs.slurm / codes).codes, open_code_map(runs.local / codes).codes)
    # The samples of a GPU job on SLURM equal those of the same command run here, from the same
    # weights; and those of the local run (from the local run's weights, see below).
    out = runs.slurm / "regenerated"
    subprocess.run([sys.executable, "-m", "drr.sampling.generate", "--config",
                    "configs/experiments/tiny.yaml", "--tokenizer",
                    f"results/tokenizers/{TOKENIZER}/checkpoint.pt", "--transformer",
                    "results/transformers/tiny/checkpoint.pt", "--out", str(out), "--shard", "0"],
                   cwd=runs.slurm, env=env(), check=True, capture_output=True, timeout=300)
    shard = "shards/shard-00000.npz"
    with np.load(runs.slurm / "results/samples/tiny/default" / shard) as a, np.load(out / shard) as b:
        for key in ("images", "codes", "labels", "index"):
            assert np.array_equal(a[key], b[key]), key
    with np.load(runs.slurm / TARGET) as a, np.load(runs.local / TARGET) as b:
        assert a["arr_0"].shape == (40, 32, 32, 3)
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"])
    # The transformer trained as a (preempted) submitit job: see the next test.
    assert_same_training(runs)


def assert_same_training(runs):
    """The SLURM-trained transformer (a submitit job, preempted twice) against the uninterrupted
    local run. Bit-identical is not to be had across processes on this CPU: even with one thread
    and MKL_CBWR, a few logged losses differ in their last bit (different heap layouts; measured
    here, max weight difference after 80 steps about 2e-5). A wrong resume (data order, optimizer
    state, RNG, step) moves the losses after it by 1e-3 or more: every logged loss must agree to
    2e-6 relative, and every weight to 2e-4."""
    import json

    import torch
    sa = state_dict(runs.slurm / "results/transformers/tiny/checkpoint.pt")
    sb = state_dict(runs.local / "results/transformers/tiny/checkpoint.pt")
    assert sa.keys() == sb.keys()
    worst = max((sa[k] - sb[k]).abs().max().item() for k in sa)
    assert worst <= 2e-4, f"weights differ by up to {worst}"

    def losses(root):
        path = root / "results/transformers/tiny/metrics.jsonl"
        return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}
    la, lb = losses(runs.slurm), losses(runs.local)
    assert sorted(la) == sorted(lb) == list(range(5, STEPS + 1, 5))
    off = {s: (la[s], lb[s]) for s in la if abs(la[s] - lb[s]) > 2e-6 * abs(lb[s])}
    assert not off, f"logged losses differ: {off}"
    assert torch.load(runs.slurm / "results/transformers/tiny/checkpoint.pt", map_location="cpu",
                      weights_only=False)["provenance"]["trained_steps"] == STEPS


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_training_resumes_from_its_checkpoint(runs):
    assert runs.slurm_rc == 0, runs.slurm_log[-4000:]
    assert [kind for kind, _ in runs.interrupts] == ["USR2", "scontrol requeue"], runs.interrupts
    log = (runs.slurm / "results/transformers/tiny/submitit" / runs.job_id
           / f"{runs.job_id}_0_log.err").read_text()
    resumed = [int(s) for s in re.findall(r"resuming from \S+ at step (\d+)", log)]
    assert len(resumed) == 2, log[-3000:]
    # Each requeued job started where the interrupted one saved its state, not from scratch.
    assert resumed[0] >= FIRST_STOP and resumed[1] >= SECOND_STOP, (resumed, runs.interrupts)
    assert "requeueing; the requeued job resumes from" in log  # submitit's checkpoint() on USR2
    records = [j for j in sacct_jobs(runs.sacct_start) if j["JobName"] == "drr-train-tiny"]
    assert [(j["JobID"], j["State"]) for j in records] == [
        (runs.job_id, "REQUEUED"), (runs.job_id, "REQUEUED"), (runs.job_id, "COMPLETED")], records
    # The session killed after the second preemption: its rerun waited for the same job.
    assert runs.reran
    rerun = (runs.slurm / "results/transformers/tiny/submit.log").read_text()
    assert f"job {runs.job_id}, submitted by an earlier run of this command, is still" in rerun, rerun
    # Final weights equal those of the uninterrupted local run (to round-off: see assert_same_training).
    assert_same_training(runs)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_slurm_job_fails_the_workflow_with_its_own_error(runs):
    assert runs.failing_rc != 0
    # The job's own error (the data folder is missing on the compute node), not only "failed".
    assert "data.root /nonexistent/fashion-mnist" in runs.failing_log, runs.failing_log[-4000:]
    assert "Error in rule train_tokenizer" in runs.failing_log
    # Nothing a rerun would take as finished; a rerun plans the same job again.
    assert not (runs.failing / f"results/tokenizers/{TOKENIZER}/checkpoint.pt").exists()
    dry = subprocess.run(profile_cmd(f"results/tokenizers/{TOKENIZER}/checkpoint.pt",
                                     extra=("--dry-run",)),
                         cwd=runs.failing, env=env(), capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "train_tokenizer" in dry.stdout + dry.stderr
    assert "Nothing to be done" not in dry.stdout + dry.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_submitit_job_fails_the_workflow_with_its_own_error(runs):
    """After the successful run: a transformer config the code maps contradict, caught in the job."""
    assert runs.slurm_rc == 0, runs.slurm_log[-4000:]
    f = runs.slurm / "configs/experiments/tiny.yaml"
    f.write_text(yaml.safe_dump(merge(yaml.safe_load(f.read_text()),
                                      {"transformer": {"model": {"cond": {"num_classes": 5}}}})))
    # A job that some earlier run of this command left running for another config of the run:
    # the launcher cancels it rather than wait for it or train beside it.
    stale = sh("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300").strip()
    job_file = runs.slurm / "results/transformers/tiny/submitit/slurm-job-id"
    job_file.write_text(f"{stale} 0123456789abcdef\n")
    target = "results/transformers/tiny/checkpoint.pt"
    # The finished run's resumable state is of the old config, and training refuses to resume it
    # (tested in test_transformer_train.py); remove it, as that error says, so that the job gets as
    # far as checking the config against the code maps.
    (runs.slurm / "results/transformers/tiny/train-state.pt").unlink()
    run = subprocess.run(profile_cmd(target), cwd=runs.slurm, env=env(), capture_output=True,
                         text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "transformer.model.cond.num_classes is 5" in out, out[-4000:]
    assert f"cancelling job {stale}" in out
    states = [j["State"] for j in sacct_jobs(runs.sacct_start) if j["JobID"] == stale]
    assert len(states) == 1 and states[0].startswith("CANCELLED"), states  # "CANCELLED by 0"
    assert not (runs.slurm / target).exists()
    dry = subprocess.run(profile_cmd(target, extra=("--dry-run",)), cwd=runs.slurm, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "submit_transformer" in dry.stdout + dry.stderr


def test_every_gpu_rule_gets_a_gpu_partition_from_the_profile():
    """A rule declaring gpu=1 without an entry in slurm/config.yaml would ask for a GPU on the CPU
    partition: on a real cluster, a job that never starts."""
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    default = profile["default-resources"]["slurm_partition"]
    gpu_rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+gpu=1,", block, re.M):
                gpu_rules.add(m.group(1))
    assert {"train_tokenizer", "generate_shard"} <= gpu_rules
    for rule in sorted(gpu_rules):
        part = profile["set-resources"].get(rule, {}).get("slurm_partition", default)
        assert part != default, f"slurm/config.yaml: GPU rule {rule} has no GPU partition"
