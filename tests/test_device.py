"""Where jobs compute and in what precision (drr.core.device): `device: cuda` without a GPU is a
one-line stop naming the driver the installed torch needs, 'auto' runs on the CPU (with a warning
when the job was given GPUs), training, sampling and the metrics all pick through it; autocast and
TF32; the config keys `device` and `sampling.precision` and their stage hashes."""

import numpy as np
import pytest
import torch
from transformer_fixtures import REPO, tiny_config

from drr.core import device as dev_mod
from drr.core import distributed
from drr.core.config import load_config, override_from_dotted
from drr.core.errors import DrrError
from drr.core.stages import STAGES, stage_config, stage_hash

PAPER = ["in256-crq-371m", "in256-crq-821m", "in256-crq-1400m", "in256-cvq-350m",
         "in256-rq-1400m-ar", "cc3m-crq-366m", "cc3m-crq-654m"]
CPU_SUITES = ["tiny", "tiny-ar", "small", "small-ar"]


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine where torch sees no GPU and the environment gives the job none."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in dev_mod.GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_cpu_and_auto_without_a_gpu_run_on_the_cpu_without_a_word(no_gpu, capsys):
    assert dev_mod.pick_device("cpu") == torch.device("cpu")
    assert dev_mod.pick_device("auto") == torch.device("cpu")
    assert dev_mod.pick_device(None) == torch.device("cpu")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("built,need", [("13.0", "needs an NVIDIA driver >= 580"),
                                        ("12.6", "needs an NVIDIA driver >= 525"),
                                        ("11.8", "needs an NVIDIA driver >= 450")])
def test_cuda_without_a_gpu_stops_with_one_line_naming_the_driver(no_gpu, monkeypatch, tmp_path,
                                                                  built, need):
    monkeypatch.setattr(torch.version, "cuda", built)
    monkeypatch.setattr(dev_mod, "DRIVER_FILE", tmp_path / "absent")
    with pytest.raises(DrrError) as e:
        dev_mod.pick_device("cuda")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("device: 'cuda' asks for a GPU, but torch sees none")
    assert f"is built for CUDA {built} and {need}" in msg and "no NVIDIA driver loaded" in msg
    assert "check with `nvidia-smi`" in msg and "docs/cluster.md" in msg
    # the driver a node has, read from the kernel module's version file
    (tmp_path / "version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    monkeypatch.setattr(dev_mod, "DRIVER_FILE", tmp_path / "version")
    with pytest.raises(DrrError, match=r"has driver 535\.104\.05\)"):
        dev_mod.pick_device("cuda:1", key="--device")


def test_the_locked_torch_is_the_cuda_13_build_that_needs_driver_580():
    """requirements.lock pins the PyPI torch, built for CUDA 13 (its cuda-toolkit 13.x): the
    driver floor the error names comes from this torch's own torch.version.cuda."""
    lock = (REPO / "requirements.lock").read_text()
    assert f"torch=={torch.__version__.split('+')[0]}\n" in lock and "cuda-toolkit==13." in lock
    assert torch.version.cuda.startswith("13.")
    assert "needs an NVIDIA driver >= 580" in dev_mod.cuda_requirement()


def test_a_cpu_only_torch_says_so(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DrrError, match="is a CPU-only build; install the locked PyPI build"):
        dev_mod.pick_device("cuda")


@pytest.mark.parametrize("env,declared", [
    ({}, None), ({"CUDA_VISIBLE_DEVICES": ""}, None), ({"CUDA_VISIBLE_DEVICES": "-1"}, None),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None), ({"SLURM_GPUS_ON_NODE": "0"}, None),
    ({"CUDA_VISIBLE_DEVICES": "0"}, "CUDA_VISIBLE_DEVICES=0"),
    ({"SLURM_GPUS_ON_NODE": "2", "CUDA_VISIBLE_DEVICES": "0,1"}, "SLURM_GPUS_ON_NODE=2"),
    ({"SLURM_JOB_GPUS": "3"}, "SLURM_JOB_GPUS=3"),
])
def test_gpus_the_environment_gives_a_job(env, declared):
    assert dev_mod.declared_gpus(env) == declared


