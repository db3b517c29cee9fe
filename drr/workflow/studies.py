"""Ablation studies as data: suites, reports and their cells (configs/workflow.yaml, configs/studies.yaml).

A *variant* is a named run of an experiment, its sampling settings: what its samples, metrics,
speed and FLOPs files are named by (the `{variant}` of their paths, the `variant` column of a
metrics row). A *run* is an experiment and one of its variants. The variants:

``default``          the experiment config itself;
``k=v[+k=v...]``     an *ablation variant*: values of the short parameters of configs/studies.yaml
                     (``t_draft=16``, ``t_draft=8+strategy=top-c``), generated with
                     ``generation.ablation_samples`` samples and with drafts kept;
``base``             the ablation variant with no override (the experiment's own sampling settings);
a named variant      configs/studies.yaml `runs`, or a validation run of a `sample` selection,
                     ``<selection>-<value>`` (drr.workflow.plan).

A *cell* is a cell of a report (a row of an ablation table, a point of a figure): a variant with
the values of the parameters the report varies (`Cell`). `Studies.cells(report, suite)` lists the
canonical cells of a report, the ones the workflow builds: a cell's variant name drops the values
equal to the experiment's own, in the order of `parameters`, and a cell whose config is the
experiment's default config is the variant ``default``. The Snakefile and the report scripts both
name variants through this module, so a report reads exactly the files the workflow made for it.

configs/studies.yaml and configs/published.yaml are checked when read: each against its JSON
schema (workflow/schemas/), then their references here (a grid's parameters, a label column's
values, a published section's report and experiments), every error one line naming the file and
the key.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from drr.core.columns import TABLE_COLUMNS
from drr.core.config import (
    BASE_CONFIG,
    REPO,
    check_schema,
    load_config,
    load_schema,
    override_from_dotted,
    parse_yaml,
    read_yaml,
)
from drr.core.errors import DrrError

STUDIES_FILE = "configs/studies.yaml"
SCALES_DIR = "configs/scales"
WORKFLOW_FILE = "configs/workflow.yaml"
PUBLISHED_FILE = "configs/published.yaml"
ROLES = ("ablation", "vq")
# Between the parameters of an ablation variant's name. Not a comma: Snakemake hands a cluster job its wildcards
# as `--target-jobs rule:key=value,key=value` and splits that on commas, so a variant
# `t_draft=8,strategy=top-c` reached the SLURM job as variant `t_draft=8` (found by the paper
# suite's dress rehearsal, tests/test_rehearsal.py).
VARIANT_SEP = "+"


def format_value(v) -> str:
    """A parameter value as it appears in a variant name (YAML scalar text)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass(frozen=True)
class Cell:
    """A cell of a report: a run (an experiment and its variant) and the values of the parameters
    the report varies."""
    experiment: str
    variant: str                 # the canonical variant name
    values: tuple                # ((short, value), ...) of every parameter the report varies

    def value(self, short: str):
        return dict(self.values)[short]


