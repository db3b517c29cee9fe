"""The workflow's plan: which results a suite builds, from what, and what part of a config each depends on.

`Plan(root, workflow_config)`: the suite's experiments, tokenizers, caption BPEs and reference
statistics, each report's cells, inputs and spec (what its program receives:
drr.workflow.report_spec), and the targets of `snakemake` (rule all). The rule files are wiring:
their input functions and parameters call a Plan. What part of a config each stage depends on (the
rules' `hash` parameter) is drr.core.stages.

A suite may also name (configs/workflow.yaml) an experiment's other training `seeds` (the same
config but `seed`: they share its tokenizer and its chosen settings), the experiments whose
settings the workflow chooses (`select`: configs/studies.yaml `selections`) and named runs (`runs`:
configs/studies.yaml `runs`). A selection is made by its own runs (training runs of each value,
results/select/<experiment>/<name>-<value>/, or sampling runs, the variants <name>-<value>) and rule
select_setting (drr.workflow.select), whose result results/select/<experiment>/<name>.yaml is a
config layer: the jobs that use the chosen key read it after the experiment file (`config_args`
with `use`), and it is one of their inputs, so the DAG is known before any job runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from drr.core.config import REPO, config_hash, first_differing, flatten, load_config, nested
from drr.core.errors import DrrError
from drr.core.releases import PARTS, release_of
from drr.core.stages import SHARD_NAME, first_difference, stage_hash
from drr.workflow.studies import (PUBLISHED_FILE, ROLES, VARIANT_SEP, WORKFLOW_FILE, Cell, Studies,
                                  format_value, read_yaml)

SELECT_DIR = "results/select"
USES = ("train", "sample")  # which jobs read a selection's choice: training (and its report), or sampling


def one_of(names) -> str:
    """A wildcard regex matching exactly these names (nothing, if there are none)."""
    names = sorted(set(names))
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def setting_text(value) -> str:
    """A setting's value as the text of `--set KEY=TEXT`, which drr reads back as YAML to the same
    value: null, true/false, a number, or a quoted string."""
    return json.dumps(value)


def published_numbers(section: dict, path: list[str], values: dict, phase: str) -> dict:
    """The published numbers of a cell: section['cells'] of configs/published.yaml walked along
    `path` (parameter names, or 'phase'), each step keyed by the cell's typed value; {} where the
    paper gives none."""
    node = section.get("cells", {})
    for key in path:
        if not isinstance(node, dict):
            return {}
        node = node.get(phase if key == "phase" else values[key])
    return node if isinstance(node, dict) else {}


def _json_entry(entry: dict) -> dict:
    """A configs/studies.yaml report entry as JSON data: a label column's `values` mapping (keyed
    by typed values: 8, true, 'top-c') becomes [value, text] pairs, which keep the keys' types."""
    out = dict(entry)
    if "columns" in out:
        out["columns"] = [dict(c, values=[[k, v] for k, v in c["values"].items()]) if "values" in c else dict(c)
                          for c in out["columns"]]
    return out


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
        self._named_configs: dict = {}
        self._seeds()
        self._selections()
        self._tokenizers()
        self._transformers()
        self._releases()
        self._references()
        self._reports()
        self._published: dict | None = None

    # -- files ----------------------------------------------------------------------------------

    @staticmethod
    def experiment_file(name: str) -> str:
        return f"configs/experiments/{name}.yaml"

    def config_args(self, name: str, use: str | None = None) -> list[str]:
        """The config layers a job of experiment `name` reads: --config FILE for its experiment
        file, then for each overlay of the scale (configs/scales/<scale>/), then, for a job that
        uses the workflow's choices (`use`: train | sample), the choice file of each selection of
        that use (`selection_layers`)."""
        files = [self.experiment_file(name), *self.studies.scale_files(name)]
        files += self.selection_layers(name, use) if use is not None else []
        return [arg for f in files for arg in ("--config", f)]

    def config_value(self, name: str, use: str | None = None) -> str | list[str]:
        """The `config` parameter of a rule whose shell says `--config {params.config:q}`: the
        experiment file alone, or with a scale or choices [file, "--config", layer, ...] (each
        word quoted). One file stays a plain string, the parameter value of runs made before
        scales existed, so those runs stay finished (Snakemake reruns a job whose parameters
        changed)."""
        args = self.config_args(name, use)[1:]
        return args[0] if len(args) == 1 else args

    @staticmethod
    def tokenizer_dir(cfg: dict) -> str:
        return f"results/tokenizers/{cfg['tokenizer']['name']}"

    @staticmethod
    def codes_dir(cfg: dict, split: str) -> str:
        return f"results/codes/{cfg['tokenizer']['name']}/{cfg['data']['name']}/{split}"

    @staticmethod
    def caption_bpe_path(cfg: dict) -> str:
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
        # An experiment's other seeds (suite `seeds`) use its tokenizer: they come after every other
        # experiment here, and are compared with their seed's value in place of their own.
        self.tokenizer_of: dict[str, str] = {}  # tokenizer name -> first experiment (sorted) using it
        for name in sorted(self.experiments, key=lambda n: (n in self.seed_of, n)):
            tok = self.experiments[name]["tokenizer"]["name"]
            if tok not in self.tokenizer_of:
                self.tokenizer_of[tok] = name
                continue
            first = self.experiments[self.tokenizer_of[tok]]
            cfg = self.experiments[name]
            if name in self.seed_of:
                cfg = dict(cfg, seed=self.experiments[self.seed_of[name]]["seed"])
            for stage in ("tokenizer", "codes"):
                if stage_hash(first, stage) != stage_hash(cfg, stage):
                    raise DrrError(
                        f"{self.experiment_file(name)}: tokenizer '{tok}' is also built by "
                        f"{self.experiment_file(self.tokenizer_of[tok])} with other settings "
                        f"({first_difference(first, cfg, stage)}); "
                        "give one of them another tokenizer.name")
        self.imported_tokenizers = sorted(t for t, e in self.tokenizer_of.items()
                                          if self.experiments[e]["tokenizer"]["checkpoint"])
        self.trained_tokenizers = sorted(t for t in self.tokenizer_of if t not in self.imported_tokenizers)
        self.caption_bpe_of: dict[str, str] = {}  # tokenizer name -> first text experiment: its caption BPE's
        for name in sorted(self.experiments, key=lambda n: (n in self.seed_of, n)):
            if self.cond_type(name) == "text":
                self.caption_bpe_of.setdefault(self.experiments[name]["tokenizer"]["name"], name)
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

    # -- seeds, selections and named runs (configs/workflow.yaml, configs/studies.yaml) -------------

    def _where(self) -> str:
        return f"{WORKFLOW_FILE}: suites.{self.suite_name}"

    def _known(self, key: str, name) -> None:
        if name not in self.suite["experiments"]:
            raise DrrError(f"{self._where()}.{key}: {name!r} is not one of its experiments "
                           f"({', '.join(self.suite['experiments'])})")

    def _seeds(self):
        """Suite key `seeds`: experiment -> its other training seeds, each checked to be the same
        config but `seed` (resolved, scale included)."""
        self.seed_of: dict[str, str] = {}        # another seed -> the experiment it is a seed of
        self.seeds: dict[str, list[str]] = {}    # experiment -> [itself, its other seeds...]
        table = self.suite.get("seeds") or {}
        for exp, others in table.items():
            self._known("seeds", exp)
            for other in others:
                self._known(f"seeds.{exp}", other)
                if other == exp or other in table or other in self.seed_of:
                    raise DrrError(f"{self._where()}.seeds.{exp}: {other!r} is already the experiment or "
                                   "a seed of one; name each other seed once")
                diff = first_differing(flatten({k: v for k, v in self.experiments[exp].items() if k != "seed"}),
                                       flatten({k: v for k, v in self.experiments[other].items() if k != "seed"}))
                if diff is not None:
                    key, mine, theirs = diff
                    raise DrrError(f"{self._where()}.seeds.{exp}: {self.experiment_file(other)} differs from "
                                   f"{self.experiment_file(exp)} in key '{key}' ({theirs!r} vs {mine!r}); "
                                   "another seed changes `seed` only")
                if self.experiments[other]["seed"] == self.experiments[exp]["seed"]:
                    raise DrrError(f"{self._where()}.seeds.{exp}: {self.experiment_file(other)} has the same "
                                   f"seed as {self.experiment_file(exp)} ({self.experiments[exp]['seed']})")
                self.seed_of[other] = exp
            self.seeds[exp] = [exp, *others]

    def seeds_of(self, experiment: str) -> list[str]:
        """The experiment and its other seeds, seed order as configs/workflow.yaml lists them."""
        return self.seeds.get(experiment, [experiment])

    def _selections(self):
        """Suite keys `select` and `runs`, and the `selections` and `runs` of configs/studies.yaml."""
        studies = read_yaml(self.studies.path)
        where = self.studies.path.name
        run_defs, selection_defs = studies.get("runs", {}), studies.get("selections", {})
        base = flatten(load_config())
        for label, keys in ([(f"runs.{r}.{k}", list(s)) for r, d in run_defs.items() for k, s in d.items()]
                            + [(f"selections.{n}.settings", list(d["settings"])) for n, d in selection_defs.items()]
                            + [(f"selections.{n}.key", list(d["key"].values()) if isinstance(d["key"], dict)
                                else [d["key"]]) for n, d in selection_defs.items()]):
            for key in keys:
                if key not in base:
                    raise DrrError(f"{where}: {label}: '{key}' is not a setting of configs/base.yaml")
        for run in run_defs:
            if run in ("default", "base") or run in selection_defs:
                raise DrrError(f"{where}: runs.{run}: the name of a variant of its own, not 'default', "
                               "'base' nor a selection's name")
        self.select_source: dict[str, str] = {}  # experiment -> the experiment whose runs choose its settings
        for exp in self.suite.get("select") or []:
            self._known("select", exp)
            if exp in self.seed_of:
                raise DrrError(f"{self._where()}.select: {exp!r} is a seed of {self.seed_of[exp]!r} and takes "
                               f"its choices; select {self.seed_of[exp]!r}")
            for name in self.seeds_of(exp):
                self.select_source[name] = exp
        self.selections: dict[str, dict] = selection_defs if self.select_source else {}
        for exp in sorted(set(self.select_source.values())):
            for name in self.selections:
                self.selection_key(name, exp)  # a key for the experiment's model kind
        self.named: dict[str, dict[str, dict]] = {}  # experiment -> variant -> {dotted key: value}
        for run, exps in (self.suite.get("runs") or {}).items():
            if run not in run_defs:
                raise DrrError(f"{self._where()}.runs: {run!r} is not a run of {where} `runs` "
                               f"({', '.join(run_defs) or 'none'})")
            for exp in exps:
                self._known(f"runs.{run}", exp)
                if self.kind(exp) not in run_defs[run]:
                    raise DrrError(f"{where}: runs.{run}: no settings for model kind {self.kind(exp)!r} "
                                   f"(experiment {exp} of suite {self.suite_name})")
                self.named.setdefault(exp, {})[run] = dict(run_defs[run][self.kind(exp)])
        for exp in sorted(set(self.select_source.values())):
            for name, sel in self.selections.items():
                if sel["runs"] == "sample":
                    for value in sel["values"]:
                        self.named.setdefault(exp, {})[self.selection_run(name, value)] = {
                            **sel["settings"], self.selection_key(name, exp): value}
        for exp, variants in self.named.items():
            for variant in variants:
                self.resolved(exp, variant)  # every named variant resolves (values checked) before any job

    def selection_key(self, name: str, experiment: str) -> str:
        """The config key selection `name` chooses for the experiment's model kind."""
        key = self.selections[name]["key"]
        if isinstance(key, str):
            return key
        if self.kind(experiment) not in key:
            raise DrrError(f"{self.studies.path.name}: selections.{name}.key: no key for model kind "
                           f"{self.kind(experiment)!r} (experiment {experiment} of suite {self.suite_name})")
        return key[self.kind(experiment)]

    @staticmethod
    def selection_run(name: str, value) -> str:
        """The run of one value of a selection: a training run's folder, or a variant's name."""
        return f"{name}-{format_value(value)}"

    @staticmethod
    def selection_file(experiment: str, name: str, ext: str = "yaml") -> str:
        """results/select/<experiment>/<name>.yaml (the choice, a config layer) or .json (its record)."""
        return f"{SELECT_DIR}/{experiment}/{name}.{ext}"

    def selection_layers(self, experiment: str, use: str) -> list[str]:
        """The choice files a job of `experiment` that `use`s them reads (train: the training and
        its report; sample: the `default` and ablation variants, speed, FLOPs and pictures), in the
        order of configs/studies.yaml `selections`; [] for an experiment without selections."""
        if use not in USES:
            raise ValueError(f"use {use!r} is not one of {USES}")
        source = self.select_source.get(experiment)
        if source is None:
            return []
        return [self.selection_file(source, n) for n, sel in self.selections.items() if sel["runs"] == use]

    def selection_experiments(self) -> list[str]:
        """The experiments whose own runs choose the suite's settings."""
        return sorted(set(self.select_source.values()))

    def sweeps(self, experiment: str) -> dict[str, dict]:
        """The training runs of the `train` selections of a selecting experiment: run -> settings."""
        if self.select_source.get(experiment) != experiment:
            return {}
        return {self.selection_run(n, v): {**sel["settings"], self.selection_key(n, experiment): v}
                for n, sel in self.selections.items() if sel["runs"] == "train" for v in sel["values"]}

    def sweep_names(self) -> list[str]:
        return sorted({r for e in self.experiments for r in self.sweeps(e)})

    def sweep_file(self, experiment: str, run: str) -> str:
        return f"{SELECT_DIR}/{experiment}/{run}/checkpoint.pt"

    def _sweep(self, experiment: str, run: str) -> dict:
        runs = self.sweeps(experiment)
        if run not in runs:
            raise DrrError(f"{experiment}/{run}: not a training run of a selection of suite {self.suite_name} "
                           f"({', '.join(runs) or 'none'})")
        return runs[run]

    def sweep_args(self, experiment: str, run: str) -> list[str]:
        """The command-line config of a selection's training run: the experiment's layers, then
        --set KEY=VALUE of its settings and value (no choice file: it is what is chosen from)."""
        return self.config_args(experiment) + [a for k, v in self._sweep(experiment, run).items()
                                               for a in ("--set", f"{k}={setting_text(v)}")]

    def sweep_config(self, experiment: str, run: str) -> dict:
        key = ("sweep", experiment, run)
        if key not in self._named_configs:
            layers = [self.studies.experiment_file(experiment),
                      *(self.root / f for f in self.studies.scale_files(experiment))]
            self._named_configs[key] = load_config(*layers, nested(self._sweep(experiment, run)))
        return self._named_configs[key]

    def selection_inputs(self, experiment: str, name: str) -> dict:
        """What rule select_setting reads: the candidates, one per value in order (a training run's
        checkpoint, whose training log lies beside it, or a validation run's metrics file)."""
        if self.select_source.get(experiment) != experiment or name not in self.selections:
            raise DrrError(f"{self.selection_file(experiment, name)}: no selection {name!r} is made on "
                           f"{experiment} in suite {self.suite_name}")
        sel = self.selections[name]
        runs = [self.selection_run(name, v) for v in sel["values"]]
        if sel["runs"] == "train":
            return {"candidates": [self.sweep_file(experiment, r) for r in runs]}
        return {"candidates": [self.metrics_file(experiment, r) for r in runs]}

    def selection_args(self, experiment: str, name: str) -> list[str]:
        """drr.workflow.select's arguments but the candidates and outputs."""
        sel = self.selections[name]
        return ["--name", name, "--experiment", experiment, "--key", self.selection_key(name, experiment),
                "--lowest", sel["lowest"], "--values", *(setting_text(v) for v in sel["values"])]

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
        """The resolved config of a variant ('default', an ablation variant of configs/studies.yaml
        or a named variant). A job that uses the workflow's choices resolves the chosen values in
        place of the experiment's own: this config has the experiment's (the choices are inputs)."""
        if experiment not in self.experiments:
            raise DrrError(f"configs/workflow.yaml: experiment {experiment!r} is not in suite {self.suite_name}")
        if variant in self.named.get(experiment, {}):
            key = ("named", experiment, variant)
            if key not in self._named_configs:
                layers = [self.studies.experiment_file(experiment),
                          *(self.root / f for f in self.studies.scale_files(experiment))]
                try:
                    self._named_configs[key] = load_config(*layers, nested(self.named[experiment][variant]))
                except DrrError as e:
                    raise DrrError(f"{self.studies.path.name}: run {variant} of {experiment}: {e}") from None
            return self._named_configs[key]
        if variant != "default" and not self.studies.is_ablation(variant):
            raise DrrError(f"variant {variant!r}: not 'default', a named variant nor an ablation variant "
                           f"(parameter=value[+...] of {self.studies.path.name})")
        return self.studies.config(experiment, variant)

    def is_named(self, experiment: str, variant: str) -> bool:
        """A named variant (configs/studies.yaml `runs`, or a validation run of a `sample` selection)."""
        return variant in self.named.get(experiment, {})

    def variant_args(self, experiment: str, variant: str) -> list[str]:
        """The command-line config of a variant: its --config layers (the `default` and ablation
        variants with the `sample` choices), then --set KEY=VALUE of an ablation or named variant."""
        if self.is_named(experiment, variant):
            return self.config_args(experiment) + [a for k, v in self.named[experiment][variant].items()
                                                   for a in ("--set", f"{k}={setting_text(v)}")]
        args = self.config_args(experiment, "sample")
        if self.studies.is_ablation(variant):
            values = self.studies.ablation_values(variant)
            for s in self.studies.ablation_settings(experiment, values):
                args += ["--set", s]
        return args

    def variant_pattern(self) -> str:
        """A regex of every variant name the plan can make: default, base, the named variants, and
        any ablation variant whose values are plain YAML scalars (letters, digits, . _ -), joined
        by + (studies.VARIANT_SEP)."""
        one = f"(?:{one_of(self.studies.parameters)})=[A-Za-z0-9._-]+"
        named = sorted({v for runs in self.named.values() for v in runs})
        return f"default|base|{one_of(named) + '|' if named else ''}{one}(?:{re.escape(VARIANT_SEP)}{one})*"

    def num_shards(self, experiment: str, variant: str) -> int:
        gen = self.resolved(experiment, variant)["generation"]
        return -(-gen["num_samples"] // gen["shard_size"])

    def shard_files(self, experiment: str, variant: str) -> list[str]:
        return [self.shard_file(experiment, variant, i) for i in range(self.num_shards(experiment, variant))]

    def hash(self, stage: str, experiment: str, variant: str = "default") -> str:
        return stage_hash(self.resolved(experiment, variant), stage)

    # -- inputs of the model stages -------------------------------------------------------------

    def _layer_inputs(self, experiment: str, use: str) -> dict:
        """{select_<name>: choice file} of the selections a job that `use`s them reads."""
        files = self.selection_layers(experiment, use)
        return {f"select_{Path(f).stem}": f for f in files}

    def transformer_inputs(self, experiment: str, choices: bool = True) -> dict:
        """The training's (and the transformer report's) inputs; with `choices`, the `train`
        choices too (a selection's own training runs are made without them)."""
        cfg = self.experiments[experiment]
        inputs = {"tokenizer": f"{self.tokenizer_dir(cfg)}/checkpoint.pt",
                  "codes": self.codes_dir(cfg, cfg["data"]["train_split"])}
        if self.cond_type(experiment) == "text":
            inputs["text"] = self.caption_bpe_path(cfg)
        if cfg["transformer"]["train"]["eval_every"]:  # read beside --codes (drr.transformer.train)
            inputs["eval_codes"] = self.eval_codes(experiment)
        return dict(inputs, **self._layer_inputs(experiment, "train")) if choices else inputs

    def sampling_inputs(self, experiment: str, variant: str = "default") -> dict:
        """A sampling job's inputs: the models, a text model's caption inputs, and for the `default`
        and ablation variants the `sample` choices (a named variant sets its sampling itself)."""
        cfg = self.experiments[experiment]
        inputs = {"tokenizer": f"{self.tokenizer_dir(cfg)}/checkpoint.pt",
                  "transformer": f"results/transformers/{experiment}/checkpoint.pt"}
        if self.cond_type(experiment) == "text":
            inputs["text"] = self.caption_bpe_path(cfg)
            inputs["captions"] = self.codes_dir(cfg, cfg["data"]["eval_split"])
        if not self.is_named(experiment, variant):
            inputs.update(self._layer_inputs(experiment, "sample"))
        return inputs

    def eval_codes(self, experiment: str) -> str:
        cfg = self.experiments[experiment]
        return self.codes_dir(cfg, cfg["data"]["eval_split"])

    # -- FID against training compute (docs/small-suite.md, protocol v6 §2) ---------------------

    def compute_experiments(self) -> list[str]:
        """The experiments of the FID-against-compute figure: the suite's trained models that keep
        weight snapshots (transformer.train.snapshot_every), seed 0 only (another seed of an
        experiment is not in it); [] for a suite whose models keep none (tiny, paper)."""
        out = [e for e in self.suite["experiments"] if e not in self.seed_of
               and e not in self.imported_transformers
               and self.experiments[e]["transformer"]["train"]["snapshot_every"]]
        for e in out:
            if self.cond_type(e) == "text":
                raise DrrError(f"{self.experiment_file(e)}: transformer.train.snapshot_every is set, but FID "
                               "against training steps (drr.sampling.steps) samples class-conditional and "
                               "unconditional models only; set it to null")
        if out and self.studies.fid_compute is None:
            raise DrrError(f"{self.studies.path.name}: no `fid_compute` section (the samples per checkpoint "
                           f"of the FID-against-compute figure: {', '.join(out)} keep weight snapshots)")
        return out

    @staticmethod
    def steps_file(experiment: str, ext: str = "json") -> str:
        """results/steps/<experiment>.json (and .md, .png): FID of every checkpoint of a model."""
        return f"results/steps/{experiment}.{ext}"

    def _compute_experiment(self, experiment: str) -> str:
        if experiment not in self.compute_experiments():
            raise DrrError(f"{self.steps_file(experiment)}: {experiment} is not a model of the FID-against-"
                           f"compute figure of suite {self.suite_name} (those keeping weight snapshots, "
                           f"seed 0: {', '.join(self.compute_experiments()) or 'none'})")
        return experiment

    def steps_samples(self) -> int:
        return self.studies.fid_compute["samples"]

    def steps_inputs(self, experiment: str) -> dict:
        """What rule fid_steps reads: the models and the `sample` choices (the tuned guidance) of a
        sampling job, the metrics weights and the reference statistics."""
        self._compute_experiment(experiment)
        return dict(self.sampling_inputs(experiment), manifest=self.weights_manifest(experiment),
                    reference=f"results/reference/{self.reference_of[experiment]}.npz")

    def steps_hash(self, experiment: str) -> str:
        """Rule fid_steps' `hash`: the `samples` stage of the config every checkpoint is sampled with
        (drr.sampling.steps.steps_config), the `metrics` stage, and which snapshots are kept."""
        from drr.sampling.steps import steps_config

        cfg = self.resolved(self._compute_experiment(experiment))
        n = self.steps_samples()
        return config_hash([stage_hash(steps_config(cfg, n), "samples"), stage_hash(cfg, "metrics"),
                            cfg["transformer"]["train"]["snapshot_every"], n])

    def compute_inputs(self) -> dict:
        """What rule fid_compute reads, one per model in the order of the suite: the steps JSON, the
        final checkpoint (its training log and config lie beside it) and the training code map."""
        exps = self.compute_experiments()
        if not exps:
            raise DrrError(f"suite {self.suite_name} has no FID-against-compute figure: none of its models "
                           "keeps weight snapshots (transformer.train.snapshot_every)")
        return {"steps": [self.steps_file(e) for e in exps],
                "transformers": [f"results/transformers/{e}/checkpoint.pt" for e in exps],
                "codes": [self.codes_dir(self.experiments[e], self.experiments[e]["data"]["train_split"])
                          for e in exps]}

    def compute_targets(self) -> list[str]:
        """reports/fid_compute.png where the suite makes it, else nothing."""
        return ["reports/fid_compute.png"] if self.compute_experiments() else []

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
        for ar, first in self.seed_of.items():  # another seed of an AR model: the partner's same seed
            k = self.seeds_of(first).index(ar)
            partner = self.ar_partner.get(first)
            if partner is not None and len(self.seeds_of(partner)) > k:
                self.ar_partner[ar] = self.seeds_of(partner)[k]

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
        runs = [(c.experiment, c.variant) for c in self.cells(report)]
        runs += [(e, "default") for e in self.studies.baselines(report, self.suite)]
        return list(dict.fromkeys(runs))

    def report_inputs(self, report: str) -> dict:
        """{metrics: [...], speed: [...]}: the files a report reads, handed to its program as
        --metrics / --speed (speed is empty unless the report shows s/sample)."""
        runs = self.report_runs(report)
        speed = self.reports[report].speed
        return {"metrics": [self.metrics_file(e, v) for e, v in runs],
                "speed": [self.speed_file(e, v) for e, v in runs] if speed else []}

    # -- report specifications (results/reports/<report>.spec.json, drr.workflow.report_spec) ---

    def published(self) -> dict:
        """configs/published.yaml (read once per plan)."""
        if self._published is None:
            self._published = read_yaml(self.root / PUBLISHED_FILE)
        return self._published

    def unpublished(self, experiments) -> list[str]:
        """The experiments of the list that reproduce no published row (no `experiment` of a row or
        section of configs/published.yaml names them): the reports say their runs are small-scale."""
        linked = set()
        for section in self.published().values():
            if isinstance(section, dict):
                linked.update(r.get("experiment") for r in section.get("rows", []))
                if isinstance(section.get("experiment"), str):
                    linked.add(section["experiment"])
        return [e for e in experiments if e not in linked]

    def _published_section(self, report: str) -> dict:
        """A table's section of configs/published.yaml, or a figure's points, experiment and note
        (published.yaml `figures`)."""
        published = self.published()
        if self.reports[report].kind == "figure":
            figures = published.get("figures", {})
            return {"points": figures.get(report, []), "experiment": figures.get("experiment", {}).get(report),
                    "note": figures.get("notes", {}).get(report)}
        if not isinstance(published.get(report), dict):
            raise DrrError(f"{PUBLISHED_FILE}: no section '{report}' (the table {report} of "
                           f"{self.studies.path.name} shows its published numbers)")
        return published[report]

    def report_spec(self, report: str) -> dict:
        """What report `report` shows, for its program (drr.reports.tables or .figures): the input
        of its job, results/reports/<report>.spec.json (drr.workflow.report_spec). Plain JSON data:

        name, kind        the report and table | figure
        suite, suite_experiments, scale
                          the suite, its experiments, and the size overlay (null: none)
        studies           its configs/studies.yaml entry (how it looks; a label column's `values`
                          as [value, text] pairs, since a JSON key can only be text)
        cells             [{experiment, variant, values: {parameter: value}, published}], values
                          typed as configs/studies.yaml gives them (read from text once, here), and
                          a `layout: cells` table's published numbers of the cell by phase
        baselines         the experiments of its `baselines` (default runs)
        published         its configs/published.yaml section (a table's `cells` resolved into the
                          cells above) or a figure's published points, experiment and note
        unpublished       the experiments of its cells that reproduce no published row (the banner)
        experiments       of a `layout: models` table, each experiment shown in a row of its own:
                          dataset, code shape, transformer parameters (drr.transformer.build)
        runs              [{experiment, variant, metrics, speed}]: every run it shows and the files
                          its rule gives the program (speed null unless it shows s/sample)
        """
        return self._report_spec(report, count=True)

    def report_hash(self, report: str) -> str:
        """The `hash` parameter of rule report_spec: the hash of report_spec(report), with the
        model sections each parameter count is computed from in place of the count (counting
        builds the model on torch's meta device, and Snakemake's own process should not import
        torch); the count changes only with those sections."""
        return config_hash(self._report_spec(report, count=False))

    def _report_spec(self, report: str, count: bool) -> dict:
        entry = self.studies.reports[report]
        kind = self.reports[report].kind
        section = self._published_section(report)
        cells = self.cells(report)
        paper = entry.get("paper") if entry.get("layout") == "cells" else None
        phases = entry.get("phases", ["revised"])
        experiments = list(dict.fromkeys(c.experiment for c in cells))
        linked = {r.get("experiment") for r in section.get("rows", [])}
        own = [e for e in experiments if e not in linked] if entry.get("layout") == "models" else []
        runs = self.report_inputs(report)
        return {
            "name": report, "kind": kind,
            "suite": self.suite_name, "suite_experiments": list(self.suite["experiments"]),
            "scale": self.scale,
            "studies": _json_entry(entry),
            "cells": [{"experiment": c.experiment, "variant": c.variant, "values": dict(c.values),
                       "published": ({ph: published_numbers(section, paper, dict(c.values), ph) for ph in phases}
                                     if paper is not None else {})}
                      for c in cells],
            "baselines": self.studies.baselines(report, self.suite),
            "published": {k: v for k, v in section.items() if k != "cells"},
            "unpublished": self.unpublished(sorted(experiments)),
            "experiments": {e: self._experiment_facts(e, count) for e in own},
            "runs": [{"experiment": e, "variant": v, "metrics": m, "speed": s}
                     for (e, v), m, s in zip(self.report_runs(report), runs["metrics"],
                                             runs["speed"] or [None] * len(runs["metrics"]))],
        }

    def _experiment_facts(self, experiment: str, count: bool) -> dict:
        """What a table prints of an experiment with a row of its own: its dataset, code shape and
        transformer parameters (counted when `count`, else the sections they are counted from)."""
        cfg = self.experiments[experiment]
        out = {"dataset": cfg["data"]["name"], "code_shape": list(cfg["tokenizer"]["model"]["code_shape"])}
        if not count:
            return dict(out, model={"transformer": cfg["transformer"]["model"], "tokenizer": cfg["tokenizer"]["model"]})
        from drr.transformer.build import count_parameters
        from drr.transformer.model import TransformerConfig

        return dict(out, parameters=count_parameters(TransformerConfig.from_experiment(cfg)))

    def index_spec(self) -> dict:
        """What reports/index.md lists (drr.reports.index): the suite, the reports it makes (name
        and title) and those it cannot (with the reason), the pictures, and each experiment's
        tokenizer."""
        titles = {n: s["title"] for n, s in self.studies.reports.items()}
        return {
            "name": "index", "kind": "index",
            "suite": self.suite_name, "suite_experiments": list(self.suite["experiments"]),
            "scale": self.scale,
            "unpublished": self.unpublished(list(self.suite["experiments"])),
            "tables": [{"name": n, "title": titles[n]} for n in self.report_names("table")],
            "figures": [{"name": n, "title": titles[n]} for n in self.report_names("figure")],
            "missing": {n: self.missing_reason(n) for n in self.report_names("table", False)
                        + self.report_names("figure", False)},
            "pictures": self.picture_targets(),
            "tokenizers": {e: self.experiments[e]["tokenizer"]["name"] for e in self.suite["experiments"]},
            # only where the suite makes it: the index specs (and their hashes) of the others stay
            **({"compute": self.compute_targets()} if self.compute_targets() else {}),
        }

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
