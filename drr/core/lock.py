"""One writer per output: a lock file next to what a stage writes, held while it writes.

Every stage that writes into a folder (training, code maps, sample generation, metrics) holds
``<folder>/.<name>.lock`` with ``fcntl.flock`` while it runs. The operating system releases the
lock when the holder exits or is killed, so a lock is never left behind by a dead job. A second
writer of the same output waits up to `WAIT_S` seconds (a killed holder may still be saving its
state), then stops with one line naming the folder and the holder's pid. The lock file is opened
without following a link (drr.core.files.open_regular): a link planted at its name is refused in
one line, never written through.

A writer also stops when the process that started it dies (`watch_owner`): Snakemake runs each
job as ``bash -c '... python -m drr...'``, so when only Snakemake is killed its job's shell and
Python process are left running, and a rerun would start a second writer in the same folder.
``prctl(PR_SET_PDEATHSIG)`` cannot cover that (it fires when the direct parent dies, and the
direct parent, the shell, lives on), so the watcher looks past ``sh -c`` wrappers to the first
real ancestor and, once it is gone, sends this process SIGTERM: a training loop saves its state
at the next step boundary and exits (drr.core.training.StopSignal); other stages end at once, their
outputs being written to temporary names and renamed.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from drr.core.errors import DrrError
from drr.core.files import open_regular

WAIT_S = 60.0   # seconds a second writer waits for the holder before it stops
POLL_S = 1.0    # seconds between checks of the lock (waiting) and of the owner (watching)
SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}


def is_rank0() -> bool:
    """Whether this process is rank 0 of its job (RANK, as torchrun and drr's submitit jobs set
    it; a plain process is rank 0): the one process of a job that holds its output's lock."""
    return os.environ.get("RANK", "0") == "0"


def lock_path(folder, name: str) -> Path:
    return Path(folder) / f".{name}.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def hold(folder, name: str, enabled: bool = True, watch: bool = True,
         output_is_folder: bool = False):
    """Hold the lock of output `name` in `folder` (created if needed) for the block, and stop this
    process if its owner dies (`watch`). Also the writability check of `folder`: a folder that
    cannot be written, a file where the folder should be, or a folder at ``folder/name`` where the
    output is a file (a file there, with `output_is_folder`) is a DrrError before any work is done.
    `enabled` False (ranks other than 0 of a distributed job): no lock, no watcher."""
    if not enabled:
        yield
        return
    folder = Path(folder)
    path = lock_path(folder, name)
    if os.path.lexists(folder) and not folder.is_dir():
        raise DrrError(f"{folder}: is a file, but the output goes into a folder of that name")
    out = folder / name
    if out.is_dir() and not out.is_symlink() and not output_is_folder:
        raise DrrError(f"{out}: is a folder, and this output is a file; remove the folder or name "
                       f"another output")
    if output_is_folder and os.path.lexists(out) and not out.is_dir():
        raise DrrError(f"{out}: is a file, and this output is a folder; remove the file or name "
                       f"another output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open_regular(path, "a+")
    except OSError as e:
        raise DrrError(f"{folder}: output folder cannot be written ({e.strerror})") from None
    try:
        deadline, told = time.monotonic() + WAIT_S, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DrrError(f"{folder}: another drr process ({_holder(path)}) is writing "
                                   f"{name} in this folder; wait for it to end or stop it") from None
                if not told:
                    print(f"waiting up to {WAIT_S:.0f} s for {_holder(path)}, which is writing "
                          f"{name} in {folder}", file=sys.stderr, flush=True)
                    told = True
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
        except OSError as e:
            raise DrrError(f"{folder}: output folder cannot be written ({e.strerror})") from None
        stop = watch_owner() if watch else None
        try:
            yield
        finally:
            if stop is not None:
                stop.set()
    finally:
        f.close()  # releases the lock


# --- the owner watcher -----------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of `pid` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def _is_shell_wrapper(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(argv[0].decode(errors="replace")).name in SHELLS and b"-c" in argv[1:]


def owner() -> tuple[int, int] | None:
    """(pid, start time) of the first ancestor that is not an ``sh -c`` wrapper, or None where
    that cannot be known (no /proc) or is init."""
    pid = os.getppid()
    while pid > 1 and _is_shell_wrapper(pid):
        st = _stat(pid)
        if st is None:
            return None
        pid = st[0]
    st = _stat(pid) if pid > 1 else None
    return (pid, st[1]) if st else None


def watch_owner() -> threading.Event | None:
    """Start a daemon thread that sends this process SIGTERM once its owner (`owner()`) or its
    parent is gone; returns the Event that stops the thread (None when there is nothing to watch)."""
    who, parent = owner(), os.getppid()
    if who is None:
        return None
    stop = threading.Event()

    def run():
        while not stop.wait(POLL_S):
            st = _stat(who[0])
            if os.getppid() != parent or st is None or st[1] != who[1]:
                print(f"the process that started this one (pid {who[0]}) is gone: stopping",
                      file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=run, name="drr-owner-watch", daemon=True).start()
    return stop
