# Configuration and plan: the workflow config (configs/workflow.yaml) names the suite; drr.plan
# resolves its experiments (configs/base.yaml + configs/experiments/<name>.yaml, keys checked,
# errors naming file and key), validated here against the JSON schema, and computes everything the
# rules ask: inputs, the variants and cells of each report, and per stage the part of a config
# that can change its result (the `hash` parameter of every rule: an edit of any other key reruns
# nothing). The rule files are wiring.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import drr.claims
import drr.data.check
import drr.jobenv
import drr.lock
import drr.plan
from drr.errors import DrrError

validate(config, "../schemas/workflow.schema.yaml")

# Every job inherits this process's environment (cluster jobs too: they parse this file again).
# With the workflow key glibc_tunables set (drr/jobenv.py; null by default), glibc's malloc of each
# job keeps freed memory for reuse: the same numbers, less time in page faults, more memory.
# Snakemake's own process is unaffected.
try:
    os.environ.update(drr.jobenv.job_environment(config.get("glibc_tunables"), os.environ))
except DrrError as e:
    raise WorkflowError(str(e))


# The workflow's default, in effect with a plain `snakemake --cores N`: rerun-incomplete (a job
# cut off by a kill is rerun, not refused with IncompleteFilesException; every stage resumes or
# rewrites atomically). A profile cannot carry it: Snakemake 9 loads a default workflow profile
# only from profiles/default/ in the working directory or beside the Snakefile (the top level
# here), not from workflow/profiles/default/. The run's DAG settings are handed to the workflow
# after this file is parsed, so the setting is applied as they arrive.
def _rerun_incomplete_by_default(wf):
    class Workflow(type(wf)):
        def __setattr__(self, name, value):
            if name == "dag_settings" and value is not None:
                value.force_incomplete = True
            super().__setattr__(name, value)

    wf.__class__ = Workflow


_rerun_incomplete_by_default(workflow)

# Also by default: the locks a killed session left are removed once no session of this workflow is
# alive in the working directory (drr.lock.claim_session), so the plain command reruns after a
# kill instead of stopping with LockException. Jobs that Snakemake runs as processes of their own
# (cluster jobs) parse this file too; only the main process claims the session.
if workflow.is_main_process:
    for _stale in drr.lock.claim_session(Path(".snakemake")):
        print(f"drr: removed {_stale}, a lock left by a Snakemake session that is no longer alive",
              file=sys.stderr)

# The `suite` parameter of the report rules (`--suite {params.suite:q}`): the suite, and with a
# scale (workflow key `scale`: size overlays of configs/scales/<scale>/) [suite, "--scale", scale],
# so that reports resolve the configs as the jobs did; without one the plain string, the value of
# runs made before scales existed (a changed parameter would rerun them).
SUITE = config["suite"] if config.get("scale") is None else [config["suite"], "--scale", config["scale"]]

# The interpreter running Snakemake runs the rules too (a venv or conda env that has drr).
PY = sys.executable

try:
    PLAN = drr.plan.Plan(workflow.basedir, config)
except DrrError as e:
    raise WorkflowError(str(e))
for _cfg in PLAN.experiments.values():
    validate(_cfg, "../schemas/experiment.schema.yaml")
# The suite's data, checked now (a few directory entries each): a missing dataset is one line here,
# not a failed job later. The tiny suite's Fashion-MNIST is found or downloaded by its jobs.
try:
    drr.data.check.check_all(PLAN.experiments, PLAN.experiment_file)
except DrrError as e:
    raise WorkflowError(str(e))
one_of = drr.plan.one_of

# Every wildcard matches only what the plan can make (no path separators, spaces or shell syntax).
wildcard_constraints:
    experiment=one_of(PLAN.experiments),
    variant=PLAN.variant_pattern(),
    tokenizer=one_of(PLAN.tokenizer_of),
    dataset=one_of(PLAN.datasets),
    split=one_of(PLAN.splits),
    shard=r"\d{5}",


def _plan(method, *args):
    try:
        return getattr(PLAN, method)(*args)
    except DrrError as e:
        raise WorkflowError(str(e))


# Input functions and parameters (wildcards -> the plan).
def tokenizer_config(w):
    return PLAN.config_value(PLAN.tokenizer_of[w.tokenizer])


def tokenizer_hash(stage):
    return lambda w: drr.plan.stage_hash(PLAN.experiments[PLAN.tokenizer_of[w.tokenizer]], stage)


def experiment_config(w):
    return PLAN.config_value(w.experiment)


def experiment_hash(stage):
    return lambda w: _plan("hash", stage, w.experiment)


def variant_hash(stage):
    return lambda w: _plan("hash", stage, w.experiment, w.variant)


def variant_args(w):
    return _plan("variant_args", w.experiment, w.variant)


def transformer_inputs(w):
    return PLAN.transformer_inputs(w.experiment)


def sampling_inputs(w):
    return PLAN.sampling_inputs(w.experiment)


def option(flag, name):
    """[flag, input.name] when the job has that input (text-conditional models), else []."""
    return lambda w, input: [flag, input[name]] if name in input.keys() else []


def text_condition_args(w, input):
    return ["--text-tokenizer", input.text, "--captions", input.captions] if "text" in input.keys() else []


def report_inputs(w):
    return PLAN.report_inputs(w.report)


def report_hash(w):
    return drr.plan.config_hash(PLAN.report_spec(w.report))


def claims_inputs(w):
    """Metrics and speed files of every run configs/claims.yaml reads, and the file itself."""
    try:
        return drr.claims.claims_inputs(PLAN, drr.claims.CLAIMS_FILE)
    except DrrError as e:
        raise WorkflowError(str(e))


def grid_args(w, input):
    spec = PLAN.studies.pictures
    if w.grid == "classes":
        return (["--classes", *(str(c) for c in PLAN.grid_classes(w.experiment))]
                + ["--per-class", str(spec["class_grids"]["per_class"])])
    return ["--text-tokenizer", input.text, "--captions", input.captions,
            "--num-captions", str(spec["caption_grids"]["captions"]),
            "--per-caption", str(spec["caption_grids"]["per_caption"])]