class Studies:
    """configs/studies.yaml and the experiment configs it is applied to (read from `root`); also the
    published numbers of its reports (`published`: configs/published.yaml, checked against it)."""

    def __init__(self, root=REPO, path: str = STUDIES_FILE, scale: str | None = None):
        self.root = Path(root)
        self.path = self.root / path
        self.scale = scale
        if scale is not None and not (self.root / SCALES_DIR / scale).is_dir():
            have = sorted(d.name for d in (self.root / SCALES_DIR).glob("*") if d.is_dir())
            raise DrrError(f"configs/workflow.yaml: key 'scale' is {scale!r}: no folder {SCALES_DIR}/{scale}/ "
                           f"(scales: {', '.join(have) or 'none'}; null for none)")
        data = read_yaml(self.path)
        check_schema(data, "studies", self.path)
        self.parameters: dict[str, str] = data["parameters"]
        self.reports: dict[str, dict] = data["reports"]
        self.pictures: dict[str, dict] = data["pictures"]
        self.fid_compute: dict | None = data.get("fid_compute")  # the FID-against-compute figure
        base = read_yaml(BASE_CONFIG)
        for short, key in self.parameters.items():
            if _leaf(base, key) is None:
                raise DrrError(f"{self.path}: parameters.{short}: '{key}' is not a setting of "
                               f"{BASE_CONFIG.relative_to(REPO)}")
        for name, spec in self.reports.items():
            self._check_references(name, spec)
        self.published = read_published(self.root / PUBLISHED_FILE, self)
        self._configs: dict = {}

    # -- report layouts (drr/reports/tables.py, figures.py) -------------------------------------

    def kind(self, report: str) -> str:
        """table | figure: `kind`, else by name (fig...: figure)."""
        spec = self.reports[report]
        return spec.get("kind", "figure" if report.startswith("fig") else "table")

    def _check_references(self, name: str, spec: dict) -> None:
        """What the schema cannot see in a report (it has checked the layout's keys and types):
        the parameters its grids, label columns, panels and `paper` path name, the values its
        label columns give text for, the metrics it shows. Each error one line naming the key."""
        where = f"{self.path}: reports.{name}"
        for grid in spec.get("cells", []):
            for short in grid:
                if short not in self.parameters:
                    raise DrrError(f"{where}.cells: unknown parameter {short!r} "
                                   f"(parameters: {', '.join(self.parameters)})")
        varied = list(dict.fromkeys(s for grid in spec.get("cells", []) for s in grid))
        of_cells = f"a parameter of the report's cells ({', '.join(varied) or 'none'})"
        for i, panel in enumerate(spec.get("panels", [])):
            if panel["parameter"] not in varied:
                raise DrrError(f"{where}.panels[{i}].parameter: {panel['parameter']!r} is not {of_cells}")
        for m in spec.get("metrics", []):
            if m not in TABLE_COLUMNS:
                raise DrrError(f"{where}.metrics: {m!r} is not one of {', '.join(TABLE_COLUMNS)}")
        for i, col in enumerate(spec.get("columns", [])):
            if col["parameter"] not in varied:
                raise DrrError(f"{where}.columns[{i}].parameter: {col['parameter']!r} is not {of_cells}")
            for grid in spec["cells"] if "values" in col else []:
                for v in grid.get(col["parameter"], []):
                    if v not in col["values"]:
                        raise DrrError(f"{where}.columns[{i}].values: no text for {col['parameter']} "
                                       f"value {v!r}")
        for x in spec.get("paper", []):
            if x != "phase" and x not in varied:
                raise DrrError(f"{where}.paper: {x!r} is neither phase nor a parameter of the report's cells")

    # -- variants -------------------------------------------------------------------------------

    def experiment_file(self, experiment: str) -> Path:
        return self.root / "configs" / "experiments" / f"{experiment}.yaml"

    def scale_files(self, experiment: str) -> list[str]:
        """The overlay layers of the scale (workflow key `scale`), relative to the root:
        configs/scales/<scale>/all.yaml, then <experiment>.yaml, each where it exists. A scale
        changes sizes, never which experiments, rules or code paths a suite uses."""
        if self.scale is None:
            return []
        folder = f"{SCALES_DIR}/{self.scale}"
        return [f for f in (f"{folder}/all.yaml", f"{folder}/{experiment}.yaml") if (self.root / f).is_file()]

    def ablation_values(self, variant: str) -> dict:
        """The parameter values of an ablation variant: 't_draft=16+strategy=top-c' ->
        {'t_draft': 16, 'strategy': 'top-c'}; 'base' -> {}."""
        if variant == "base":
            return {}
        out = {}
        for part in variant.split(VARIANT_SEP):
            short, eq, text = part.partition("=")
            if not eq or not text:
                raise DrrError(f"variant {variant!r}: {part!r} is not parameter=value")
            if short not in self.parameters:
                raise DrrError(f"variant {variant!r}: unknown parameter {short!r} "
                               f"({self.path.name} parameters: {', '.join(self.parameters)})")
            if short in out:
                raise DrrError(f"variant {variant!r}: parameter {short!r} given twice")
            out[short] = parse_yaml(text, f"variant {variant!r}")
        return out

    @staticmethod
    def is_ablation(variant: str) -> bool:
        """An ablation variant: ``base`` or parameter values."""
        return variant == "base" or "=" in variant

    def ablation_settings(self, experiment: str, values: dict) -> list[str]:
        """The KEY=VALUE overrides (drr --set syntax) of an ablation variant's parameter values on
        top of the experiment config."""
        own = self.config(experiment)
        sets = [f"{self.parameters[k]}={format_value(v)}" for k, v in values.items()]
        n = own["generation"]["ablation_samples"]
        if n is not None:
            sets.append(f"generation.num_samples={n}")
        sets.append("generation.save_drafts=true")
        return sets

    def config(self, experiment: str, variant: str = "default") -> dict:
        """The resolved config of an experiment's variant (validated like any drr config)."""
        key = (experiment, variant)
        if key not in self._configs:
            layers: list = [self.experiment_file(experiment)]
            layers += [self.root / f for f in self.scale_files(experiment)]
            if self.is_ablation(variant):
                layers.append(override_from_dotted(self.ablation_settings(experiment, self.ablation_values(variant))))
            elif variant != "default":
                raise DrrError(f"variant {variant!r}: not 'default', 'base' nor an ablation variant "
                               f"(parameter=value[+...] of {STUDIES_FILE})")
            self._configs[key] = load_config(*layers)
        return self._configs[key]

    def variant_name(self, experiment: str, values: dict) -> str:
        """The canonical name of the variant with these parameter values (see the module docstring)."""
        own = self.config(experiment)
        kept = []
        for short, key in self.parameters.items():
            if short in values:
                have = own
                for part in key.split("."):
                    have = have[part]
                if values[short] != have:
                    kept.append(f"{short}={format_value(values[short])}")
        name = VARIANT_SEP.join(kept) or "base"
        if name == "base" and self.config(experiment, "base") == own:
            return "default"
        return name

    # -- suites and reports ---------------------------------------------------------------------

    def role(self, suite: dict, role: str) -> list[str]:
        if role == "all":
            return list(suite["experiments"])
        name = suite[role]
        return [] if name is None else [name]

    def cells(self, report: str, suite: dict) -> list[Cell]:
        """The canonical cells of a report in a suite ({'experiments', 'ablation', 'vq'}), in the
        order of the report's grids (duplicates, e.g. two names of one config, kept once)."""
        spec = self.reports[report]
        out, seen = [], set()
        for experiment in self.role(suite, spec["experiment"]):
            if "cells" not in spec:
                want = spec.get("cond")
                cfg = self.config(experiment)
                if want is None or cfg["transformer"]["model"]["cond"]["type"] == want:
                    out.append(Cell(experiment, "default", ()))
                continue
            for grid in spec["cells"]:
                shorts = list(grid)
                for combo in itertools.product(*(grid[s] for s in shorts)):
                    values = dict(zip(shorts, combo))
                    cell = Cell(experiment, self.variant_name(experiment, values), tuple(values.items()))
                    if (cell.experiment, cell.variant, cell.values) not in seen:
                        seen.add((cell.experiment, cell.variant, cell.values))
                        out.append(cell)
        return out


    def baselines(self, report: str, suite: dict) -> list[str]:
        """The experiments of a report's `baselines` (ar: the suite's AR RQ-Transformers)."""
        kind = self.reports[report].get("baselines")
        if kind is None:
            return []
        return [e for e in suite["experiments"]
                if self.config(e)["transformer"]["model"]["kind"] == kind]


