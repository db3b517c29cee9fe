# Configuration: the workflow config (configs/workflow.yaml) names the suite of experiments; each
# experiment is resolved by drr.config (configs/base.yaml + configs/experiments/<name>.yaml, keys
# checked, errors naming file and key) and validated here against the same JSON schema. Variants
# (ablation cells such as t_draft=16, or override files) are named and resolved by drr.studies.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import drr.config
import drr.studies
from drr.errors import DrrError

validate(config, "../schemas/workflow.schema.yaml")

# The interpreter running Snakemake runs the rules too (a venv or conda env that has drr).
PY = sys.executable

if config["suite"] not in config["suites"]:
    raise WorkflowError(f"configs/workflow.yaml: key 'suite' is {config['suite']!r}, "
                        f"not one of {sorted(config['suites'])}")
SUITE_SPEC = config["suites"][config["suite"]]
SUITE = SUITE_SPEC["experiments"]
for _role in drr.studies.ROLES:
    if SUITE_SPEC[_role] is not None and SUITE_SPEC[_role] not in SUITE:
        raise WorkflowError(f"configs/workflow.yaml: suites.{config['suite']}.{_role} is "
                            f"{SUITE_SPEC[_role]!r}, which is not one of its experiments")
try:
    STUDIES = drr.studies.Studies(workflow.basedir)
except DrrError as e:
    raise WorkflowError(str(e))


def experiment_file(name):
    return f"configs/experiments/{name}.yaml"


def _load(name):
    try:
        cfg = drr.config.load_config(experiment_file(name))
    except DrrError as e:
        raise WorkflowError(str(e))
    validate(cfg, "../schemas/experiment.schema.yaml")
    return cfg


EXPERIMENTS = {name: _load(name) for name in SUITE}

# Tokenizers are shared by name: every experiment naming one must agree on what builds it.
TOKENIZER_OF = {}  # tokenizer name -> first experiment (sorted) that uses it
for name in sorted(EXPERIMENTS):
    tok = EXPERIMENTS[name]["tokenizer"]["name"]
    if tok in TOKENIZER_OF:
        first = EXPERIMENTS[TOKENIZER_OF[tok]]
        mine = EXPERIMENTS[name]
        for section in ("tokenizer", "data"):
            if drr.config.config_hash(first[section]) != drr.config.config_hash(mine[section]):
                raise WorkflowError(
                    f"{experiment_file(name)}: tokenizer '{tok}' is also built by "
                    f"{experiment_file(TOKENIZER_OF[tok])} with a different '{section}' section; "
                    "give one of them another tokenizer.name")
    else:
        TOKENIZER_OF[tok] = name
IMPORTED = sorted(t for t, e in TOKENIZER_OF.items() if EXPERIMENTS[e]["tokenizer"]["checkpoint"])
TRAINED = sorted(t for t in TOKENIZER_OF if t not in IMPORTED)


def one_of(names):
    """A wildcard regex matching exactly these names (nothing, if there are none)."""
    import re
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def tokenizer_config(wildcards):
    return experiment_file(TOKENIZER_OF[wildcards.tokenizer])


def tokenizer_hash(wildcards):
    """Reruns a tokenizer's jobs when what builds it changes (seed, data, tokenizer sections)."""
    cfg = EXPERIMENTS[TOKENIZER_OF[wildcards.tokenizer]]
    return drr.config.config_hash({k: cfg[k] for k in ("seed", "data", "tokenizer")})


def experiment_config(wildcards):
    return experiment_file(wildcards.experiment)


def transformer_hash(wildcards):
    """Reruns an experiment's training when what builds it changes."""
    cfg = EXPERIMENTS[wildcards.experiment]
    return drr.config.config_hash({k: cfg[k] for k in ("seed", "data", "tokenizer", "transformer")})


# Where each experiment's transformer trains (see workflow/rules/transformer.smk).
# Experiments whose transformer is imported (transformer.checkpoint: an official RQ-Transformer)
# are neither trained nor given a training report.
IMPORTED_TRANSFORMERS = sorted(n for n, c in EXPERIMENTS.items() if c["transformer"]["checkpoint"])
TRAINED_INPROCESS = sorted(n for n, c in EXPERIMENTS.items() if n not in IMPORTED_TRANSFORMERS
                           and c["transformer"]["launch"]["executor"] == "inprocess")
