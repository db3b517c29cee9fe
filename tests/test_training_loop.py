"""The training loop's shared pieces (drr.core.training, drr.core.checkpoint): the data order, when
state is saved, how every process stops together, the metrics log as hostile input, and the
state file on disk. Multi-process cases run as 2 gloo processes on the CPU."""

import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drr.core import checkpoint, training
from drr.core.errors import DrrError
from drr.core.training import Checkpoints, MetricsLog, StopSignal, batch_indices, epoch_permutation

# --- data order ------------------------------------------------------------------------------------

def batch_indices_recomputing_every_step(n, batch_size, step, seed, rank=0, world=1):
    """The data order as it was defined before permutations were kept: the reference."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out[rank::world], dtype=np.int64)


@pytest.mark.parametrize("n,batch,world", [(100, 32, 1), (100, 32, 4), (37, 8, 2), (10, 24, 3),
                                           (1000, 1000, 1), (7, 7, 7)])
def test_every_step_gets_the_batch_it_got_when_each_step_recomputed_the_permutation(n, batch, world):
    epoch_permutation.cache_clear()
    steps = 3 * n // batch + 3  # several epochs, steps straddling epoch boundaries
    for seed in (0, 5):
        for step in range(steps):
            for rank in range(world):
                got = batch_indices(n, batch, step, seed, rank, world)
                want = batch_indices_recomputing_every_step(n, batch, step, seed, rank, world)
                assert got.dtype == np.int64 and np.array_equal(got, want), (seed, step, rank)


def test_each_epoch_permutation_is_computed_once():
    epoch_permutation.cache_clear()
    n, batch = 1000, 64
    for step in range(0, 5 * n // batch):  # 5 epochs in order, as a training loop asks for them
        batch_indices(n, batch, step, seed=3, rank=1, world=2)
    assert epoch_permutation.cache_info().misses == 5
    perm = epoch_permutation(n, 3, 4)
    with pytest.raises(ValueError):  # the kept permutation cannot be changed by a caller
        perm[0] = perm[1]
    out = batch_indices(n, batch, 1, seed=3)
    out[:] = -1  # the caller's copy is its own
    assert (epoch_permutation(n, 3, 0) >= 0).all()


# --- when state is saved -----------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def saver(tmp_path, every=None, minutes=None, saved_step=None):
    saved, clock = [], Clock()
    ck = Checkpoints(StopSignal(signals=()), every, minutes, torch.device("cpu"), tmp_path,
                     lambda: saved.append(clock.t), main=True, saved_step=saved_step, clock=clock)
    return ck, saved, clock


def test_state_is_saved_by_wall_time_not_by_step_count(tmp_path):
    ck, saved, clock = saver(tmp_path, minutes=30)
    for step in range(1, 200):
        clock.t += 60.0  # a minute a step
        ck.after_step(step)
    assert saved == [1800.0 * k for k in range(1, 7)]
    assert ck.saved_step == 180
    ck.finish(199)
    ck.finish(199)  # the end is saved once
    assert len(saved) == 7 and ck.saved_step == 199


def test_step_count_and_wall_time_together_and_a_resumed_state_is_not_saved_again(tmp_path):
    ck, saved, clock = saver(tmp_path, every=5, minutes=1)
    for step in range(1, 11):
        clock.t += 25.0
        ck.after_step(step)
    assert saved == [75.0, 125.0, 200.0, 250.0]  # a minute after the last save: steps 3, 8; every 5: 5, 10
    ck, saved, _ = saver(tmp_path, saved_step=40)
    ck.finish(40)  # a run that resumed at its last step has nothing new to save
    assert saved == []


def test_told_to_stop_it_saves_hands_the_signal_over_and_exits(tmp_path):
    ck, saved, clock = saver(tmp_path, minutes=30)
    handed = []
    ck.stop._old = {signal.SIGUSR2: lambda s, f: handed.append(s)}
    ck.after_step(1)
    ck.stop.requested = "SIGUSR2"
    before = signal.getsignal(signal.SIGUSR2)
    try:
        with pytest.raises(SystemExit) as e:
            ck.after_step(2)
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert e.value.code == 1 and saved == [0.0] and handed == [signal.SIGUSR2]


# --- two processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_group(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def two_processes(fn, *args):
    mp.start_processes(_in_group, args=(2, free_port(), fn, args), nprocs=2, join=True,
                       start_method="spawn")


def _scenarios(rank, folder):
    """Every two-process case in one pair of processes (starting them is most of the time)."""
    for fn in (_stop_on_rank_1, _timed_save, _non_finite_on_rank_1):
        fn(rank, str(Path(folder) / fn.__name__))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-processes")
    for fn in (_stop_on_rank_1, _timed_save, _non_finite_on_rank_1):
        (folder / fn.__name__).mkdir()
    checkpoint.save({"step": 10}, checkpoint.state_path(folder / "_non_finite_on_rank_1"))
    two_processes(_scenarios, str(folder))
    return folder


def _stop_on_rank_1(rank, folder):
    folder = Path(folder)
    events = folder / f"rank{rank}.jsonl"

    def note(what):
        with open(events, "a") as f:
            f.write(json.dumps({"what": what, "t": time.time()}) + "\n")

    def save_state():
        if rank == 0:
            time.sleep(1.0)  # a large state: rank 1 must not leave while it is written
            note("saved")

    def submitit_like(signum, frame):  # rank 0 requeues and exits; the others return
        if rank == 0:
            time.sleep(0.5)
            note("requeued")
            raise SystemExit(-1)

    stop = StopSignal(signals=())
    stop._old = {signal.SIGUSR2: submitit_like, signal.SIGTERM: lambda s, f: note("SIGTERM")}
    stop.requested = "SIGUSR2" if rank == 1 else "SIGTERM"  # rank 1 got the time-limit warning
    ck = Checkpoints(stop, None, None, torch.device("cpu"), folder, save_state, main=rank == 0)
    try:
        ck.after_step(7)
    except SystemExit as e:
        note(f"exit {e.code}")


def test_no_process_exits_before_rank_0_has_saved_and_requeued(runs):
    """Rank 0 was sent SIGTERM, rank 1 SIGUSR2 (submitit's time-limit signal): both act on
    SIGUSR2, so rank 0 (which alone requeues under submitit) hands it to submitit's handler."""
    tmp_path = runs / "_stop_on_rank_1"
    r0 = [json.loads(x) for x in (tmp_path / "rank0.jsonl").read_text().splitlines()]
    r1 = [json.loads(x) for x in (tmp_path / "rank1.jsonl").read_text().splitlines()]
    assert [e["what"] for e in r0] == ["saved", "requeued", "exit -1"]
    assert [e["what"] for e in r1] == ["exit 1"]
    assert r1[0]["t"] >= r0[1]["t"]  # rank 1 left after rank 0's save and requeue


def _timed_save(rank, folder):
    clock = Clock()
    saved = []
    ck = Checkpoints(StopSignal(signals=()), None, 10, torch.device("cpu"), folder,
                     lambda: saved.append(step), main=rank == 0, clock=clock)
    for step in range(1, 8):
        clock.t += 200.0 if rank == 0 else 1.0  # only rank 0's clock counts
        ck.after_step(step)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(saved))


