"""Where a workflow run's time went, and whether a time budget can be met at that day's rates.

    python benchmarks/suite_budget.py .snakemake/log/<run>.snakemake.log [<resumed run>.snakemake.log ...]
    python benchmarks/suite_budget.py --cores 2 --budget-min 120 --milestone train_transformer LOG...

Reads Snakemake's own logs (drr.workflow.runlog): per rule the jobs finished, their summed wall minutes
(job-min) and the longest; jobs that started and never finished (killed, failed) as lost work; the
wall time of each log; and the lower bound job-min / cores, which no order of the jobs can beat
when each job uses one core (the workflow's jobs run one thread each on a machine of `--cores`).
A run resumed after a stop is given as its logs in order; the sum then counts the finished jobs of
each, so it measures the work of one whole run without the lost part.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drr.workflow import runlog  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="Snakemake logs of one run, first one first")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--budget-min", type=float, default=120.0)
    p.add_argument("--milestone", action="append", default=[],
                   help="also print when the last job of this rule finished, from the first log's start")
    args = p.parse_args(argv)
    logs = []
    for path in args.logs:
        try:
            logs.append(runlog.read(path))
        except OSError as e:
            sys.exit(f"{path}: cannot read the log ({e.strerror})")
    print(runlog.report(logs, args.cores, args.budget_min))
    for rule in args.milestone:
        t = runlog.last_finish(logs, rule)
        print(f"last {rule} finished: " + ("never" if t is None else f"{t:.1f} min after the start"))


if __name__ == "__main__":
    main()
