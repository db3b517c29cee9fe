"""Run a job in this process, or through submitit (SLURM, or its local executor), and wait for it.

The `launch` section of a stage (for example `transformer.launch`) decides::

    executor: inprocess   # this process (torchrun sets up several GPUs itself)
    executor: local       # submitit's LocalExecutor: gpus_per_node processes on this machine
    executor: slurm       # submitit's SlurmExecutor: nodes x gpus_per_node tasks, one per GPU

A job is a picklable object with `__call__` (run as one submitit task; it reads its rank from
submitit's JobEnvironment), `run()` (run in this process) and `checkpoint()` (submitit requeue):
`TrainingJob` is one, which the tokenizer's and the transformer's training jobs extend.
This command stays in the foreground until the job ends, printing the job's id, log paths and
newest progress line, so a Snakemake rule that calls it finishes exactly when the job does.
"""

from __future__ import annotations

import abc
import sys
import time
from pathlib import Path

from drr.core.errors import DrrError
from drr.core.files import write_text

EXECUTORS = ("inprocess", "local", "slurm")


def slurm_parameters(launch: dict, name: str) -> dict:
    """submitit SlurmExecutor parameters of a launch section (None values are left to SLURM)."""
    params = {
        "job_name": name,
        "nodes": launch["nodes"],
        "ntasks_per_node": launch["gpus_per_node"],
        "gpus_per_node": launch["gpus_per_node"],
        "cpus_per_task": launch["cpus_per_task"],
        "mem": f"{launch['mem_gb']}G" if launch["mem_gb"] else None,
        "time": launch["timeout_min"],
        "partition": launch["partition"],
        "account": launch["account"],
        "qos": launch["qos"],
        "constraint": launch["constraint"],
        "signal_delay_s": launch["signal_delay_s"],
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(launch: dict, folder: Path, name: str):
    import submitit

    kind = launch["executor"]
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=launch["max_requeues"])
        ex.update_parameters(tasks_per_node=launch["gpus_per_node"], nodes=1,
                             timeout_min=launch["timeout_min"],
                             signal_delay_s=launch["signal_delay_s"])
        return ex
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=launch["max_requeues"])
        # --requeue: where the cluster sets JobRequeue=0 (common), `scontrol requeue` of a job that
        # did not ask for it fails ("Requested operation is presently disabled"), so a timed-out
        # job could not requeue itself, and a preempted one would be cancelled instead.
        ex.update_parameters(**slurm_parameters(launch, name),
                             additional_parameters={"requeue": True})
        return ex
    raise DrrError(f"launch.executor {kind!r} is not one of {EXECUTORS}")


class TrainingJob(abc.ABC):
    """A picklable training call for submitit: one task per GPU, checkpointable.

    submitit runs it on every task; it exports the torch.distributed environment from submitit's
    JobEnvironment, then trains. On preemption or time-out submitit's signal reaches the loop's
    StopSignal first (the state is saved at a step boundary), then submitit's own handler, which
    calls `checkpoint()` and requeues the job: the requeued job runs this same call, which
    resumes from `drr.core.checkpoint.latest_state` of the run folder.

    A subclass sets `self.args` (the arguments of its training function, and all the job holds:
    the pickle, and so `launch`'s fingerprint of the job, is the class and `args`), `out_arg` (the
    index in `args` of the final checkpoint, whose folder is the run folder) and `train()`.
    """

    args: tuple
    out_arg: int

    @property
    def out(self) -> Path:
        return self.args[self.out_arg]

    @abc.abstractmethod
    def train(self) -> Path:
        """Train in this process; return the final checkpoint."""

    def __call__(self) -> str:
        import os

        import submitit
        env = submitit.JobEnvironment()
        os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks),
                          LOCAL_RANK=str(env.local_rank))
        os.environ.setdefault("MASTER_ADDR", env.hostnames[0])
        os.environ.setdefault("MASTER_PORT", str(20000 + int(env.job_id.split("_")[0]) % 20000))
        return self.run()

    def run(self) -> str:
        """Train in this process (torch.distributed settings, if any, from the environment),
        holding the run folder's lock (rank 0)."""
        from drr.core.lock import hold, is_rank0

        out = self.out
        with hold(out.parent, out.name, enabled=is_rank0()):
            return str(self.train())

    def checkpoint(self):
        import submitit

        from drr.core import checkpoint
        print(f"requeueing; the requeued job resumes from {checkpoint.latest_state(self.out.parent)}",
              file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(type(self)(*self.args))


def _last_progress_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    lines = [line for line in lines if line.startswith("[")]
    return lines[-1] if lines else None


# The SLURM job this command last submitted for a run folder, and a fingerprint of what it runs.
# A rerun while that job is still queued or running (the submitting session died: a closed login
# shell, a killed Snakemake) waits for it instead of starting a second job that would train in the
# same run folder at once; if the job runs something else (the config changed), it is cancelled.
JOB_ID_FILE = "slurm-job-id"
_ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
           "SUSPENDED", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "PREEMPTED")


