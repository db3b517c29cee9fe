"""Tokenizer training: resume from the saved state gives the same weights as an uninterrupted run;
a bad config is a one-line error naming file and key; LPIPS without weights says what to set."""

from pathlib import Path

import pytest
import torch

from drr.core import checkpoint
from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.tokenizer import losses
from drr.tokenizer import train as tokenizer_train
from drr.tokenizer.train import main as train_main

FMNIST = Path("/usr/share/datasets/fashion-mnist")


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
    real = tokenizer_train.Checkpoints

    class SignalledAtStep4(real):
        def after_step(self, step):
            if step == 4:
                self.stop.requested = "SIGTERM"
            super().after_step(step)
    monkeypatch.setattr(tokenizer_train, "Checkpoints", SignalledAtStep4)
    with pytest.raises(SystemExit) as e:
        train_main(cfg_args(tmp_path, 7) + ["--out", str(resumed)])
    assert e.value.code == 1 and not resumed.exists()
    assert torch.load(checkpoint.state_path(resumed.parent), weights_only=False)["step"] == 4
    monkeypatch.setattr(tokenizer_train, "Checkpoints", real)
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


def test_lpips_without_weights_offline_is_a_clear_error(monkeypatch):
    import torchvision

    real = torchvision.models.vgg16

    def offline(*a, weights=None, **k):  # downloading pretrained weights fails, as on this machine
        if weights is not None:
            raise OSError("no network")
        return real(*a, **k)
    monkeypatch.setattr(torchvision.models, "vgg16", offline)
    with pytest.raises(DrrError, match="tokenizer.loss.vgg16_weights"):
        losses.build_lpips(None)


def test_lpips_from_a_weights_file(tmp_path):
    import torchvision
    path = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16().state_dict(), path)  # random weights stand in for the real file
    model = losses.build_lpips(str(path))
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
