"""Tokenizer training: resume from the saved state gives the same weights as an uninterrupted run;
a bad config is a one-line error naming file and key; LPIPS reads the VGG16 the workflow placed,
never downloads; micro-batches give the whole batch's gradients; submitted as several processes
through submitit, a job told its time is up saves, requeues and finishes."""

import os
from pathlib import Path

import pytest
import torch

from drr.core import checkpoint, training
from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.tokenizer import losses
from drr.tokenizer import train as tokenizer_train
from drr.tokenizer.train import main as train_main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def random_vgg16(tmp_path_factory):
    """torchvision's VGG16 with random weights: stands in for the real file (not downloadable here)."""
    import torchvision
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(torchvision.models.vgg16().state_dict(), path)
    return path


def cfg_args(tmp_path, steps):
    return ["--config", "configs/experiments/tiny.yaml",
            "--set", f"tokenizer.train.steps={steps}", "--set", "tokenizer.train.batch_size=8",
            "--set", "tokenizer.train.checkpoint_every=3", "--set", "tokenizer.train.log_every=1",
            "--set", "tokenizer.train.warmup_steps=2", "--set", "data.max_images=64",
            "--set", "tokenizer.model.ch_mult=[1, 2]", "--set", "tokenizer.model.code_shape=[16, 16, 2]",
            "--set", f"data.cache_dir={tmp_path}/cache"]


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_resume_gives_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    straight = tmp_path / "a" / "checkpoint.pt"
    train_main(cfg_args(tmp_path, 7) + ["--out", str(straight)])

    # The same command, told to stop (as by SLURM's signal) after step 4: it saves and exits 1.
    resumed = tmp_path / "b" / "checkpoint.pt"
    real = training.Checkpoints  # what the loop's state_checkpoints makes

    class SignalledAtStep4(real):
        def after_step(self, step):
            if step == 4:
                self.stop.requested = "SIGTERM"
            super().after_step(step)
    monkeypatch.setattr(training, "Checkpoints", SignalledAtStep4)
    with pytest.raises(SystemExit) as e:
        train_main(cfg_args(tmp_path, 7) + ["--out", str(resumed)])
    assert e.value.code == 1 and not resumed.exists()
    assert torch.load(checkpoint.state_path(resumed.parent), weights_only=False)["step"] == 4
    monkeypatch.setattr(training, "Checkpoints", real)
    train_main(cfg_args(tmp_path, 7) + ["--out", str(resumed)])   # the same command again, resumes

    a = torch.load(straight, weights_only=False)["state_dict"]
    b = torch.load(resumed, weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 7  # lines after the resume point are rewritten, not duplicated


def test_import_refuses_training_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_main(["--config", "configs/experiments/in256-crq-821m.yaml", "--out", str(tmp_path / "x.pt")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "tokenizer.checkpoint" in err and len(err.splitlines()) == 1


def test_lpips_never_downloads_and_says_how_to_place_its_weights(tmp_path, monkeypatch):
    import torchvision

    real = torchvision.models.vgg16

    def no_download(*a, weights=None, **k):
        assert weights is None, "LPIPS asked torchvision to download VGG16"
        return real(*a, **k)
    monkeypatch.setattr(torchvision.models, "vgg16", no_download)
    with pytest.raises(DrrError, match=rf"{tmp_path}/torchvision/vgg16-397923af.pth: .* not in place: "
                                       r"run python -m drr.metrics.weights .* --lpips .*"
                                       r"tokenizer.loss.vgg16_weights"):
        losses.build_lpips(None, tmp_path)
    with pytest.raises(DrrError, match=r"\(tokenizer.loss.vgg16_weights\) not found"):
        losses.build_lpips(str(tmp_path / "absent.pth"))


def test_lpips_reads_the_vgg16_that_drr_metrics_weights_placed(tmp_path, random_vgg16):
    """`--lpips` places torchvision's VGG16 (a given file that verifies; here its sha256 check is
    the one thing not real) where the tokenizer loss reads it when vgg16_weights is null."""
    from drr.metrics import weights

    given = random_vgg16
    spec = weights.vgg16_spec(tmp_path / "w")
    assert spec.url.endswith("/" + Path(weights.VGG16_FILE).name)
    assert spec.verify(given) is not None                 # random weights: not torchvision's file
    spec.verify = lambda p: None
    entry = weights.place(spec, given, download=False)
    assert entry["status"] == "placed" and Path(entry["path"]) == weights.vgg16_path(tmp_path / "w")
    model = losses.build_lpips(None, tmp_path / "w")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(model(x, x).flatten(), torch.zeros(2), atol=1e-6)
    rule = (Path(__file__).resolve().parents[1] / "workflow/rules/tokenizer.smk").read_text()
    assert weights.VGG16_FILE in rule                      # the rule's output is where it is read


def test_lpips_from_a_weights_file(random_vgg16):
    model = losses.build_lpips(str(random_vgg16))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d_same = model(x, x).flatten()
    d_diff = model(x, x.flip(0)).flatten()
    assert torch.allclose(d_same, torch.zeros(2), atol=1e-6) and (d_diff > 0).all()


def test_adaptive_weight_matches_its_definition():
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(8, 4)
    nll = (x @ w).pow(2).mean()
    g = -(x @ w).mean()
    got = losses.adaptive_weight(nll, g, w)
    gn = torch.autograd.grad(nll, w, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, w)[0].norm()
    assert torch.allclose(got, gn / (gg + 1e-4))


def test_gan_and_lpips_generator_loss_runs_and_backpropagates():
    cfg = load_config()["tokenizer"]["loss"] | {"disc_weight": 0.5, "disc_start": 0}
    fn = losses.TokenizerLoss(cfg)
    last = torch.nn.Conv2d(4, 3, 3, padding=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = last(torch.randn(2, 4, 32, 32))
    loss, parts = fn.generator_loss(x, recon, torch.tensor(0.1), step=0, last_layer=last.weight)
    loss.backward()
    assert "d_weight" in parts and last.weight.grad is not None
    assert fn.discriminator_loss(x, recon).item() > 0


# --- micro-batches: gradient accumulation to the configured batch ---------------------------------

class NoStep:
    """An optimizer that keeps the gradients for the test to read (zero_grad as Adam's)."""

    def __init__(self, model):
        self.model, self.param_groups = model, []

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self):
        pass


@pytest.mark.parametrize("depth,shared", [(1, True), (2, False), (3, True)],
                         ids=["VQ", "a-codebook-per-depth", "shared-codebook"])
def test_micro_batches_give_the_whole_batch_gradients_and_codebook_step(random_vgg16, depth, shared):
    """Accumulating 4 micro-batches of 2 images gives the gradients of one pass over the 8 (float
    tolerance), the same codes, and the same EMA step of the codebooks (one on the whole batch):
    deferred to the end of the step (D = 1, a codebook per depth), or from encoding the whole
    batch first (a codebook shared by D > 1 depths)."""
    import copy

    from drr.tokenizer.model import RQVAE, RQVAEConfig

    loss_cfg = load_config()["tokenizer"]["loss"] | {"perceptual_weight": 1.0,
                                                     "vgg16_weights": str(random_vgg16),
                                                     "disc_weight": 0.5, "disc_start": 100}
    loss_fn = losses.TokenizerLoss(loss_cfg)
    torch.manual_seed(0)
    whole = RQVAE(RQVAEConfig(ch=32, ch_mult=[1, 2], z_channels=8, embed_dim=8, codebook_size=16,
                              code_shape=[8, 8, depth], shared_codebook=shared)).train()
    micro = copy.deepcopy(whole)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    tcfg = {"precision": "fp32", "grad_clip": None}
    torch.manual_seed(1)  # the code restarts draw from the global RNG
    loss_a, parts_a, codes_a, recon_a = tokenizer_train.whole_step(
        tokenizer_train.TrainForward(whole), whole, loss_fn, NoStep(whole), x, 0, tcfg, CPU,
        lambda loss: None)
    torch.manual_seed(1)
    loss_b, parts_b, codes_b, recon_b = tokenizer_train.accumulated_step(
        tokenizer_train.TrainForward(micro), micro, loss_fn, NoStep(micro), x, 2, 0, tcfg, CPU,
        lambda loss: None)
    assert torch.equal(codes_a, codes_b)
    torch.testing.assert_close(loss_b, loss_a.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts_b["lpips"], parts_a["lpips"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(recon_b, recon_a.detach(), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(whole.named_parameters(), micro.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)
    for (name, b), c in zip(whole.named_buffers(), micro.buffers()):  # the codebooks' EMA step
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(b, c) for b, c in zip(RQVAE(whole.config).buffers(), whole.buffers()))


def test_a_micro_batch_that_does_not_divide_a_process_share_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as e:
        train_main(cfg_args(tmp_path, 2) + ["--set", "tokenizer.train.micro_batch_size=3",
                                            "--out", str(tmp_path / "x" / "checkpoint.pt")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "tokenizer.train.micro_batch_size 3 does not divide the 8 images" in err
    assert not (tmp_path / "x").exists()
    assert tokenizer_train.micro_batch_size({"batch_size": 128, "micro_batch_size": 32}, 8) == 16
    assert tokenizer_train.micro_batch_size({"batch_size": 128, "micro_batch_size": None}, 4) == 32


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_two_processes_through_submitit_in_micro_batches_match_one_process(tmp_path, monkeypatch):
    """tokenizer.launch: the command submits 2 processes (submitit's local executor, gloo), each
    taking 4 of the 8 images a step in micro-batches of 2; the step's gradients (Adam's first
    moment after one step: (1 - beta1) x the gradient, in the saved state) and the codebooks' EMA
    step are those of one process taking all 8 in one pass, to float rounding. (Without code
    restarts: a restart draws from rank 0's images, not from all of them.)"""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = cfg_args(tmp_path, 1) + ["--set", "tokenizer.model.restart_unused_codes=false"]
    one = tmp_path / "one" / "checkpoint.pt"
    train_main(args + ["--out", str(one)])
    two = tmp_path / "two" / "checkpoint.pt"
    train_main(args + [
        "--set", "tokenizer.train.micro_batch_size=2", "--set", "tokenizer.launch.executor=local",
        "--set", "tokenizer.launch.gpus_per_node=2", "--set", "tokenizer.launch.timeout_min=10",
        "--out", str(two)])
    a, b = (torch.load(checkpoint.state_path(p.parent), weights_only=False) for p in (one, two))
    assert a["step"] == b["step"] == 1
    moments = [(a["opt_g"]["state"][i]["exp_avg"], b["opt_g"]["state"][i]["exp_avg"])
               for i in a["opt_g"]["state"]]
    assert len(moments) == len(list(a["model"])) - 3 * 2  # every parameter (not the codebook buffers)
    for i, (x, y) in enumerate(moments):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-8, msg=f"gradient of parameter {i}")
    for k in a["model"]:
        if k.startswith("quantizer."):
            torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    log0 = next((two.parent / "submitit").glob("*/*_0_log.err")).read_text()
    assert "2 process(es) of 4 images a step in micro-batches of 2" in log0
    assert list((two.parent / "submitit").glob("*/*_1_log.err")), "no log of the second process"


@pytest.mark.slow
def test_the_paper_vq_tokenizer_is_submitted_and_its_lpips_weights_placed_first(tmp_path, monkeypatch):
    """Dry runs: the VQ experiment's tokenizer (tokenizer.launch.executor slurm, LPIPS) is trained
    by the local rule submit_tokenizer after lpips_weights has placed VGG16; the tiny tokenizer is
    still an ordinary train_tokenizer job, with no weights to place."""
    from workflow_fixtures import copy_workflow, planned_jobs

    cwd = copy_workflow(tmp_path, official_standins=True)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # this drr, not another
    vq = planned_jobs(cwd, "results/tokenizers/in256-vqgan-16x16x1/checkpoint.pt", "--profile", "slurm")
    assert vq == {"lpips_weights": 1, "submit_tokenizer": 1, "total": 2}
    tiny = planned_jobs(cwd, "results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt")
    assert tiny == {"train_tokenizer": 1, "total": 1}


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
def test_a_submitted_job_told_its_time_is_up_saves_requeues_and_finishes(tmp_path, monkeypatch):
    """Both processes of a submitted tokenizer job get SIGUSR2 mid-run, as from SLURM before the
    time limit: they save at one step, submitit requeues the job (TrainJob.checkpoint), and the
    requeued job resumes from that step and finishes; every step is logged once."""
    import signal
    import time

    from drr.core.cli import config_parser, resolve
    from drr.core.launch import make_executor

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    steps = 12
    args = config_parser("x").parse_args(cfg_args(tmp_path, steps) + [
        "--set", "tokenizer.launch.executor=local", "--set", "tokenizer.launch.gpus_per_node=2",
        "--set", "tokenizer.launch.timeout_min=10"])
    cfg = resolve(args)
    out = tmp_path / "run" / "checkpoint.pt"
    executor = make_executor(cfg["tokenizer"]["launch"], tmp_path / "submitit" / "%j", "test")
    job = executor.submit(tokenizer_train.TrainJob(cfg, out))
    metrics = out.parent / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert not job.done(), job.stderr()
        time.sleep(0.1)
    tasks = _children(job._process.pid)
    assert len(tasks) == 2
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)
    assert job.results()[0] == str(out)
    log0 = next((tmp_path / "submitit").glob("*/*_0_log.err")).read_text()
    stopped = int(log0.split("stopping on SIGUSR2 at step ")[1].split(";")[0])
    assert 3 <= stopped < steps
    assert f"resuming from {checkpoint.state_path(out.parent)} at step {stopped}" in log0
    assert "requeueing; the requeued job resumes from" in log0
    logged = [int(line.split('"step": ')[1].split(",")[0]) for line in metrics.read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
    assert torch.load(out, weights_only=False)["provenance"]["trained_steps"] == steps