def _fingerprint(job) -> str:
    import hashlib
    import pickle
    return hashlib.sha256(pickle.dumps(job)).hexdigest()[:16]


def _running_slurm_job(launch: dict, folder: Path, fingerprint: str):
    """The submitit job of JOB_ID_FILE if SLURM still has it queued or running and it runs the
    same job, else None. (A job that has ended is not reused: its output may be gone since; a new
    job resumes from the run's saved state, so a finished training costs a moment, not a rerun.)"""
    import submitit

    try:
        job_id, _, recorded = (folder / JOB_ID_FILE).read_text().strip().partition(" ")
    except OSError:
        return None
    if not job_id.isdigit():
        return None
    ntasks = launch["nodes"] * launch["gpus_per_node"]
    job = submitit.SlurmJob(folder=folder / "%j", job_id=job_id, tasks=tuple(range(ntasks)))
    state = (job.watcher.get_state(job_id, mode="force").upper().split() or ["UNKNOWN"])[0]
    if state not in _ACTIVE:
        return None
    if recorded != fingerprint:
        print(f"cancelling job {job_id} ({state}): it was submitted for another config of this "
              "run", file=sys.stderr, flush=True)
        job.cancel(check=False)
        deadline = time.monotonic() + 300  # let it end (and stop writing) before the new one starts
        while time.monotonic() < deadline and not job.watcher.is_done(job_id, mode="force"):
            time.sleep(5)
        return None
    return job


def launch(job, launch: dict, folder, name: str, poll_s: float = 30.0):
    """Run `job` as `launch` says; return its result (rank 0's). A failed job raises DrrError."""
    if launch["executor"] == "inprocess":
        return job.run()
    folder = Path(folder)
    fingerprint = _fingerprint(job)
    submitted = (_running_slurm_job(launch, folder, fingerprint) if launch["executor"] == "slurm"
                 else None)
    if submitted is not None:
        print(f"job {submitted.job_id}, submitted by an earlier run of this command, is still "
              f"{submitted.state}: waiting for it instead of submitting another; logs: "
              f"{submitted.paths.stdout} and {submitted.paths.stderr}", file=sys.stderr, flush=True)
    else:
        executor = make_executor(launch, folder / "%j", name)
        submitted = executor.submit(job)
        if launch["executor"] == "slurm":
            write_text(folder / JOB_ID_FILE, f"{submitted.job_id} {fingerprint}\n")
        print(f"submitted {launch['executor']} job {submitted.job_id}; logs: {submitted.paths.stdout} "
              f"and {submitted.paths.stderr}", file=sys.stderr, flush=True)
    shown, last = None, time.monotonic()
    while not submitted.done():
        time.sleep(1.0)
        if time.monotonic() - last < poll_s:
            continue
        last = time.monotonic()
        line = _last_progress_line(submitted.paths.stderr)
        if line and line != shown:
            print(f"job {submitted.job_id}: {line}", file=sys.stderr, flush=True)
            shown = line
    try:
        return submitted.results()[0]
    except Exception as e:  # submitit re-raises the job's failure with its traceback text
        raise DrrError(f"job {submitted.job_id} failed: {_job_error(str(e))} (job log: "
                       f"{submitted.paths.stderr})") from None


def _job_error(message: str) -> str:
    """The line of a submitit failure that says what went wrong: the exception line at the end
    of the job's traceback (FailedJobError), or the first line (UncompletedJobError: the job was
    cancelled, timed out, ran out of memory or lost its node without a result)."""
    parts = message.split("----------------------")
    if len(parts) >= 3:
        lines = [line.strip() for line in parts[1].strip().splitlines() if line.strip()]
        if lines:
            return lines[-1]
    lines = message.strip().splitlines()
    return lines[0] if lines else "no message"