def test_every_process_saves_at_the_step_rank_0s_clock_says(runs):
    tmp_path = runs / "_timed_save"
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [3, 6]


def _non_finite_on_rank_1(rank, folder):
    loss = torch.tensor(float("nan") if rank == 1 else 0.5)
    try:
        training.check_finite(loss, 12, rank, 2, torch.device("cpu"), folder)
    except DrrError as e:
        Path(folder, f"rank{rank}.txt").write_text(str(e))
    training.check_finite(torch.tensor(0.25), 13, rank, 2, torch.device("cpu"), folder)
    Path(folder, f"rank{rank}.ok").write_text("finite losses pass")


def test_a_non_finite_loss_on_one_process_stops_every_process_naming_rank_and_step(runs):
    tmp_path = runs / "_non_finite_on_rank_1"
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == (
            f"non-finite loss nan at step 12 on rank 1 of 2; the last good state is "
            f"{checkpoint.state_path(tmp_path)}")
        assert (tmp_path / f"rank{rank}.ok").exists()


def test_a_non_finite_loss_in_one_process_is_named_without_a_rank(tmp_path):
    with pytest.raises(DrrError, match=r"^non-finite loss inf at step 3; no state was saved before it$"):
        training.check_finite(torch.tensor(float("inf")), 3, 0, 1, torch.device("cpu"), tmp_path)


# --- the state file --------------------------------------------------------------------------------

