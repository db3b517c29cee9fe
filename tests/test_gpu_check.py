"""benchmarks/gpu_check.sh in its CPU mode (GPU_CHECK_TINY=1): every step runs its code path at tiny
sizes and leaves its log, its figures and a summary; the budget skips steps, the time limit stops
them; no step reaches for the network (a proxy that refuses every connection is set)."""

import json
import os
import subprocess
import sys

import pytest

from workflow_fixtures import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["device", "train-loop", "train-1400m", "sample-821m", "inception", "decode"]


def run(out, **env):
    e = dict(os.environ, OUT=str(out), GPU_CHECK_TINY="1", PYTHON=sys.executable, OMP_NUM_THREADS="1",
             HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", **env)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=e, timeout=1800)


def steps_of(out) -> dict:
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    return {r[0]: r for r in rows}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    result = run(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_every_step_runs_and_leaves_its_log_and_figures(tiny):
    steps = steps_of(tiny)
    assert list(steps) == STEPS
    assert all(r[1] == "ok" and r[4] == "0" for r in steps.values()), steps
    for name in STEPS:
        assert (tiny / f"{name}.log").stat().st_size > 0
        assert json.loads((tiny / f"{name}.json").read_text())
    device = json.loads((tiny / "device.json").read_text())
    assert device["matmul_bfloat16_finite"] and device["matmul_float32_tflops"] > 0 and device["torch"]


def test_training_is_stopped_by_sigusr2_and_resumes_where_it_stopped(tiny):
    r = json.loads((tiny / "train-loop.json").read_text())
    assert r["ok"] and r["first_exit_code"] != 0 and r["second_exit_code"] == 0
    assert 0 < r["stopped_at_step"] == r["resumed_at_step"] < 12
    assert "stopping on SIGUSR2" in (tiny / "train-loop" / "first.log").read_text()


def test_the_figures_of_the_benchmarks_are_read(tiny):
    train = json.loads((tiny / "train-1400m.json").read_text())
    assert all(train[f"batch_{b}"]["step_ms"] > 0 for b in (8, 2))
    sample = json.loads((tiny / "sample-821m.json").read_text())
    for key in ("t_draft_8_bf16", "t_draft_8_fp32", "t_draft_64_bf16", "t_draft_64_fp32"):
        s = sample[key]
        assert s["s_per_sample"] == pytest.approx(s["draft"] + s["revise"] + s["decode"], rel=1e-6)
    assert json.loads((tiny / "inception.json").read_text())["images_per_s"] > 0
    summary = (tiny / "summary.md").read_text()
    assert all(f"| {name} | ok |" in summary for name in STEPS)
    assert json.loads((tiny / "summary.json").read_text())["results"].keys() == set(STEPS)


def test_a_spent_budget_skips_the_rest_and_still_writes_the_summary(tmp_path):
    result = run(tmp_path, GPU_CHECK_BUDGET_S="5")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = steps_of(tmp_path)
    assert list(steps) == STEPS and all(r[1].startswith("skipped") for r in steps.values())
    assert (tmp_path / "summary.md").is_file()


def test_a_step_past_its_limit_is_stopped_and_the_next_one_runs(tmp_path):
    result = run(tmp_path, GPU_CHECK_STEP_LIMIT_S="1")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = steps_of(tmp_path)
    assert list(steps) == STEPS
    assert steps["device"][1] == "timed out" and steps["device"][4] in ("124", "137")
    assert "summary" in result.stdout
