"""Contextual RQ-Transformer training: kill and resume, data parallel through submitit, errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformer_fixtures import REPO, TINY_SETTINGS, make_tokenizer_and_codes, tiny_config

from drr.core import checkpoint
from drr.core.errors import DrrError
from drr.core.launch import slurm_parameters
from drr.transformer import train as train_mod


def cli(tok, codes, out, *settings):
    args = [sys.executable, "-m", "drr.transformer.train", "--config", "configs/experiments/tiny.yaml"]
    for s in TINY_SETTINGS + list(settings):
        args += ["--set", s]
    return args + ["--tokenizer", str(tok), "--codes", str(codes), "--out", str(out)]


def weights(path):
    return torch.load(path, weights_only=False)["state_dict"]


def assert_same(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def wait_for_log_lines(log: Path, n: int, proc, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed:\n{proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("training did not start")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crq")
    return make_tokenizer_and_codes(folder, tiny_config())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_and_resumed_training_ends_with_the_same_weights(tmp_path, data, sig):
    tok, codes = data
    settings = ["transformer.train.steps=40", "transformer.train.checkpoint_every=4",
                "transformer.model.dropout=0.1"]  # dropout: the RNG state must be restored too
    straight = tmp_path / "a" / "checkpoint.pt"
    subprocess.run(cli(tok, codes, straight, *settings), cwd=REPO, check=True, capture_output=True)

    resumed = tmp_path / "b" / "checkpoint.pt"
    proc = subprocess.Popen(cli(tok, codes, resumed, *settings), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_log_lines(resumed.parent / "metrics.jsonl", 6, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and not resumed.exists()
    state = torch.load(checkpoint.state_path(resumed.parent), weights_only=False)
    assert 0 < state["step"] < 40
    if sig == signal.SIGTERM:
        assert "stopping on SIGTERM" in err

    run = subprocess.run(cli(tok, codes, resumed, *settings), cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"resuming from {checkpoint.state_path(resumed.parent)} at step {state['step']}" in run.stderr
    assert_same(weights(straight), weights(resumed))
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (resumed.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_two_process_step_through_submitit_matches_one_process(tmp_path, data):
    tok, codes = data
    one = tmp_path / "one" / "checkpoint.pt"
    cfg1 = tiny_config("transformer.train.steps=2", "transformer.model.dropout=0.0")
    train_mod.train(cfg1, tok, codes, one)

    two = tmp_path / "two" / "checkpoint.pt"
    cfg2 = tiny_config("transformer.train.steps=2", "transformer.model.dropout=0.0",
                       "transformer.launch.executor=local", "transformer.launch.gpus_per_node=2",
                       "transformer.launch.timeout_min=10")
    from drr.core.launch import launch
    result = launch(train_mod.TrainJob(cfg2, tok, codes, two), cfg2["transformer"]["launch"],
                    tmp_path / "submitit", name="test")
    assert result == str(two)
    assert_same(weights(one), weights(two), exact=False)
    # rank 1 really ran and saw half of the batch
    logs = sorted((tmp_path / "submitit").glob("*/*_1_log.err"))
    assert logs, "no log of the second process"


def test_non_finite_loss_stops_and_keeps_the_last_good_state(tmp_path, data, monkeypatch):
    tok, codes = data
    real = train_mod.__dict__.get("masked_nll")
    from drr.transformer import model as model_mod
    calls = {"n": 0}
    original = model_mod.masked_nll

    def poisoned(out):
        calls["n"] += 1
        loss = original(out)
        return loss * float("nan") if calls["n"] == 4 else loss
    monkeypatch.setattr(model_mod, "masked_nll", poisoned)
    assert real is None  # the loop imports it from the model module at call time
    out = tmp_path / "r" / "checkpoint.pt"
    cfg = tiny_config("transformer.train.steps=10", "transformer.train.checkpoint_every=2")
    with pytest.raises(DrrError, match="non-finite loss .* at step 3; the last good state is"):
        train_mod.train(cfg, tok, codes, out)
    assert torch.load(checkpoint.state_path(out.parent), weights_only=False)["step"] == 2
    assert not out.exists()


class NanOnRank1(train_mod.TrainJob):
    """The training job with rank 1's loss made NaN at its third step (step 2)."""

    def __call__(self):
        import submitit
        if submitit.JobEnvironment().global_rank == 1:
            from drr.transformer import model as model_mod
            original, calls = model_mod.masked_nll, []

            def poisoned(out):
                calls.append(1)
                return original(out) * (float("nan") if len(calls) == 3 else 1.0)
            model_mod.masked_nll = poisoned
        return super().__call__()


