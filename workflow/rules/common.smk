# Configuration and plan: the workflow config (configs/workflow.yaml) names the suite; drr.workflow.plan
# resolves its experiments (configs/base.yaml + configs/experiments/<name>.yaml, keys checked,
# errors naming file and key), validated here against the JSON schema, and computes everything the
# rules ask: inputs, the variants and cells of each report, and per stage the part of a config
# that can change its result (the `hash` parameter of every rule: an edit of any other key reruns
# nothing). The rule files are wiring.
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import drr.core.config
import drr.core.stages
import drr.data.check
import drr.workflow.claims
import drr.workflow.jobenv
import drr.workflow.plan
import drr.workflow.report_spec
from drr.core.errors import DrrError

validate(config, "../schemas/workflow.schema.yaml")

# A run on SLURM needs SLURM's client commands here: without them Snakemake's SLURM executor fails
# every job after a minute, in some 60 lines that name one missing command. So a run whose
# executor is slurm (--profile slurm, or --executor slurm) stops before it submits anything, with
# one line. Snakemake knows its executor once it runs the workflow, so the check is an onstart
# handler (dry runs submit nothing and do not call it).
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol")


onstart:
    _missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if workflow.executor_plugin.name == "slurm" and _missing:
        print(f"error: executor slurm: SLURM's {', '.join(_missing)} "
              f"{'is' if len(_missing) == 1 else 'are'} not on the PATH; install SLURM's client "
              f"commands ({', '.join(SLURM_COMMANDS)}: Debian/Ubuntu package slurm-client) or drop "
              "--profile slurm (or --executor slurm) to run on this machine", file=sys.stderr)
        sys.exit(2)


# The jobs' environment: with the workflow key glibc_tunables set (drr/workflow/jobenv.py; null by
# default), every job's shell exports GLIBC_TUNABLES first (a value the user exported is kept), so
# glibc's malloc keeps freed memory for reuse: the same numbers, less time in page faults, more
# memory. Snakemake's own process is unaffected.
try:
    _prefix = drr.workflow.jobenv.shell_prefix(config.get("glibc_tunables"))
except DrrError as e:
    raise WorkflowError(str(e))
if _prefix is not None:
    shell.prefix(_prefix)


# The `suite` parameter of the report_spec rule, passed as `--suite`. The suite, and with a
# scale (workflow key `scale`: size overlays of configs/scales/<scale>/) [suite, "--scale", scale],
# so that the reports' specs resolve the configs as the jobs did; without one the plain string.
SUITE = config["suite"] if config.get("scale") is None else [config["suite"], "--scale", config["scale"]]

# The interpreter running Snakemake runs the rules too (`make setup`'s .venv, or the conda env of
# environment.yml): the rules declare no `conda:` environment, so --sdm conda has nothing to build.
PY = sys.executable

try:
    PLAN = drr.workflow.plan.Plan(workflow.basedir, config)
except DrrError as e:
    raise WorkflowError(str(e))
for _cfg in PLAN.experiments.values():
    validate(_cfg, "../schemas/experiment.schema.yaml")
one_of = drr.workflow.plan.one_of

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
    return lambda w: drr.core.stages.stage_hash(PLAN.experiments[PLAN.tokenizer_of[w.tokenizer]], stage)


def experiment_config(w):
    return PLAN.config_value(w.experiment)


def chosen_config(use):
    """The `config` parameter of a job that reads the workflow's choices of `use` (train | sample:
    configs/studies.yaml `selections`) after the experiment's layers; the plain file elsewhere."""
    return lambda w: PLAN.config_value(w.experiment, use)


def experiment_hash(stage):
    return lambda w: _plan("hash", stage, w.experiment)


def variant_hash(stage):
    return lambda w: _plan("hash", stage, w.experiment, w.variant)


def variant_args(w):
    return _plan("variant_args", w.experiment, w.variant)


def transformer_inputs(w):
    return PLAN.transformer_inputs(w.experiment)


def sampling_inputs(w):
    return PLAN.sampling_inputs(w.experiment, w.get("variant", "default"))


def option(flag, name):
    """[flag, input.name] when the job has that input (text-conditional models), else []."""
    return lambda w, input: [flag, input[name]] if name in input.keys() else []


def text_condition_args(w, input):
    return ["--text-tokenizer", input.text, "--captions", input.captions] if "text" in input.keys() else []


def data_in_place(experiment, split):
    """An input function naming no file, for the rules whose jobs read images: when Snakemake plans
    such a job it checks that job's split of its experiment's data (drr.data.check, a few directory
    entries), so a missing dataset is one line before any job is submitted, and only data that the
    requested targets read is checked (Table 1 needs no CC-3M). `experiment(w)` and `split(w, cfg)`
    name them from the wildcards. The tiny suite's Fashion-MNIST is found or downloaded by its jobs."""
    def check(w):
        name = experiment(w)
        cfg = PLAN.experiments[name]
        try:
            drr.data.check.check(cfg, PLAN.experiment_file(name), [split(w, cfg)])
        except DrrError as e:
            raise WorkflowError(str(e))
        return []
    return check


def tokenizer_data(key):
    """data_in_place for the `key` split (train_split, eval_split) of the tokenizer's experiment."""
    return data_in_place(lambda w: PLAN.tokenizer_of[w.tokenizer], lambda w, cfg: cfg["data"][key])


codes_data = data_in_place(lambda w: PLAN.tokenizer_of[w.tokenizer], lambda w, cfg: w.split)
reference_data = data_in_place(lambda w: PLAN.reference_experiment[w.reference],
                               lambda w, cfg: cfg["metrics"]["reference_split"])


def report_inputs(w):
    """A table's or figure's spec, and the metrics (and speed) files of its runs."""
    return dict(PLAN.report_inputs(w.report), spec=drr.workflow.report_spec.spec_file(w.report))


def spec_inputs(w):
    """What a spec is made from besides the plan's configs: the claims file, for the claims' spec."""
    return {"claims": drr.workflow.claims.CLAIMS_FILE} if w.report == drr.workflow.report_spec.CLAIMS else {}


def spec_hash(w):
    try:
        return drr.workflow.report_spec.spec_hash(PLAN, w.report)
    except DrrError as e:
        raise WorkflowError(str(e))


def claims_inputs(w):
    """The claims' spec, the metrics and speed files of every run configs/claims.yaml reads, and
    the tables and figures of the reports its claims name."""
    try:
        inputs = drr.workflow.claims.claims_inputs(PLAN, drr.workflow.claims.CLAIMS_FILE)
    except DrrError as e:
        raise WorkflowError(str(e))
    inputs.pop("claims")  # read by the spec's job (rule report_spec), not by the report's
    return dict(inputs, spec=drr.workflow.report_spec.spec_file(drr.workflow.report_spec.CLAIMS))


def grid_args(w, input):
    spec = PLAN.studies.pictures
    if w.grid == "classes":
        return (["--classes", *(str(c) for c in PLAN.grid_classes(w.experiment))]
                + ["--per-class", str(spec["class_grids"]["per_class"])])
    return ["--text-tokenizer", input.text, "--captions", input.captions,
            "--num-captions", str(spec["caption_grids"]["captions"]),
            "--per-caption", str(spec["caption_grids"]["per_caption"])]
