"""Ablation studies as data: suites, reports and their cells (configs/workflow.yaml, configs/studies.yaml).

A *variant* of an experiment is what its samples, metrics and speed files are named by:

``default``          the experiment config itself;
``k=v[+k=v...]``     an ablation *cell*: values of the short parameters of configs/studies.yaml
                     (``t_draft=16``, ``t_draft=8+strategy=top-c``), generated with
                     ``generation.ablation_samples`` samples and with drafts kept;
``base``             the cell with no override (the experiment's own sampling settings).

`Studies.cells(report, suite)` lists the canonical cells of a report, the ones the workflow builds:
a cell's name drops the values equal to the experiment's own, in the order of `parameters`, and a
cell whose config is the experiment's default config is named ``default``. The Snakefile and the
report scripts both name cells through this module, so a report reads exactly the files the workflow
made for it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from drr.core.columns import TABLE_COLUMNS
from drr.core.config import REPO, SAFE_LOADER, load_config, override_from_dotted
from drr.core.errors import DrrError

STUDIES_FILE = "configs/studies.yaml"
SCALES_DIR = "configs/scales"
WORKFLOW_FILE = "configs/workflow.yaml"
PUBLISHED_FILE = "configs/published.yaml"
ROLES = ("ablation", "vq")
TABLE_LAYOUTS = ("models", "cells")  # drr.reports.tables.model_table, cell_table
FIGURE_SHOWS = ("fid", "fid_revised", "pr")  # what a figure panel plots (drr.reports.figures)
PHASES = ("draft", "revised")  # the rows of a cell's metrics file
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
# Between the parameters of a cell name. Not a comma: Snakemake hands a cluster job its wildcards
# as `--target-jobs rule:key=value,key=value` and splits that on commas, so a variant
# `t_draft=8,strategy=top-c` reached the SLURM job as variant `t_draft=8` (found by the paper
# suite's dress rehearsal, tests/test_rehearsal.py).
CELL_SEP = "+"


def read_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=SAFE_LOADER)
    except FileNotFoundError:
        raise DrrError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise DrrError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DrrError(f"{path}: expected a mapping at the top level")
    return data


def format_value(v) -> str:
    """A parameter value as it appears in a cell name (YAML scalar text)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@dataclass(frozen=True)
class Cell:
    experiment: str
    name: str                    # the variant name (canonical)
    values: tuple                # ((short, value), ...) of every parameter the report varies

    def value(self, short: str):
        return dict(self.values)[short]