def test_non_finite_loss_on_one_process_stops_every_process_with_one_line(tmp_path, data,
                                                                          monkeypatch):
    """Rank 1 alone sees a NaN loss: both processes stop before the backward pass (rank 0 would
    otherwise wait in DDP's gradient all-reduce), each with the line naming rank 1 and the step."""
    from drr.core.launch import launch

    tok, codes = data
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    out = tmp_path / "nan" / "checkpoint.pt"
    cfg = tiny_config("transformer.train.steps=6", "transformer.train.checkpoint_every=1",
                      "transformer.launch.executor=local", "transformer.launch.gpus_per_node=2",
                      "transformer.launch.timeout_min=10")
    line = (f"non-finite loss nan at step 2 on rank 1 of 2; the last good state is "
            f"{checkpoint.state_path(out.parent)}")
    with pytest.raises(DrrError, match=f"failed: .*{line}"):
        launch(NanOnRank1(cfg, tok, codes, out), cfg["transformer"]["launch"], tmp_path / "submitit",
               name="test")
    for rank in (0, 1):
        log = next((tmp_path / "submitit").glob(f"*/*_{rank}_log.err")).read_text()
        assert f"DrrError: {line}" in log, rank
    assert torch.load(checkpoint.state_path(out.parent), weights_only=False)["step"] == 2
    assert not out.exists()


def test_code_map_of_another_tokenizer_is_refused(tmp_path, data):
    _, codes = data
    cfg = tiny_config()
    other_tok, _ = make_tokenizer_and_codes(tmp_path, cfg, seed=1)
    with pytest.raises(DrrError, match="tokenizer_sha256"):
        train_mod.train(cfg, other_tok, codes, tmp_path / "x" / "checkpoint.pt")


def test_class_labels_outside_the_configured_classes_are_refused(tmp_path, data):
    tok, codes = data
    cfg = tiny_config("transformer.model.cond.num_classes=2")
    with pytest.raises(DrrError, match="field 'label'"):
        train_mod.train(cfg, tok, codes, tmp_path / "x" / "checkpoint.pt")


def test_slurm_job_parameters_come_from_the_launch_section():
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = tiny_config("transformer.launch.executor=slurm", "transformer.launch.nodes=2",
                      "transformer.launch.gpus_per_node=8", "transformer.launch.partition=gpu",
                      "transformer.launch.account=proj", "transformer.launch.qos=high",
                      "transformer.launch.constraint=a100", "transformer.launch.mem_gb=512",
                      "transformer.launch.timeout_min=600")
    params = slurm_parameters(cfg["transformer"]["launch"], "drr-train-x")
    sbatch = _make_sbatch_string(command="python -m x", folder="/tmp/f/%j", **params)
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --mem=512G", "#SBATCH --time=600",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=drr-train-x"]:
        assert line in sbatch, line


