"""The workflow's plan: which results a suite builds, from what, and what part of a config each depends on.

One definition, used everywhere a result is compared with the config that asks for it:

- `stage_config(cfg, stage)`: the part of a resolved experiment config that can change the result
  of a stage (the keys of `STAGES[stage]`, less the `NEUTRAL` keys). Its hash (`stage_hash`) is the
  rerun parameter of every rule of the workflow (workflow/rules/*.smk); `first_difference` is the
  training resume check (drr/training.py); the shard identity of drr/sampling/generate.py is the
  `samples` stage; the reference file name is the `reference` stage.
- `Plan(root, workflow_config)`: the suite's experiments, tokenizers, caption tokenizers and
  reference statistics, each report's cells and inputs, and the targets of `snakemake` (rule all).
  The rule files are wiring: their input functions and parameters call a Plan.

Inputs (files a rule reads: checkpoints, code maps, samples) are tracked by Snakemake itself, so a
stage's config lists only what the stage reads from the config beyond its input files: the
transformer stage leaves out how the tokenizer was trained (its checkpoint is an input), and the
metrics stage leaves out how the samples were made (samples.npz is an input).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from drr.config import REPO, config_hash
from drr.errors import DrrError
from drr.release import PARTS, release_of
from drr.studies import CELL_SEP, ROLES, Cell, Studies, read_yaml

# Keys that cannot change any result, each with the code that shows why.
NEUTRAL = {
    "data.root": "where the files live (the data is checked by content: code-map metadata, reference key)",
    "data.cache_dir": "where downloads are kept",
    "data.download": "whether a missing dataset may be downloaded (checked against sha256 sums)",
    "tokenizer.train.checkpoint_every": "how often state is saved; a resumed run continues bit for bit",
    "tokenizer.train.log_every": "how often metrics are logged",
    "tokenizer.train.num_workers": "loader processes; data order is batch_indices(seed, step), no augmentation",
    "tokenizer.encode.batch_size": "the encoder is per-image (GroupNorm, eval mode)",
    "transformer.train.checkpoint_every": "how often state is saved",
    "transformer.train.log_every": "how often metrics are logged",
    "transformer.train.compile": "torch.compile runs the same model",
    "transformer.train.eval_every": "held-out NLL during training: no gradients, its own mask generator, "
                                    "no random stream of the training steps touched (tests/test_transformer_train.py); "
                                    "setting it on a finished model still retrains it once, since the held-out "
                                    "code maps become an input of the training job (the weights come out the same)",
    "transformer.train.eval_maps": "how many held-out maps those evaluations score",
    "transformer.train.snapshot_every": "copies of the weights kept during training; no random stream "
                                        "or weight changes (tests/test_transformer_train.py)",
    "transformer.launch": "where and how long training runs (SLURM settings, submitit)",
    "generation.batch_size": "samples decoded together; sample i depends on (seed, i) only "
                             "(tests/test_generate.py: the same samples at batch 1, 3, 8); the speed "
                             "measurement has its own generation.speed_batch_size",
    "generation.grid_samples": "samples in the PNG grid (merge stage only: the `merge` stage keeps it)",
    "generation.speed_batches": "how many batches the speed measurement averages over",
    "metrics.batch_size": "Inception is per-image; the feature cache key (drr.metrics.score) omits it",
}

# stage -> dotted config keys (subtrees) the stage's result depends on; `-key` removes a subtree.
STAGES = {
    "tokenizer": ["seed", "data", "-data.eval_split", "tokenizer.name", "tokenizer.checkpoint",
                  "tokenizer.model", "tokenizer.loss", "tokenizer.train"],
    "codes": ["data", "-data.train_split", "-data.eval_split", "tokenizer.name", "tokenizer.encode"],
    "tokenizer_report": ["data", "-data.train_split", "tokenizer.name", "tokenizer.report",
                         "metrics.fid_network"],
    "text_tokenizer": ["transformer.model.cond.vocab_size"],
    "transformer": ["seed", "data.name", "data.resolution", "data.max_images", "data.train_split",
                    "tokenizer.name", "tokenizer.model", "transformer.checkpoint",
                    "transformer.model", "transformer.train"],
    "transformer_report": ["seed", "data.eval_split", "transformer.model", "transformer.train.precision"],
    "samples": ["seed", "tokenizer.name", "tokenizer.model", "transformer.checkpoint",
                "transformer.model", "sampling", "generation", "-generation.speed_batch_size",
                "-generation.ablation_samples"],
    "merge": ["seed", "tokenizer.name", "tokenizer.model", "transformer.model", "sampling", "generation",
              "-generation.speed_batch_size", "-generation.ablation_samples", "generation.grid_samples"],
    "speed": ["seed", "tokenizer.model", "transformer.model", "sampling", "generation.speed_batch_size",
              "generation.conditions"],
    "reference": ["data", "-data.train_split", "-data.eval_split", "metrics.reference_split",
                  "metrics.reference_images", "metrics.pr_reference_size", "metrics.fid_network"],
    "metrics": ["data.name", "data.resolution", "metrics"],
    "pictures": ["seed", "tokenizer.model", "transformer.model", "sampling", "data.eval_split"],
}

# Keys an imported tokenizer (tokenizer.checkpoint set) never reads: experiments importing the same
# file share one tokenizer (one import, one set of code maps) whatever these say.
IMPORT_UNUSED = ("tokenizer.train", "tokenizer.loss")

# Shard files of a sample set: the one place their names are formatted.
SHARD_NAME = "shard-{:05d}.npz"


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(out: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        out = out.setdefault(part, {})
    out[parts[-1]] = copy.deepcopy(value)


def _drop(out: dict, dotted: str) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        out = out.get(part)
        if not isinstance(out, dict):
            return
    out.pop(parts[-1], None)


def stage_config(cfg: dict, stage: str) -> dict:
    """The part of a resolved config that can change the result of `stage` (see STAGES, NEUTRAL)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    keys = STAGES[stage]
    out: dict = {}
    for key in keys:
        if not key.startswith("-"):
            found, value = _get(cfg, key)
            if found:
                _put(out, key, value)
    for key in keys:
        if key.startswith("-"):
            _drop(out, key[1:])
    for key in NEUTRAL:
        if key not in keys:  # a stage that lists a neutral key by name keeps it (merge: grid_samples)
            _drop(out, key)
    if stage == "tokenizer" and _get(cfg, "tokenizer.checkpoint")[1]:
        for key in IMPORT_UNUSED:  # an imported tokenizer is the file's weights, not a training run
            _drop(out, key)
    return out