class Studies:
    """configs/studies.yaml and the experiment configs it is applied to (read from `root`)."""

    def __init__(self, root=REPO, path: str = STUDIES_FILE, scale: str | None = None):
        self.root = Path(root)
        self.path = self.root / path
        self.scale = scale
        if scale is not None and not (self.root / SCALES_DIR / scale).is_dir():
            have = sorted(d.name for d in (self.root / SCALES_DIR).glob("*") if d.is_dir())
            raise DrrError(f"configs/workflow.yaml: key 'scale' is {scale!r}: no folder {SCALES_DIR}/{scale}/ "
                           f"(scales: {', '.join(have) or 'none'}; null for none)")
        data = read_yaml(self.path)
        for key in ("parameters", "reports", "pictures"):
            if not isinstance(data.get(key), dict):
                raise DrrError(f"{self.path}: field '{key}' must be a mapping")
        self.parameters: dict[str, str] = data["parameters"]
        self.reports: dict[str, dict] = data["reports"]
        self.pictures: dict[str, dict] = data["pictures"]
        for short in self.parameters:
            if not _NAME.match(short) or "=" in short:
                raise DrrError(f"{self.path}: parameters: bad short name {short!r}")
        for name, spec in self.reports.items():
            where = f"{self.path}: reports.{name}"
            exp = spec.get("experiment")
            if exp not in ROLES + ("all",):
                raise DrrError(f"{where}.experiment: {exp!r} is not one of {ROLES + ('all',)}")
            for grid in spec.get("cells", []):
                for short, values in grid.items():
                    if short not in self.parameters:
                        raise DrrError(f"{where}.cells: unknown parameter {short!r} "
                                       f"(parameters: {', '.join(self.parameters)})")
                    if not isinstance(values, list) or not values:
                        raise DrrError(f"{where}.cells.{short}: expected a non-empty list of values")
            self._check_layout(name, spec)
        self._configs: dict = {}

    # -- report layouts (drr/reports/tables.py, figures.py) -------------------------------------

    def kind(self, report: str) -> str:
        """table | figure: `kind`, else by name (fig...: figure)."""
        spec = self.reports[report]
        return spec.get("kind", "figure" if report.startswith("fig") else "table")

    def _check_layout(self, name: str, spec: dict) -> None:
        """The keys that say how a report looks (see configs/studies.yaml), each error one line
        naming the file and the key."""

        where = f"{self.path}: reports.{name}"

        def fail(key, what):
            raise DrrError(f"{where}.{key}: {what}")

        def names(key, allowed, required=True):
            v = spec.get(key)
            if v is None and not required:
                return
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                fail(key, f"expected a non-empty list of names, got {v!r}")
            for x in v:
                if x not in allowed:
                    fail(key, f"{x!r} is not one of {', '.join(allowed)}")

        kind = self.kind(name)
        if kind not in ("table", "figure"):
            fail("kind", f"{kind!r} is not table or figure")
        if not isinstance(spec.get("title"), str) or not spec["title"].strip():
            fail("title", "expected a non-empty string")
        varied = [s for grid in spec.get("cells", []) for s in grid]
        if kind == "figure":
            panels = spec.get("panels")
            if not isinstance(panels, list) or not panels:
                fail("panels", "expected a non-empty list of {parameter, label, show}")
            for i, panel in enumerate(panels):
                if not isinstance(panel, dict) or set(panel) != {"parameter", "label", "show"}:
                    fail(f"panels[{i}]", f"expected exactly the keys parameter, label, show, got {panel!r}")
                if panel["parameter"] not in varied:
                    fail(f"panels[{i}].parameter", f"{panel['parameter']!r} is not a parameter of the "
                         f"report's cells ({', '.join(dict.fromkeys(varied)) or 'none'})")
                if not isinstance(panel["label"], str):
                    fail(f"panels[{i}].label", "expected a string")
                if panel["show"] not in FIGURE_SHOWS:
                    fail(f"panels[{i}].show", f"{panel['show']!r} is not one of {', '.join(FIGURE_SHOWS)}")
            return
        layout = spec.get("layout")
        if layout not in TABLE_LAYOUTS:
            fail("layout", f"{layout!r} is not one of {', '.join(TABLE_LAYOUTS)}")
        names("metrics", list(TABLE_COLUMNS))
        if layout == "models":
            if not isinstance(spec.get("codes", False), bool):
                fail("codes", f"expected true or false, got {spec['codes']!r}")
            if "cells" in spec:
                fail("cells", "a `layout: models` table shows each experiment's default run, not cells")
            return
        if "cells" not in spec:
            fail("cells", "a `layout: cells` table needs cells")
        names("phases", list(PHASES), required=False)
        columns = spec.get("columns")
        if not isinstance(columns, list) or not columns:
            fail("columns", "expected a non-empty list of {header, parameter, values | format}")
        for i, col in enumerate(columns):
            key = f"columns[{i}]"
            if not isinstance(col, dict) or not {"header", "parameter"} <= set(col) \
                    or len({"values", "format"} & set(col)) != 1 or len(col) != 3:
                fail(key, f"expected header, parameter and one of values / format, got {col!r}")
            if col["parameter"] not in varied:
                fail(f"{key}.parameter", f"{col['parameter']!r} is not a parameter of the report's "
                     f"cells ({', '.join(dict.fromkeys(varied))})")
            if "format" in col:
                if not isinstance(col["format"], str) or "{}" not in col["format"]:
                    fail(f"{key}.format", f"expected a string with {{}} for the value, got {col['format']!r}")
                continue
            if not isinstance(col["values"], dict):
                fail(f"{key}.values", "expected a mapping value -> text")
            for grid in spec["cells"]:
                for v in grid.get(col["parameter"], []):
                    if v not in col["values"]:
                        fail(f"{key}.values", f"no text for {col['parameter']} value {v!r}")
        paper = spec.get("paper")
        if not isinstance(paper, list) or not all(isinstance(x, str) for x in paper):
            fail("paper", f"expected a list of parameter names (or phase), got {paper!r}")
        for x in paper:
            if x != "phase" and x not in varied:
                fail("paper", f"{x!r} is neither phase nor a parameter of the report's cells")

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

    def parse_cell(self, variant: str) -> dict:
        """'t_draft=16+strategy=top-c' -> {'t_draft': 16, 'strategy': 'top-c'}; 'base' -> {}."""
        if variant == "base":
            return {}
        out = {}
        for part in variant.split(CELL_SEP):
            short, eq, text = part.partition("=")
            if not eq or not text:
                raise DrrError(f"variant {variant!r}: {part!r} is not parameter=value")
            if short not in self.parameters:
                raise DrrError(f"variant {variant!r}: unknown parameter {short!r} "
                               f"({self.path.name} parameters: {', '.join(self.parameters)})")
            if short in out:
                raise DrrError(f"variant {variant!r}: parameter {short!r} given twice")
            out[short] = yaml.safe_load(text)
        return out

    @staticmethod
    def is_cell(variant: str) -> bool:
        return variant == "base" or "=" in variant

    def cell_settings(self, experiment: str, overrides: dict) -> list[str]:
        """The KEY=VALUE overrides (drr --set syntax) of a cell on top of the experiment config."""
        default = self.config(experiment)
        sets = [f"{self.parameters[k]}={format_value(v)}" for k, v in overrides.items()]
        n = default["generation"]["ablation_samples"]
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
            if self.is_cell(variant):
                layers.append(override_from_dotted(self.cell_settings(experiment, self.parse_cell(variant))))
            elif variant != "default":
                raise DrrError(f"variant {variant!r}: not 'default', 'base' nor a cell "
                               f"(parameter=value[,...] of {STUDIES_FILE})")
            self._configs[key] = load_config(*layers)
        return self._configs[key]

    def cell_name(self, experiment: str, overrides: dict) -> str:
        """The canonical name of the cell with these overrides (see the module docstring)."""
        default = self.config(experiment)
        kept = []
        for short, key in self.parameters.items():
            if short in overrides:
                have = default
                for part in key.split("."):
                    have = have[part]
                if overrides[short] != have:
                    kept.append(f"{short}={format_value(overrides[short])}")
        name = CELL_SEP.join(kept) or "base"
        if name == "base" and self.config(experiment, "base") == default:
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
                    overrides = dict(zip(shorts, combo))
                    cell = Cell(experiment, self.cell_name(experiment, overrides),
                                tuple(overrides.items()))
                    if (cell.experiment, cell.name, cell.values) not in seen:
                        seen.add((cell.experiment, cell.name, cell.values))
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
    suites = read_yaml(path).get("suites", {})
    if name not in suites:
        raise DrrError(f"{path}: suites: no suite {name!r} (have {', '.join(sorted(suites))})")
    return suites[name]