def test_auto_on_a_job_given_gpus_that_torch_cannot_see_warns_and_runs_on_the_cpu(no_gpu,
                                                                                 monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    assert dev_mod.pick_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: device 'auto': SLURM_GPUS_ON_NODE=1 gives")
    assert "runs on the CPU" in err[0] and "`nvidia-smi`" in err[0]


@pytest.mark.parametrize("setting", ["gpu", "cuda:x", "cpu:1", "CUDA", ""])
def test_an_unknown_device_names_the_key(setting):
    with pytest.raises(DrrError, match=r"^--device: .* is not one of auto, cuda, cuda:N, cpu$"):
        dev_mod.pick_device(setting, key="--device")


def test_with_a_gpu_cuda_is_the_process_gpu_or_the_one_named(monkeypatch):
    """No GPU needed: torch.device('cuda', n) touches no driver."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev_mod.pick_device("auto", index=1) == torch.device("cuda", 1)
    assert dev_mod.pick_device("cuda") == torch.device("cuda", 0)
    assert dev_mod.pick_device("cuda:1", index=0) == torch.device("cuda", 1)
    assert dev_mod.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DrrError, match="asks for GPU 2, but torch sees 2"):
        dev_mod.pick_device("cuda:2")
    # the --device option wins over the config's key
    assert dev_mod.job_device({"device": "cuda"}, "cpu") == torch.device("cpu")
    assert dev_mod.job_device({"device": "cuda:1"}) == torch.device("cuda", 1)


def test_training_and_the_metrics_pick_through_the_one_place(no_gpu, tmp_path):
    """A job whose config says `device: cuda` stops on a machine without a GPU: the training set-up
    (before anything is written), the process group of data-parallel jobs, the metrics' networks
    (sampling: tests/test_generate.py)."""
    from drr.core.training import start_run
    from drr.metrics import maths
    from drr.metrics.inception import InceptionFeatures

    with pytest.raises(DrrError, match="^device: 'cuda' asks for a GPU"):
        start_run(tiny_config("device=cuda"), "transformer", tmp_path / "run" / "checkpoint.pt")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DrrError, match="^device: 'cuda' asks for a GPU"):
        distributed.init("cuda")
    assert distributed.init("auto") == (0, 1, torch.device("cpu"))
    with pytest.raises(DrrError, match="^device: 'cuda' asks for a GPU"):
        InceptionFeatures(torch.nn.Identity(), network="fid-helper", weights_path="w",
                          weights_sha256="0", device="cuda")
    feats = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    with pytest.raises(DrrError, match="^device: 'cuda' asks for a GPU"):
        maths.precision_recall(feats, feats, 3, device="cuda")
    assert maths.precision_recall(feats, feats, 3)[0] is not None  # auto: the CPU


def _matmul_dtype(device, precision, **kw):
    a = torch.ones(2, 2)
    with dev_mod.autocast(device, precision, **kw):
        return (a @ a).dtype


def test_autocast_is_bf16_only_where_asked():
    cpu = torch.device("cpu")
    assert _matmul_dtype(cpu, "fp32") == torch.float32
    assert _matmul_dtype(cpu, "bf16") == torch.bfloat16
    assert _matmul_dtype(cpu, "auto") == torch.float32  # training's auto: bf16 on CUDA only
    assert _matmul_dtype(cpu, "fp32", tf32=True) == torch.float32
    with pytest.raises(DrrError, match=r"^sampling.precision: 'fp16' is not one of auto, fp32, bf16$"):
        _matmul_dtype(cpu, "fp16", key="sampling.precision")


def test_tf32_is_on_inside_the_block_only():
    """TF32 for the fp32 matmuls of sampling on CUDA, the previous settings back afterwards (also
    after an error), so a later Inception forward in the same process stays full fp32. On the CPU
    the block leaves the settings alone."""
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    try:
        with dev_mod._tf32():
            assert torch.get_float32_matmul_precision() == "high"
            assert torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        with pytest.raises(RuntimeError):
            with dev_mod._tf32():
                raise RuntimeError("a failed batch")
        assert torch.get_float32_matmul_precision() == "highest"
        with dev_mod.autocast(torch.device("cpu"), "fp32", tf32=True):
            assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_the_paper_configs_ask_for_a_gpu_and_bf16_the_small_suites_run_anywhere_in_fp32():
    for name in PAPER:
        cfg = load_config(REPO / f"configs/experiments/{name}.yaml")
        assert (cfg["device"], cfg["sampling"]["precision"]) == ("cuda", "bf16"), name
        rehearsal = load_config(REPO / f"configs/experiments/{name}.yaml",
                                REPO / "configs/scales/rehearsal/all.yaml")
        assert rehearsal["device"] == "auto", name  # the test cluster's GPU nodes have no GPU
    for name in CPU_SUITES:
        cfg = load_config(REPO / f"configs/experiments/{name}.yaml")
        assert (cfg["device"], cfg["sampling"]["precision"]) == ("auto", "fp32"), name


@pytest.mark.parametrize("key,value", [("device", "gpu"), ("device", "cuda:a"),
                                       ("sampling.precision", "fp16"),
                                       ("sampling.precision", "auto")])
def test_a_wrong_setting_is_an_error_naming_the_key(key, value):
    with pytest.raises(DrrError, match=key.split(".")[-1]):
        load_config(REPO / "configs/experiments/tiny.yaml", override_from_dotted([f"{key}={value}"]))


def test_precision_is_in_the_sampling_stage_keys_and_fp32_hashes_as_before_the_key():
    """bf16 changes samples, so it changes the samples, merge, speed and pictures hashes; fp32, the
    precision of every run made before the key existed, hashes as those runs did (a config without
    the key), so finished runs stay finished. The device changes no hash."""
    fp32 = tiny_config()
    old = tiny_config()
    del old["sampling"]["precision"]
    bf16 = tiny_config("sampling.precision=bf16")
    for stage in STAGES:
        assert stage_hash(fp32, stage) == stage_hash(old, stage), stage
        assert stage_hash(tiny_config("device=cpu"), stage) == stage_hash(fp32, stage), stage
    moved = {s for s in STAGES if stage_hash(bf16, s) != stage_hash(fp32, s)}
    assert moved == {"samples", "merge", "speed", "pictures"}
    assert stage_config(bf16, "samples")["sampling"]["precision"] == "bf16"
    assert "precision" not in stage_config(fp32, "samples")["sampling"]