def load_suite(name: str, root=REPO, workflow_file: str = WORKFLOW_FILE) -> dict:
    path = Path(root) / workflow_file
    data = read_yaml(path)
    check_schema(data, "workflow", path)
    suites = data["suites"]
    if name not in suites:
        raise DrrError(f"{path}: suites: no suite {name!r} (have {', '.join(sorted(suites))})")
    return suites[name]


def _leaf(cfg: dict, dotted: str):
    """The value of a dotted key that is a setting (not a section) of `cfg`; None if it is not one."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict) else (node,)


def read_published(path, studies: Studies) -> dict:
    """configs/published.yaml, checked against its schema and then against configs/studies.yaml
    and configs/experiments/ (see workflow/schemas/published.schema.yaml), each error one line
    naming the file and the key."""
    path = Path(path)
    data = read_yaml(path)
    check_schema(data, "published", path)
    tables = [n for n in studies.reports if studies.kind(n) == "table"]
    figures = [n for n in studies.reports if studies.kind(n) == "figure"]
    numbers = list(load_schema("published")["$defs"]["numbers"]["properties"])

    def fail(key, what):
        raise DrrError(f"{path}: {key}: {what}")

    def experiment(key, name):
        if not studies.experiment_file(name).is_file():
            fail(key, f"no experiment {name!r} (configs/experiments/{name}.yaml)")

    def cells(node, paper, level, key, section):
        """`node` holds the values of paper[level]: numbers below the last level, values above."""
        for value, child in node.items():
            here = f"{key}.{value}"
            is_numbers = isinstance(child, dict) and set(child) <= set(numbers)
            if level + 1 == len(paper):
                if not is_numbers:
                    fail(here, f"expected the paper's numbers ({', '.join(numbers)}): "
                               f"reports.{section}.paper in {studies.path.name} is {', '.join(paper)}")
            elif is_numbers:
                fail(here, f"expected values of {paper[level + 1]!r} here: reports.{section}.paper "
                           f"in {studies.path.name} is {', '.join(paper)}")
            else:
                cells(child, paper, level + 1, here, section)

    for section, spec in data.items():
        if section == "figures":
            for key in ("experiment", "notes"):
                for fig in spec.get(key, {}):
                    if fig not in figures:
                        fail(f"figures.{key}.{fig}", f"not a figure of {studies.path.name} "
                                                     f"(figures: {', '.join(figures)})")
            for fig, name in spec.get("experiment", {}).items():
                experiment(f"figures.experiment.{fig}", name)
            for fig, points in spec.items():
                if fig in ("experiment", "notes"):
                    continue
                if fig not in figures:
                    fail(f"figures.{fig}", f"not a figure of {studies.path.name} (figures: {', '.join(figures)})")
                panels = [p["parameter"] for p in studies.reports[fig]["panels"]]
                for i, point in enumerate(points):
                    if "panel" in point and point["panel"] not in panels:
                        fail(f"figures.{fig}[{i}].panel", f"{point['panel']!r} is not a panel of {fig} "
                                                         f"({', '.join(panels)})")
            continue
        if section not in tables:
            fail(section, f"not a table of {studies.path.name} (tables: {', '.join(tables)}; "
                          "figures go under `figures`)")
        if "experiment" in spec:
            experiment(f"{section}.experiment", spec["experiment"])
        for i, row in enumerate(spec.get("rows", [])):
            if "experiment" in row:
                experiment(f"{section}.rows[{i}].experiment", row["experiment"])
        if "cells" in spec:
            report = studies.reports[section]
            if report["layout"] != "cells":
                fail(f"{section}.cells", f"reports.{section} in {studies.path.name} is a "
                                         "`layout: models` table: it shows rows, not cells")
            if report["paper"]:
                cells(spec["cells"], report["paper"], 0, f"{section}.cells", section)
    return data
