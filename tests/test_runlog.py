"""drr.workflow.runlog: job times read from a Snakemake log (the format of Snakemake 9, as in .snakemake/log)."""

import subprocess
import sys

from drr.core.config import REPO
from drr.workflow import runlog

LOG = """\
Building DAG of jobs...
Provided cores: 2
Select jobs to execute...
Execute 2 jobs...
[Sun Dec  6 06:13:10 2026]
localrule train_tokenizer:
    output: results/tokenizers/t/checkpoint.pt
    log: results/tokenizers/t/train.log
    jobid: 4
    reason: Missing output files: results/tokenizers/t/checkpoint.pt
    resources: tmpdir=/tmp, gpu=1
[Sun Dec  6 06:13:10 2026]
localrule reference_stats:
    output: results/reference/r.npz
    jobid: 3
    resources: tmpdir=/tmp, gpu=1
[Sun Dec  6 06:23:10 2026]
Finished jobid: 4 (Rule: train_tokenizer)
1 of 4 steps (25%) done
[Sun Dec  6 06:23:10 2026]
rule compute_metrics:
    input: results/samples/s/default/samples.npz
    output: results/metrics/s/default.parquet
    jobid: 7
[Sun Dec  6 06:28:10 2026]
Finished jobid: 3 (Rule: reference_stats)
2 of 4 steps (50%) done
[Sun Dec  6 06:28:10 2026]
localrule compute_metrics:
    output: results/metrics/s/base.parquet
    jobid: 8
RuleException:
CalledProcessError in file "workflow/rules/metrics.smk", line 69:
Command 'python -m drr.metrics.score' died with <Signals.SIGTERM: 15>.
[Sun Dec  6 06:43:10 2026]
Error in rule compute_metrics:
    message: None
    jobid: 7
    output: results/metrics/s/default.parquet
Will exit after finishing currently running jobs (scheduler).
[Sun Dec  6 06:53:10 2026]
Finished jobid: 8 (Rule: compute_metrics)
3 of 4 steps (75%) done
"""


def test_jobs_their_times_and_the_killed_one():
    log = runlog.parse(LOG, "x.log")
    jobs = {j.jobid: j for j in log.jobs}
    assert set(jobs) == {3, 4, 7, 8}
    assert jobs[4].rule == "train_tokenizer" and jobs[4].minutes == 10
    assert jobs[3].rule == "reference_stats" and jobs[3].minutes == 15
    assert jobs[8].output == "results/metrics/s/base.parquet" and jobs[8].minutes == 25
    assert jobs[7].failed and jobs[7].end is None
    assert log.wall_min == 40


def test_by_rule_counts_finished_work_and_lost_work_apart():
    rules = runlog.by_rule([runlog.parse(LOG)])
    assert rules["compute_metrics"] == {"done": 1, "job_min": 25.0, "max_min": 25.0, "lost": 1, "lost_min": 30.0}
    assert rules["train_tokenizer"]["done"] == 1 and rules["train_tokenizer"]["lost"] == 0


def test_bound_and_budget_verdict():
    logs = [runlog.parse(LOG)]
    text = runlog.report(logs, cores=2, budget_min=20)   # 50 job-min of finished work
    assert "no order of the jobs takes less than 25.0 min" in text
    assert "budget 20 min: cannot be met" in text
    assert "budget 30 min: not ruled out by this bound (5.0 min to spare" in runlog.report(logs, cores=2, budget_min=30)
    assert runlog.last_finish(logs, "train_tokenizer") == 10
    assert runlog.last_finish(logs, "claims") is None


def test_resumed_run_sums_the_finished_jobs_of_each_log():
    second = LOG.replace("06:", "08:")
    rules = runlog.by_rule([runlog.parse(LOG), runlog.parse(second)])
    assert rules["compute_metrics"]["done"] == 2 and rules["compute_metrics"]["job_min"] == 50


def test_cli_prints_the_table(tmp_path):
    p = tmp_path / "run.snakemake.log"
    p.write_text(LOG)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "suite_budget.py"), str(p),
                          "--milestone", "reference_stats"], capture_output=True, text=True, check=True).stdout
    assert "compute_metrics" in out and "last reference_stats finished: 15.0 min after the start" in out
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "suite_budget.py"), str(tmp_path / "none.log")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "none.log: cannot read the log" in bad.stderr
