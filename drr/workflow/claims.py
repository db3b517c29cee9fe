"""Which runs the paper's claims (configs/claims.yaml) read: the file checked against
configs/studies.yaml, each claim's comparisons resolved to (experiment, variant) runs of the plan,
and the claims rule's inputs and rerun parameter. The verdicts are drr.reports.claims."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from drr.core.columns import COLUMNS
from drr.core.config import check_schema, config_hash, read_yaml
from drr.core.errors import DrrError

CLAIMS_FILE = "configs/claims.yaml"


class Missing(Exception):
    """A result a comparison needs is not there: the comparison reads "n/a, because <reason>"."""


def load_claims(path, studies) -> dict:
    """configs/claims.yaml, checked against its schema (workflow/schemas/claims.schema.yaml), then
    against configs/studies.yaml (reports, parameters) and the metric columns (drr.core.columns);
    each error one line naming the file and the key."""
    path = Path(path)
    data = read_yaml(path)
    check_schema(data, "claims", path)
    claims = data["claims"]
    params = f"{studies.path.name} parameters: {', '.join(studies.parameters)}"

    def parameter(key, short):
        if short not in studies.parameters:
            raise DrrError(f"{key}: unknown parameter {short!r} ({params})")

    def metric(key, name):
        if name not in COLUMNS:
            raise DrrError(f"{key}: {name!r} is not one of {', '.join(COLUMNS)}")

    for name, c in claims.items():
        where = f"{path}: claims.{name}"
        if c["report"] not in studies.reports:
            raise DrrError(f"{where}.report: unknown report {c['report']!r} ({studies.path.name} has "
                           f"{', '.join(studies.reports)})")
        if "parameter" in c:
            parameter(f"{where}.parameter", c["parameter"])
        if "metric" in c:
            metric(f"{where}.metric", c["metric"])
        for short in c.get("where", {}):
            parameter(f"{where}.where", short)
        for i, comp in enumerate(c.get("comparisons", [])):
            w = f"{where}.comparisons[{i}]"
            if "metric" in comp:
                metric(f"{w}.metric", comp["metric"])
            elif "metric" not in c:
                raise DrrError(f"{w}: missing field 'metric' (here or in the claim)")
            if "better" not in comp and "better" not in c:
                raise DrrError(f"{w}: missing field 'better' (here or in the claim)")
            for side in ("a", "b"):
                for short in comp[side].get("cell", {}):
                    parameter(f"{w}.{side}.cell", short)
    return claims


@dataclass
class Context:
    """The suite's plan, the claims file and the input files by (experiment, variant)."""
    plan: object
    claims_path: Path
    metrics: dict = field(default_factory=dict)   # (experiment, variant) -> Path
    speed: dict = field(default_factory=dict)

    def where(self, name: str) -> str:
        return f"{self.claims_path}: claims.{name}"


def report_cells(ctx: Context, name: str, claim: dict):
    plan, report = ctx.plan, claim["report"]
    if not plan.available(report):
        raise Missing(plan.missing_reason(report))
    cells = plan.cells(report)
    want = claim.get("where") or {}
    return [c for c in cells if all(dict(c.values).get(k) == v for k, v in want.items())]


def select_run(ctx: Context, name: str, claim: dict, sel: dict) -> tuple[str, str]:
    """(experiment, variant) of a side of a comparison."""
    plan, report = ctx.plan, claim["report"]
    if "run" in sel:
        ablation = plan.suite.get("ablation")
        if ablation is None:
            raise Missing(f"suite {plan.suite_name} has no ablation experiment (configs/workflow.yaml)")
        if sel["run"] == "ablation":
            run = (ablation, "default")
        else:
            ars = sorted(a for a, c in plan.ar_partner.items() if c == ablation)
            if not ars:
                raise Missing(f"suite {plan.suite_name} has no AR RQ-Transformer on the tokenizer of {ablation}")
            run = (ars[0], "default")
        if plan.available(report) and run not in plan.report_runs(report):
            raise DrrError(f"{ctx.where(name)}: run {sel['run']} ({run[0]}/{run[1]}) is not a run of "
                           f"report {report} (studies.yaml: its cells and baselines)")
        return run
    want = sel.get("cell") or {}
    cells = report_cells(ctx, name, claim)
    hits = [c for c in cells if all(k in dict(c.values) and dict(c.values)[k] == v for k, v in want.items())]
    if len(hits) != 1:
        text = ",".join(f"{k}={v}" for k, v in want.items()) or "(no values)"
        raise DrrError(f"{ctx.where(name)}: cell {text} matches {len(hits)} cells of report {report} "
                       f"({', '.join(c.name for c in cells)}); name one cell")
    return hits[0].experiment, hits[0].name