TRAINED_SUBMITTED = sorted(n for n in EXPERIMENTS
                           if n not in TRAINED_INPROCESS and n not in IMPORTED_TRANSFORMERS)

# Caption tokenizers: one per image tokenizer of a text-conditional experiment, trained on the
# captions of its training code map.
TEXT_TOKENIZER_OF = {}
for name in sorted(EXPERIMENTS):
    if EXPERIMENTS[name]["transformer"]["model"]["cond"]["type"] == "text":
        TEXT_TOKENIZER_OF.setdefault(EXPERIMENTS[name]["tokenizer"]["name"], name)


def text_tokenizer_path(cfg):
    return f"results/text/{cfg['tokenizer']['name']}/bpe.json"


# Variants of an experiment: "default"; an ablation cell "t_draft=16", "t_draft=8,strategy=top-c"
# or "base" (configs/studies.yaml); or the name of an override file configs/ablations/<variant>.yaml
# (sampling, generation and metrics keys) applied on top of it. See drr/studies.py.
def variant_files(experiment, variant):
    files = [experiment_file(experiment)]
    if variant != "default" and not STUDIES.is_cell(variant):
        files.append(f"configs/ablations/{variant}.yaml")
    return files


_RESOLVED = {}
# Absolute: resolved() also runs from input functions, after parsing, where relative paths fail.
EXPERIMENT_SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "experiment.schema.yaml")


def resolved(experiment, variant="default"):
    key = (experiment, variant)
    if key not in _RESOLVED:
        try:
            cfg = STUDIES.config(experiment, variant)
        except DrrError as e:
            raise WorkflowError(str(e))
        validate(cfg, EXPERIMENT_SCHEMA)
        for section in ("seed", "data", "tokenizer", "transformer"):
            if cfg[section] != EXPERIMENTS[experiment][section]:
                raise WorkflowError(f"configs/ablations/{variant}.yaml: changes '{section}'; an ablation "
                                    "may change only sampling, generation and metrics keys")
        _RESOLVED[key] = cfg
    return _RESOLVED[key]


def variant_configs(wildcards):
    """The command-line config of a variant: --config files, then --set overrides of a cell."""
    args = [f"--config {f}" for f in variant_files(wildcards.experiment, wildcards.variant)]
    if STUDIES.is_cell(wildcards.variant):
        try:
            cell = STUDIES.parse_cell(wildcards.variant)
            args += [f"--set {s}" for s in STUDIES.cell_settings(wildcards.experiment, cell)]
        except DrrError as e:
            raise WorkflowError(str(e))
    return " ".join(args)


def samples_hash(wildcards):
    """Regenerates samples when anything that makes them changes."""
    cfg = resolved(wildcards.experiment, wildcards.variant)
    return drr.config.config_hash({k: v for k, v in cfg.items() if k != "metrics"})


def num_shards(experiment, variant):
    gen = resolved(experiment, variant)["generation"]
    return -(-gen["num_samples"] // gen["shard_size"])


def tokenizer_dir(cfg):
    return f"results/tokenizers/{cfg['tokenizer']['name']}"


def codes_dir(cfg, split):
    return f"results/codes/{cfg['tokenizer']['name']}/{cfg['data']['name']}/{split}"


def all_targets():
    out = []
    for cfg in EXPERIMENTS.values():
        tok = cfg["tokenizer"]["name"]
        out += [f"{tokenizer_dir(cfg)}/checkpoint.pt", f"{tokenizer_dir(cfg)}/report.json",
                f"reports/tokenizers/{tok}.md", f"reports/tokenizers/{tok}.png"]
        out += [codes_dir(cfg, cfg["data"][s]) for s in ("train_split", "eval_split")]
    for name in EXPERIMENTS:
        if name not in IMPORTED_TRANSFORMERS:
            out += [f"reports/transformers/{name}.md", f"reports/transformers/{name}.png"]
        out += [f"results/transformers/{name}/checkpoint.pt", f"results/samples/{name}/default/samples.npz",
                f"reports/samples/{name}/default.png", f"results/speed/{name}/default.json",
                f"reports/figures/{name}/inpainting.png", f"results/metrics/{name}/default.parquet"]
    return sorted(set(out))