def stage_hash(cfg: dict, stage: str) -> str:
    return config_hash(stage_config(cfg, stage))


def _flatten(d, prefix=""):
    if not isinstance(d, dict) or not d:
        return {prefix[:-1]: d} if prefix else {}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def first_difference(old: dict, new: dict, stage: str) -> str | None:
    """'key X (this run: Y)' for the first key of `stage` in which two configs differ, or None."""
    a, b = _flatten(stage_config(old, stage)), _flatten(stage_config(new, stage))
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if x != y:
            return f"{key} {x!r} (this run: {y!r})"
    return None


def one_of(names) -> str:
    """A wildcard regex matching exactly these names (nothing, if there are none)."""
    names = sorted(set(names))
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


@dataclass(frozen=True)
class Report:
    name: str
    kind: str          # table | figure
    speed: bool        # shows s/sample (reads the cells' speed files)
    always: bool       # made even when the suite has no experiment for its cells (published rows)


class Plan:
    """The plan of one suite: workflow config (configs/workflow.yaml as a dict) over the files of `root`."""

    def __init__(self, root=REPO, workflow_config: dict | None = None):
        self.root = Path(root)
        wf = workflow_config if workflow_config is not None else read_yaml(self.root / "configs/workflow.yaml")
        self.suite_name = wf["suite"]
        if self.suite_name not in wf["suites"]:
            raise DrrError(f"configs/workflow.yaml: key 'suite' is {self.suite_name!r}, "
                           f"not one of {sorted(wf['suites'])}")
        self.suite = wf["suites"][self.suite_name]
        for role in ROLES:
            if self.suite.get(role) is not None and self.suite[role] not in self.suite["experiments"]:
                raise DrrError(f"configs/workflow.yaml: suites.{self.suite_name}.{role} is "
                               f"{self.suite[role]!r}, which is not one of its experiments")
        self.scale = wf.get("scale")
        self.studies = Studies(self.root, scale=self.scale)
        self.experiments = {name: self.studies.config(name) for name in self.suite["experiments"]}
        self._tokenizers()
        self._transformers()
        self._releases()
        self._references()
        self._reports()

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def experiment_file(name: str) -> str:
        return f"configs/experiments/{name}.yaml"

    def config_args(self, name: str) -> list[str]:
        """The config layers a job of experiment `name` reads: --config FILE for its experiment
        file, then for each overlay of the scale (configs/scales/<scale>/)."""
        files = [self.experiment_file(name), *self.studies.scale_files(name)]
        return [arg for f in files for arg in ("--config", f)]

    def config_value(self, name: str) -> str | list[str]:
        """The `config` parameter of a rule whose shell says `--config {params.config:q}`: the
        experiment file alone, or with a scale [file, "--config", overlay, ...] (each word
        quoted). One file stays a plain string, the parameter value of runs made before scales
        existed, so those runs stay finished (Snakemake reruns a job whose parameters changed)."""
        args = self.config_args(name)[1:]
        return args[0] if len(args) == 1 else args

    @staticmethod
    def tokenizer_dir(cfg: dict) -> str:
        return f"results/tokenizers/{cfg['tokenizer']['name']}"

    @staticmethod
    def codes_dir(cfg: dict, split: str) -> str:
        return f"results/codes/{cfg['tokenizer']['name']}/{cfg['data']['name']}/{split}"

    @staticmethod
    def text_tokenizer_path(cfg: dict) -> str:
        return f"results/text/{cfg['tokenizer']['name']}/bpe.json"

    @staticmethod
    def shard_file(experiment: str, variant: str, i: int) -> str:
        return f"results/samples/{experiment}/{variant}/shards/{SHARD_NAME.format(i)}"

    @staticmethod
    def metrics_file(experiment: str, variant: str) -> str:
        return f"results/metrics/{experiment}/{variant}.parquet"

    @staticmethod
    def speed_file(experiment: str, variant: str) -> str:
        return f"results/speed/{experiment}/{variant}.json"

    # -- tokenizers, transformers, references ---------------------------------------------------

    def _tokenizers(self):
        # Tokenizers are shared by name: every experiment naming one must agree on what builds it.
        self.tokenizer_of: dict[str, str] = {}  # tokenizer name -> first experiment (sorted) using it
        for name in sorted(self.experiments):
            tok = self.experiments[name]["tokenizer"]["name"]
            if tok not in self.tokenizer_of:
                self.tokenizer_of[tok] = name
                continue
            first = self.experiments[self.tokenizer_of[tok]]
            for stage in ("tokenizer", "codes"):
                if stage_hash(first, stage) != stage_hash(self.experiments[name], stage):
                    raise DrrError(
                        f"{self.experiment_file(name)}: tokenizer '{tok}' is also built by "
                        f"{self.experiment_file(self.tokenizer_of[tok])} with other settings "
                        f"({first_difference(first, self.experiments[name], stage)}); "
                        "give one of them another tokenizer.name")
        self.imported_tokenizers = sorted(t for t, e in self.tokenizer_of.items()
                                          if self.experiments[e]["tokenizer"]["checkpoint"])
        self.trained_tokenizers = sorted(t for t in self.tokenizer_of if t not in self.imported_tokenizers)
        self.text_tokenizer_of: dict[str, str] = {}
        for name in sorted(self.experiments):
            if self.cond_type(name) == "text":
                self.text_tokenizer_of.setdefault(self.experiments[name]["tokenizer"]["name"], name)
        self.datasets = sorted({c["data"]["name"] for c in self.experiments.values()})
        self.splits = sorted({c["data"][s] for c in self.experiments.values()
                              for s in ("train_split", "eval_split")})

    def _transformers(self):
        cfgs = self.experiments
        self.imported_transformers = sorted(n for n, c in cfgs.items() if c["transformer"]["checkpoint"])
        self.trained_inprocess = sorted(n for n, c in cfgs.items() if n not in self.imported_transformers
                                        and c["transformer"]["launch"]["executor"] == "inprocess")
        self.trained_submitted = sorted(n for n in cfgs if n not in self.trained_inprocess
                                        and n not in self.imported_transformers)

    def _releases(self):
        # Each official release folder is fetched once (rule fetch_release), however many
        # experiments import from it; every experiment naming it must describe it alike.
        self.release_experiment: dict[str, str] = {}  # release folder -> experiment the fetch checks against
        seen: dict[str, tuple[str, object]] = {}
        parts_at: dict[str, dict[str, int]] = {}
        for name in sorted(self.experiments):
            for part in PARTS:
                try:
                    rel = release_of(self.experiments[name], part)
                except DrrError as e:
                    raise DrrError(f"{self.experiment_file(name)}: {e}") from None
                if rel is None:
                    continue
                folder = rel.folder.as_posix()
                first, other = seen.setdefault(folder, (name, rel))
                if other != rel:
                    raise DrrError(f"{self.experiment_file(name)}: {part}.release {rel.name} differs from "
                                   f"the one of {self.experiment_file(first)} ({other}); make them equal")
                counts = parts_at.setdefault(folder, {})
                counts[name] = counts.get(name, 0) + 1
        # the experiment importing the most parts from a release checks all the release's files drr uses
        for folder, counts in parts_at.items():
            self.release_experiment[folder] = max(sorted(counts), key=lambda n: counts[n])
        self.release_dirs = sorted({f.rsplit("/", 1)[0] for f in self.release_experiment})
        self.release_names = sorted({f.rsplit("/", 1)[1] for f in self.release_experiment})

    def official_input(self, experiment: str, part: str) -> str:
        """What an import rule reads: the release marker (<dir>/<name>/release.json, made by
        fetch_release) when the checkpoint comes from a release, else the checkpoint file itself."""
        cfg = self.experiments[experiment]
        rel = release_of(cfg, part)
        return rel.marker.as_posix() if rel is not None else cfg[part]["checkpoint"]

    def _references(self):
        # One reference file per distinct `reference` stage config, shared by the experiments that have it.
        self.reference_of = {n: f"{c['data']['name']}-{stage_hash(c, 'reference')[:8]}"
                             for n, c in self.experiments.items()}
        self.reference_experiment: dict[str, str] = {}
        for name in sorted(self.experiments):
            self.reference_experiment.setdefault(self.reference_of[name], name)
        self.weights_dirs = sorted({c["metrics"]["weights_dir"] for c in self.experiments.values()})
        self.weights_experiment = {d: next(n for n in sorted(self.experiments)
                                           if self.experiments[n]["metrics"]["weights_dir"] == d)
                                   for d in self.weights_dirs}

    def tokenizer_report_inputs(self, tokenizer: str) -> dict:
        """The reconstruction report's inputs: the tokenizer, and for rFID
        (tokenizer.report.rfid_images > 0) the Inception weights and the reference statistics of the
        experiment that builds the tokenizer."""
        exp = self.tokenizer_of[tokenizer]
        out = {"tokenizer": f"{self.tokenizer_dir(self.experiments[exp])}/checkpoint.pt"}
        if self.experiments[exp]["tokenizer"]["report"]["rfid_images"] > 0:
            out["manifest"] = self.weights_manifest(exp)
            out["reference"] = f"results/reference/{self.reference_of[exp]}.npz"
        return out

    def cond_type(self, experiment: str) -> str:
        return self.experiments[experiment]["transformer"]["model"]["cond"]["type"]

    def kind(self, experiment: str) -> str:
        return self.experiments[experiment]["transformer"]["model"]["kind"]

    def weights_manifest(self, experiment: str) -> str:
        return f"{self.experiments[experiment]['metrics']['weights_dir']}/manifest.json"

    # -- variants -------------------------------------------------------------------------------

    def resolved(self, experiment: str, variant: str = "default") -> dict:
        """The resolved config of a variant ('default' or a cell name of configs/studies.yaml)."""
        if experiment not in self.experiments:
            raise DrrError(f"configs/workflow.yaml: experiment {experiment!r} is not in suite {self.suite_name}")
        if variant != "default" and not self.studies.is_cell(variant):
            raise DrrError(f"variant {variant!r}: not 'default' nor a cell (parameter=value[,...] of "
                           f"{self.studies.path.name})")
        return self.studies.config(experiment, variant)

    def variant_args(self, experiment: str, variant: str) -> list[str]:
        """The command-line config of a variant: its --config layers, then --set KEY=VALUE of a cell."""
        args = self.config_args(experiment)
        if self.studies.is_cell(variant):
            cell = self.studies.parse_cell(variant)
            for s in self.studies.cell_settings(experiment, cell):
                args += ["--set", s]
        return args

    def variant_pattern(self) -> str:
        """A regex of every variant name the plan can make: default, base, and any cell whose
        values are plain YAML scalars (letters, digits, . _ -), joined by + (studies.CELL_SEP)."""
        one = f"(?:{one_of(self.studies.parameters)})=[A-Za-z0-9._-]+"
        return f"default|base|{one}(?:{re.escape(CELL_SEP)}{one})*"

    def num_shards(self, experiment: str, variant: str) -> int:
        gen = self.resolved(experiment, variant)["generation"]
        return -(-gen["num_samples"] // gen["shard_size"])

    def shard_files(self, experiment: str, variant: str) -> list[str]:
        return [self.shard_file(experiment, variant, i) for i in range(self.num_shards(experiment, variant))]

    def hash(self, stage: str, experiment: str, variant: str = "default") -> str:
        return stage_hash(self.resolved(experiment, variant), stage)

    # -- inputs of the model stages -------------------------------------------------------------

    def transformer_inputs(self, experiment: str) -> dict:
        cfg = self.experiments[experiment]
        inputs = {"tokenizer": f"{self.tokenizer_dir(cfg)}/checkpoint.pt",
                  "codes": self.codes_dir(cfg, cfg["data"]["train_split"])}
        if self.cond_type(experiment) == "text":
            inputs["text"] = self.text_tokenizer_path(cfg)
        if cfg["transformer"]["train"]["eval_every"]:  # read beside --codes (drr.transformer.train)
            inputs["eval_codes"] = self.eval_codes(experiment)
        return inputs

    def sampling_inputs(self, experiment: str) -> dict:
        cfg = self.experiments[experiment]
        inputs = {"tokenizer": f"{self.tokenizer_dir(cfg)}/checkpoint.pt",
                  "transformer": f"results/transformers/{experiment}/checkpoint.pt"}
        if self.cond_type(experiment) == "text":
            inputs["text"] = self.text_tokenizer_path(cfg)
            inputs["captions"] = self.codes_dir(cfg, cfg["data"]["eval_split"])
        return inputs

    def eval_codes(self, experiment: str) -> str:
        cfg = self.experiments[experiment]
        return self.codes_dir(cfg, cfg["data"]["eval_split"])

    # -- reports --------------------------------------------------------------------------------

    def _reports(self):
        self.reports: dict[str, Report] = {}
        for name, spec in self.studies.reports.items():
            kind = self.studies.kind(name)  # checked by Studies
            self.reports[name] = Report(name, kind, bool(spec.get("speed", False)), "cells" not in spec)
        self._cells = {name: self.studies.cells(name, self.suite) for name in self.reports}
        self.ar_partner = {}
        for ar in self.suite["experiments"]:
            if self.kind(ar) != "ar":
                continue
            tok = self.experiments[ar]["tokenizer"]["name"]
            same = [n for n in self.suite["experiments"] if n != ar and self.kind(n) == "contextual"
                    and self.experiments[n]["tokenizer"]["name"] == tok]
            partner = self.suite["ablation"] if self.suite["ablation"] in same else (sorted(same) or [None])[0]
            if partner is not None:
                self.ar_partner[ar] = partner

    def cells(self, report: str) -> list[Cell]:
        return self._cells[report]

    def available(self, report: str) -> bool:
        return self.reports[report].always or bool(self.cells(report))

    def missing_reason(self, report: str) -> str:
        role = self.studies.reports[report]["experiment"]
        return f"suite {self.suite_name} has no {role} experiment (configs/workflow.yaml)"

    def report_names(self, kind: str, available: bool = True) -> list[str]:
        return [n for n, r in self.reports.items() if r.kind == kind and self.available(n) == available]

    def report_runs(self, report: str) -> list[tuple[str, str]]:
        """(experiment, variant) of every run a report shows: its cells, then its baselines."""
        runs = [(c.experiment, c.name) for c in self.cells(report)]
        runs += [(e, "default") for e in self.studies.baselines(report, self.suite)]
        return list(dict.fromkeys(runs))

    def report_inputs(self, report: str) -> dict:
        """{metrics: [...], speed: [...]}: the files a report reads, handed to its program as
        --metrics / --speed (speed is empty unless the report shows s/sample)."""
        runs = self.report_runs(report)
        speed = self.reports[report].speed
        return {"metrics": [self.metrics_file(e, v) for e, v in runs],
                "speed": [self.speed_file(e, v) for e, v in runs] if speed else []}

    def report_spec(self, report: str) -> dict:
        """What a report shows besides its input files: its studies.yaml entry, its cells and its
        published.yaml section (a rerun parameter: editing another report's entry changes nothing here)."""
        published = read_yaml(self.root / "configs/published.yaml")
        figures = published.get("figures", {})
        section = published.get(report)
        if section is None and report in figures:
            section = {"points": figures[report], "experiment": figures.get("experiment", {}).get(report),
                       "note": figures.get("notes", {}).get(report)}
        return {"studies": self.studies.reports[report], "cells": [(c.experiment, c.name, c.values)
                                                                    for c in self.cells(report)],
                "published": section, "suite": self.suite}

    def grid_classes(self, experiment: str) -> list[int]:
        """The classes of an experiment's class grid (configs/studies.yaml pictures.class_grids):
        all of them when the model has at most `every_class_up_to`, else the listed ones."""
        spec = self.studies.pictures["class_grids"]
        n = self.experiments[experiment]["transformer"]["model"]["cond"]["num_classes"]
        if n <= spec.get("every_class_up_to", 0):
            return list(range(n))
        return list(spec["classes"])

    def grid_kind(self, experiment: str) -> str | None:
        return {"class": "classes", "text": "captions"}.get(self.cond_type(experiment))

    def picture_targets(self) -> list[str]:
        out = []
        if self.suite.get("ablation") is not None:
            out.append("reports/fig5.png")
        out += [f"reports/figures/{a}/inpainting-vs-{c}.png" for a, c in self.ar_partner.items()]
        for name in self.suite["experiments"]:
            out.append(f"reports/samples/{name}/default.png")
            out.append(f"reports/figures/{name}/inpainting.png")
            if self.grid_kind(name):
                out.append(f"reports/figures/{name}/{self.grid_kind(name)}.png")
        return out

    def all_targets(self) -> list[str]:
        out = []
        for cfg in self.experiments.values():
            tok = cfg["tokenizer"]["name"]
            out += [f"{self.tokenizer_dir(cfg)}/checkpoint.pt", f"{self.tokenizer_dir(cfg)}/report.json",
                    f"reports/tokenizers/{tok}.md", f"reports/tokenizers/{tok}.png"]
            out += [self.codes_dir(cfg, cfg["data"][s]) for s in ("train_split", "eval_split")]
        for name in self.experiments:
            if name not in self.imported_transformers:
                out += [f"reports/transformers/{name}.md", f"reports/transformers/{name}.png"]
            out += [f"results/transformers/{name}/checkpoint.pt",
                    f"results/samples/{name}/default/samples.npz", f"reports/samples/{name}/default.png",
                    self.speed_file(name, "default"), f"reports/figures/{name}/inpainting.png",
                    self.metrics_file(name, "default")]
        return sorted(set(out))


# -- the jobs of a plan, to compare two plans (what an edit makes Snakemake rebuild) ---------------

@dataclass(frozen=True)
class Job:
    key: str           # "<stage>:<what>", e.g. "transformer:tiny", "metrics:tiny/t_draft=16"
    hash: str          # the rerun parameter of its rule(s)
    needs: tuple       # keys of the jobs whose outputs it reads


def _variants(plan: Plan) -> dict[str, list[str]]:
    out = {e: ["default"] for e in plan.experiments}
    for report in plan.reports:
        for e, v in plan.report_runs(report):
            if v not in out[e]:
                out[e].append(v)
    return out


def jobs(plan: Plan) -> dict[str, Job]:
    """Every result of the plan (one entry per rule output that a rerun parameter guards)."""
    out: dict[str, Job] = {}

    def add(key, h, *needs):
        out[key] = Job(key, h, tuple(needs))

    for tok, exp in plan.tokenizer_of.items():
        cfg = plan.experiments[exp]
        add(f"tokenizer:{tok}", stage_hash(cfg, "tokenizer"))
        for s in ("train_split", "eval_split"):
            split = cfg["data"][s]
            add(f"codes:{tok}/{split}", stage_hash(cfg, "codes"), f"tokenizer:{tok}")
    for tok, exp in plan.text_tokenizer_of.items():
        cfg = plan.experiments[exp]
        add(f"text:{tok}", stage_hash(cfg, "text_tokenizer"), f"codes:{tok}/{cfg['data']['train_split']}")
    for ref, exp in plan.reference_experiment.items():
        add(f"reference:{ref}", stage_hash(plan.experiments[exp], "reference"))
    for tok, exp in plan.tokenizer_of.items():
        rfid = [f"reference:{plan.reference_of[exp]}"] if "reference" in plan.tokenizer_report_inputs(tok) else []
        add(f"tokenizer_report:{tok}", stage_hash(plan.experiments[exp], "tokenizer_report"),
            f"tokenizer:{tok}", *rfid)
    for exp, cfg in plan.experiments.items():
        tok = cfg["tokenizer"]["name"]
        model = [f"tokenizer:{tok}", f"codes:{tok}/{cfg['data']['train_split']}"]
        if exp in plan.text_tokenizer_of.values() or plan.cond_type(exp) == "text":
            model.append(f"text:{tok}")
        if "eval_codes" in plan.transformer_inputs(exp):
            model.append(f"codes:{tok}/{cfg['data']['eval_split']}")
        add(f"transformer:{exp}", stage_hash(cfg, "transformer"), *model)
        add(f"transformer_report:{exp}", stage_hash(cfg, "transformer_report"), f"transformer:{exp}",
            f"codes:{tok}/{cfg['data']['eval_split']}")
    claims = _claims_runs(plan)
    timed = {(e, "default") for e in plan.experiments}  # speed files: defaults, the runs of speed reports
    timed |= {run for r in plan.reports if plan.reports[r].speed and plan.available(r) for run in plan.report_runs(r)}
    timed |= set(claims["speed"]) if claims else set()  # and those of the speed claims
    for exp, variants in _variants(plan).items():
        tok = plan.experiments[exp]["tokenizer"]["name"]
        for v in variants:
            cfg = plan.resolved(exp, v)
            deps = (f"tokenizer:{tok}", f"transformer:{exp}")
            add(f"samples:{exp}/{v}", config_hash([stage_config(cfg, "samples"), stage_config(cfg, "merge")]),
                *deps)
            if (exp, v) in timed:
                add(f"speed:{exp}/{v}", stage_hash(cfg, "speed"), *deps)
            add(f"metrics:{exp}/{v}", stage_hash(cfg, "metrics"), f"samples:{exp}/{v}",
                f"reference:{plan.reference_of[exp]}")
    for report in plan.reports:
        if not plan.available(report):
            continue
        runs = plan.report_runs(report)
        needs = [f"metrics:{e}/{v}" for e, v in runs]
        if plan.reports[report].speed:
            needs += [f"speed:{e}/{v}" for e, v in runs]
        add(f"report:{report}", config_hash(plan.report_spec(report)), *needs)
    add("report:index", config_hash(sorted(plan.reports)),
        *(f"report:{r}" for r in plan.reports if plan.available(r)))
    if claims:
        add("report:claims", claims["hash"], *(f"metrics:{e}/{v}" for e, v in claims["metrics"]),
            *(f"speed:{e}/{v}" for e, v in claims["speed"]))
    return out


def _run_of(path: str) -> tuple[str, str]:
    """(experiment, variant) of a metrics or speed file path (Plan.metrics_file, Plan.speed_file)."""
    p = Path(path)
    return p.parent.name, p.stem


def _claims_runs(plan: Plan) -> dict | None:
    """The runs the claims report reads (drr.claims: configs/claims.yaml), or None without the file."""
    from drr.claims import CLAIMS_FILE, claims_hash, claims_inputs

    if not (plan.root / CLAIMS_FILE).is_file():
        return None
    inputs = claims_inputs(plan, CLAIMS_FILE)
    return {"metrics": [_run_of(f) for f in inputs["metrics"]], "speed": [_run_of(f) for f in inputs["speed"]],
            "hash": claims_hash(plan, CLAIMS_FILE)}


def rebuilt(old: Plan | dict, new: Plan | dict) -> set[str]:
    """The jobs of `new` that Snakemake reruns when `old`'s results exist: those whose rerun
    parameter changed or that are new, and everything that reads their outputs. Either may be
    given as its `jobs(plan)` (a plan reads configs/published.yaml only when its jobs are listed)."""
    a, b = (p if isinstance(p, dict) else jobs(p) for p in (old, new))
    changed = {k for k, j in b.items() if k not in a or a[k].hash != j.hash}
    grew = True
    while grew:
        grew = False
        for k, j in b.items():
            if k not in changed and any(n in changed for n in j.needs):
                changed.add(k)
                grew = True
    return changed