def test_the_state_file_and_its_folder_are_flushed_to_disk_before_and_after_the_rename(tmp_path,
                                                                                      monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        calls.append(("rename", str(a), str(b)))
        real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = checkpoint.state_path(tmp_path)
    checkpoint.save({"step": 3}, path)
    assert [c[0] for c in calls] == ["fsync", "rename", "fsync"]
    tmp = calls[1][1]
    assert calls[0][1] == tmp and calls[1][2] == str(path) and calls[2][1] == str(tmp_path)
    assert checkpoint.load_state(path)["step"] == 3


class FakeCuda:
    """torch.cuda as a process on `device` of a node sees it (states are byte tensors)."""

    def __init__(self, device: int):
        self.device, self.set = device, []

    def is_available(self):
        return True

    def current_device(self):
        return self.device

    def get_rng_state(self, device):
        return torch.full((8,), device, dtype=torch.uint8)

    def set_rng_state(self, state, device):
        self.set.append((state.tolist(), device))

    def set_rng_state_all(self, states):
        raise AssertionError("every device's state restored: fails on a node with fewer GPUs")


def test_a_run_resumes_on_nodes_with_fewer_gpus(tmp_path, monkeypatch):
    """Saved by 2 processes on GPUs 0 and 1 of a node, resumed by rank 1 alone on GPU 0 of
    another node: rank 1's state goes to the device it now uses."""
    saved = []
    for device in (0, 1):
        monkeypatch.setattr(torch, "cuda", FakeCuda(device))
        saved.append(checkpoint.rng_state())
    assert [s["cuda"].tolist() for s in saved] == [[0] * 8, [1] * 8]  # one device's state each
    model = torch.nn.Linear(2, 2)
    state = {"step": 5, "model": model.state_dict(), "rng": saved}
    cuda = FakeCuda(0)
    monkeypatch.setattr(torch, "cuda", cuda)
    assert checkpoint.restore(state, tmp_path / "s.pt", {"model": model}, rank=1) == 5
    assert cuda.set == [([1] * 8, 0)]
    # a state saved before (every visible device's state): the current device's entry
    older = dict(saved[1], cuda=[torch.full((8,), d, dtype=torch.uint8) for d in range(4)])
    cuda = FakeCuda(2)
    monkeypatch.setattr(torch, "cuda", cuda)
    checkpoint.set_rng_state(older)
    assert cuda.set == [([2] * 8, 2)]


# --- the metrics log -------------------------------------------------------------------------------

def test_a_planted_link_at_the_metrics_log_is_refused_and_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("someone else's file\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").symlink_to(target)
    log = MetricsLog(run / "metrics.jsonl")
    for act in (lambda: log.truncate_after(0), lambda: log.write(step=1, loss=0.5)):
        with pytest.raises(DrrError, match=rf"^{run}/metrics.jsonl: is a symbolic link; .*remove the link"):
            act()
    assert target.read_text() == "someone else's file\n"
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(tmp_path / "absent")  # a dangling link: not created either
    with pytest.raises(DrrError, match="is a symbolic link"):
        log.write(step=1)
    assert not (tmp_path / "absent").exists()


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    log = MetricsLog(path)
    log.truncate_after(2)
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {path}: dropped its torn last line 3") and err.count("\n") == 1
    log.write(step=3, loss=1.2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    log.truncate_after(1)  # a resume at step 1 rewrites the later lines
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]
    assert capsys.readouterr().err == ""


def test_a_damaged_line_inside_the_metrics_log_is_one_line_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    before = '{"step": 1}\n[1, 2]\n{"step": 3}\n'
    path.write_text(before)
    with pytest.raises(DrrError, match=rf"^{path}: line 2 is not a JSON object"):
        MetricsLog(path).truncate_after(3)
    assert path.read_text() == before


def test_the_metrics_log_of_another_process_is_not_touched(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 9, "lo')
    log = MetricsLog(path, enabled=False)  # ranks other than 0
    log.truncate_after(0)
    log.write(step=1)
    assert path.read_text() == '{"step": 9, "lo'


def test_o_nofollow_is_what_refuses_the_link(tmp_path, monkeypatch):
    """The check is the open itself (no test-then-open race): every open of the log's own name
    asks not to follow a link."""
    opened = []
    real = os.open

    def spy(path, flags, *a, **k):
        opened.append((str(path), flags))
        return real(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", spy)
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(step=1)
    log.truncate_after(1)
    own = [flags for path, flags in opened if path == str(log.path)]
    assert len(own) == 2 and all(flags & os.O_NOFOLLOW for flags in own)
