"""Where a workflow run's time went, read from Snakemake's own logs (.snakemake/log/*.snakemake.log).

Snakemake stamps every job's start and its ``Finished jobid: N`` line with the wall-clock time, so
a log gives each job's wall time. ``job-min`` below is the sum of those over jobs; with ``cores``
jobs of one thread each running at once, a run cannot take less than ``job-min / cores`` however
its jobs are ordered: that bound is what decides whether a budget can be met at the rates of the
day. Jobs that started and never finished (killed, failed, still running when the log ends) are
listed apart, as lost or unfinished work.

    python benchmarks/suite_budget.py .snakemake/log/2026-12-06T061309.977370.snakemake.log [more logs]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_OUTPUT = re.compile(r"^\s+output: (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_ERROR = re.compile(r"^Error in rule (\w+):$")


@dataclass
class Job:
    rule: str
    jobid: int
    output: str
    start: datetime
    end: datetime | None = None      # None: it never finished in this log
    failed: bool = False

    @property
    def minutes(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds() / 60


@dataclass
class RunLog:
    path: str
    start: datetime | None
    end: datetime | None
    jobs: list[Job]

    @property
    def wall_min(self) -> float:
        return 0.0 if self.start is None else (self.end - self.start).total_seconds() / 60


def parse(text: str, path: str = "<log>") -> RunLog:
    """Jobs of one Snakemake log. A block `[stamp]` / `rule NAME:` / ... / `jobid: N` starts job N at
    that stamp; `[stamp]` / `Finished jobid: N` ends it; `Error in rule NAME:` / ... `jobid: N`
    marks it failed (its time is then not counted as done work)."""
    stamp = first = None
    jobs: dict[int, Job] = {}
    rule = output = None
    error_rule = None
    for line in text.splitlines():
        if m := _STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            rule = output = error_rule = None
        elif m := _RULE.match(line):
            rule, output = m.group(1), ""
        elif m := _ERROR.match(line):
            error_rule = m.group(1)
        elif m := _OUTPUT.match(line):
            output = m.group(1) if rule else output
        elif m := _JOBID.match(line):
            jobid = int(m.group(1))
            if error_rule is not None:
                if jobid in jobs and jobs[jobid].end is None:
                    jobs[jobid].failed = True
                error_rule = None
            elif rule is not None and stamp is not None:
                jobs[jobid] = Job(rule, jobid, output or "", stamp)
                rule = None
        elif (m := _FINISHED.match(line)) and stamp is not None:
            job = jobs.get(int(m.group(1)))
            if job is not None:
                job.end = stamp
    return RunLog(path, first, stamp, list(jobs.values()))


def read(path) -> RunLog:
    return parse(Path(path).read_text(errors="replace"), str(path))


def by_rule(logs: list[RunLog]) -> dict[str, dict]:
    """rule -> {'done': n, 'job_min': Σ minutes, 'max_min': longest, 'lost': n, 'lost_min': Σ minutes
    of the jobs that never finished (up to their log's end)}, over all logs."""
    out: dict[str, dict] = {}
    for log in logs:
        for j in log.jobs:
            r = out.setdefault(j.rule, {"done": 0, "job_min": 0.0, "max_min": 0.0, "lost": 0, "lost_min": 0.0})
            if j.end is not None and not j.failed:
                r["done"] += 1
                r["job_min"] += j.minutes
                r["max_min"] = max(r["max_min"], j.minutes)
            else:
                r["lost"] += 1
                r["lost_min"] += (log.end - j.start).total_seconds() / 60
    return out


def last_finish(logs: list[RunLog], rule: str) -> float | None:
    """Minutes from the first log's start to the last finished job of `rule` (None: none finished)."""
    ends = [j.end for log in logs for j in log.jobs if j.rule == rule and j.end is not None and not j.failed]
    return None if not ends or logs[0].start is None else (max(ends) - logs[0].start).total_seconds() / 60


def report(logs: list[RunLog], cores: int, budget_min: float) -> str:
    rules = by_rule(logs)
    total = sum(r["job_min"] for r in rules.values())
    lost = sum(r["lost_min"] for r in rules.values())
    lines = [f"{'rule':<20} {'done':>5} {'job-min':>9} {'longest':>8} {'lost':>5} {'lost-min':>9}"]
    for name, r in sorted(rules.items(), key=lambda kv: -kv[1]["job_min"]):
        lines.append(f"{name:<20} {r['done']:>5} {r['job_min']:>9.1f} {r['max_min']:>8.1f} "
                     f"{r['lost']:>5} {r['lost_min']:>9.1f}")
    lines.append(f"{'total':<20} {sum(r['done'] for r in rules.values()):>5} {total:>9.1f} {'':>8} "
                 f"{sum(r['lost'] for r in rules.values()):>5} {lost:>9.1f}")
    for log in logs:
        lines.append(f"log {log.path}: {log.wall_min:.1f} min wall, {len(log.jobs)} jobs started")
    bound = total / cores
    lines.append(f"finished work: {total:.1f} job-min; on {cores} cores at these rates no order of the jobs "
                 f"takes less than {bound:.1f} min ({bound / 60:.2f} h)")
    if bound <= budget_min:
        lines.append(f"budget {budget_min:.0f} min: not ruled out by this bound ({budget_min - bound:.1f} min "
                     f"to spare; the order of the jobs and their dependencies decide the rest)")
    else:
        lines.append(f"budget {budget_min:.0f} min: cannot be met at these rates (the bound is "
                     f"{bound - budget_min:.1f} min over)")
    return "\n".join(lines)