def test_bad_launch_key_is_a_one_line_error(tmp_path, data):
    tok, codes = data
    run = subprocess.run(cli(tok, codes, tmp_path / "c.pt", "transformer.launch.executor=cloud"),
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "transformer.launch.executor" in run.stderr


def test_stop_signal_hands_over_to_the_handler_installed_before(monkeypatch):
    from drr.core.training import StopSignal

    seen = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    try:
        stop = StopSignal()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested == "SIGUSR2" and not seen  # the loop saves first ...
        stop.forward()
        assert seen == [signal.SIGUSR2]                  # ... then submitit's handler requeues
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_a_state_saved_under_another_config_is_not_resumed(tmp_path, data):
    tok, codes = data
    out = tmp_path / "r" / "checkpoint.pt"
    cfg = tiny_config("transformer.train.steps=4", "transformer.train.checkpoint_every=2")
    train_mod.train(cfg, tok, codes, out)
    state = checkpoint.state_path(out.parent)
    before = state.read_bytes()
    other = tiny_config("transformer.train.steps=4", "transformer.train.checkpoint_every=2",
                        "transformer.train.lr=5.0e-4")
    with pytest.raises(DrrError, match=r"train-state.pt: resumable state of a run with "
                                       r"transformer.train.lr 0.001 \(this run: 0.0005\)"):
        train_mod.train(other, tok, codes, out)
    assert state.read_bytes() == before                       # nothing of the old run is touched
    assert (out.parent / "config.yaml").read_text().count("lr: 0.001") == 1
    # how often a run logs or saves, or where it is launched, does not make it another run
    same = tiny_config("transformer.train.steps=4", "transformer.train.checkpoint_every=1",
                       "transformer.train.log_every=1")
    train_mod.train(same, tok, codes, out)


def test_heldout_nll_and_snapshots_during_training_change_no_weight(tmp_path, data):
    """transformer.train.eval_every and snapshot_every (NEUTRAL keys of drr.workflow.plan): the held-out NLL
    curve is logged, weight snapshots are kept, and the trained weights are bit for bit those of a
    run without them."""
    import json
    import shutil

    from drr.transformer.io import load_transformer
    from drr.transformer.report import evaluate, markdown

    tok, codes = data
    heldout = codes.parent / tiny_config()["data"]["eval_split"]   # beside the training code maps
    shutil.rmtree(heldout, ignore_errors=True)
    settings = ("transformer.train.steps=10", "transformer.train.checkpoint_every=4")
    plain = train_mod.train(tiny_config(*settings), tok, codes, tmp_path / "plain" / "checkpoint.pt")
    cfg = tiny_config(*settings, "transformer.train.eval_every=3", "transformer.train.eval_maps=16",
                      "transformer.train.snapshot_every=4")
    with pytest.raises(DrrError, match="no held-out code maps .*eval_every is set"):
        train_mod.train(cfg, tok, codes, tmp_path / "early" / "checkpoint.pt")
    shutil.copytree(codes, heldout)
    curve = train_mod.train(cfg, tok, codes, tmp_path / "curve" / "checkpoint.pt")
    assert_same(weights(plain), weights(curve))
    snaps = sorted((curve.parent / "snapshots").iterdir())
    assert [p.name for p in snaps] == ["step-000004.pt", "step-000008.pt"]  # not the final step
    model, ckpt, _ = load_transformer(snaps[1])
    assert ckpt["provenance"]["trained_steps"] == 8
    final = weights(curve)
    assert any(not torch.equal(v, final[k]) for k, v in model.state_dict().items())
    lines = [json.loads(x) for x in (curve.parent / "metrics.jsonl").read_text().splitlines()]
    points = [(m["step"], m["heldout_nll"]) for m in lines if "heldout_nll" in m]
    assert [s for s, _ in points] == [3, 6, 9, 10]
    assert all(0 < v < 10 for _, v in points)
    assert not any("heldout_nll" in m for m in
                   map(json.loads, (plain.parent / "metrics.jsonl").read_text().splitlines()))
    report = evaluate(cfg, curve, heldout, None)
    assert report["heldout_curve"] == points and report["heldout_maps"] == 16
    assert "| 9 | " in markdown(report, None)