def _comparisons(ctx: Context, name: str, claim: dict) -> list[tuple[str, dict, dict, str, str]]:
    """(label prefix, a selector, b selector, metric, better) of each comparison of a pairs claim."""
    base = [(c, c.get("metric", claim.get("metric")), c.get("better", claim.get("better")))
            for c in claim["comparisons"]]
    if claim.get("for_each") != "cells":
        return [("", c["a"], c["b"], m, b) for c, m, b in base]
    out = []
    for cell in report_cells(ctx, name, claim):
        cellsel = dict(cell.values)
        for c, m, b in base:
            out.append((f"{cell.name}: ", {**c["a"], "cell": cellsel}, {**c["b"], "cell": cellsel}, m, b))
    return out


def needed_runs(ctx: Context, name: str, claim: dict) -> tuple[list, list]:
    """(metrics runs, speed runs) a claim reads, as (experiment, variant) pairs."""
    try:
        if claim["kind"] == "pairs":
            m, s = [], []
            for _, a, b, metric, _ in _comparisons(ctx, name, claim):
                for sel in (a, b):
                    (s if metric == "s_per_sample" else m).append(select_run(ctx, name, claim, sel))
            return m, s
        runs = [(c.experiment, c.name) for c in report_cells(ctx, name, claim)
                if claim["parameter"] in dict(c.values)]
        return ([], runs) if claim["metric"] == "s_per_sample" else (runs, [])
    except Missing:
        return [], []


def report_files(plan, claims: dict) -> dict[str, str]:
    """report -> the file under reports/ that shows it (`<name>.png` for a figure, `<name>.md` for a
    table), for each studies.yaml report a claim names and the suite can build."""
    out = {}
    for claim in claims.values():
        name = claim["report"]
        if name in plan.reports and plan.available(name):
            out[name] = f"{name}.png" if plan.reports[name].kind == "figure" else f"{name}.md"
    return out


def claims_inputs(plan, claims_path=CLAIMS_FILE) -> dict:
    """The rule's inputs: the metrics and speed files of every run the claims read (from the plan),
    and the tables and figures of the reports they name (built from those same files), so that
    the claims target builds the pictures its claims are about."""
    path = Path(plan.root) / claims_path
    ctx = Context(plan, Path(claims_path))
    claims = load_claims(path, plan.studies)
    metrics, speed = [], []
    for name, claim in claims.items():
        m, s = needed_runs(ctx, name, claim)
        metrics += m
        speed += s
    return {"metrics": [plan.metrics_file(*r) for r in dict.fromkeys(metrics)],
            "speed": [plan.speed_file(*r) for r in dict.fromkeys(speed)],
            "reports": [f"reports/{f}" for f in report_files(plan, claims).values()],
            "claims": str(claims_path)}


def claims_hash(plan, claims_path=CLAIMS_FILE) -> str:
    """Rerun parameter of the rule: the claims file's content and the cells of the reports it names."""
    text = (Path(plan.root) / claims_path).read_text(encoding="utf-8")
    return config_hash({"claims": hashlib.sha256(text.encode()).hexdigest(),
                        "cells": {r: [(c.experiment, c.name, c.values) for c in plan.cells(r)]
                                  for r in plan.reports}})
