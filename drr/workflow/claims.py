"""Which runs the paper's claims (configs/claims.yaml) read: the file checked against
configs/studies.yaml, each claim's comparisons resolved to (experiment, variant) runs of the plan
(for a `per_seed` claim, one pair of runs per training seed: the suite's `seeds`), and the claims
rule's inputs (metrics, speed and FLOPs files, the transformer reports and the selection records
the evidence reads) and rerun parameter. The verdicts are drr.reports.claims."""

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
        if c.get("per_seed") and c["kind"] != "pairs":
            raise DrrError(f"{where}.per_seed: only a pairs claim compares per seed")
        if c["report"] not in studies.reports:
            raise DrrError(f"{where}.report: unknown report {c['report']!r} ({studies.path.name} has "
                           f"{', '.join(studies.reports)})")
        if "parameter" in c:
            parameter(f"{where}.parameter", c["parameter"])
        if "metric" in c:
            metric(f"{where}.metric", c["metric"])
        for short in c.get("where", {}):
            parameter(f"{where}.where", short)
        listed = [(key, i, comp) for key in ("comparisons", "beside") for i, comp in enumerate(c.get(key, []))]
        for key, i, comp in listed:
            w = f"{where}.{key}[{i}]"
            if c.get("per_seed") and key == "comparisons" and any("run" not in comp[s] for s in ("a", "b")):
                raise DrrError(f"{w}: a per_seed claim compares runs (run: ablation | ar), not cells")
            if c.get("timed_on") and comp.get("metric", c.get("metric")) != "s_per_sample":
                raise DrrError(f"{w}.metric: a claim timed_on a device compares s_per_sample")
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
    """(experiment, variant) of a side of a comparison (seed 0's, for a `run` side)."""
    plan, report = ctx.plan, claim["report"]
    if "run" in sel:
        ablation = plan.suite.get("ablation")
        if ablation is None:
            raise Missing(f"suite {plan.suite_name} has no ablation experiment (configs/workflow.yaml)")
        if sel["run"] == "ablation":
            experiment = ablation
        else:
            ars = sorted(a for a, c in plan.ar_partner.items() if c == ablation and a not in plan.seed_of)
            if not ars:
                raise Missing(f"suite {plan.suite_name} has no AR RQ-Transformer on the tokenizer of {ablation}")
            experiment = ars[0]
        variant = sel.get("variant", "default")
        if variant != "default":
            if not plan.is_named(experiment, variant):
                raise Missing(f"suite {plan.suite_name} has no run {variant!r} of {experiment} "
                              "(configs/workflow.yaml `runs`)")
            return experiment, variant  # a named run is shown in the claims report itself
        run = (experiment, variant)
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
                       f"({', '.join(c.variant for c in cells)}); name one cell")
    return hits[0].experiment, hits[0].variant


def _comparisons(ctx: Context, name: str, claim: dict, key: str = "comparisons") -> list[dict]:
    """Each comparison of a pairs claim (`key`: its comparisons, or those reported `beside`):
    {prefix (of its label), a, b (selectors), metric, better, required, paper_effect}."""
    base = [{"a": c["a"], "b": c["b"], "metric": c.get("metric", claim.get("metric")),
             "better": c.get("better", claim.get("better")), "required": c.get("required", True),
             "paper_effect": c.get("paper_effect")} for c in claim.get(key, [])]
    if claim.get("for_each") != "cells" or key != "comparisons":
        return [dict(c, prefix="") for c in base]
    out = []
    for cell in report_cells(ctx, name, claim):
        cellsel = dict(cell.values)
        for c in base:
            out.append(dict(c, prefix=f"{cell.variant}: ", a={**c["a"], "cell": cellsel}, b={**c["b"], "cell": cellsel}))
    return out


def _side(run: tuple[str, str], phase: str) -> dict:
    return {"experiment": run[0], "variant": run[1], "phase": phase}


def claim_entry(ctx: Context, name: str, claim: dict) -> dict:
    """A claim with the runs it compares, for the spec (drr.workflow.report_spec.claims_spec):

    {name, claim (its configs/claims.yaml entry), and one of
     na: the reason no run can be named (the suite lacks the experiment),
     comparisons, beside: [{prefix, a, b, metric, better, required, paper_effect}] of a pairs claim,
         a and b each {experiment, variant, phase} (seed 0's); a per_seed claim's comparisons also
         `seeds`: [{a, b}] for every training seed, seed 0's first (the suite's `seeds`); a
         comparison beside the claim whose run the suite lacks has `na` (the reason) for a and b,
     cells: [{experiment, variant, x}] of a trend claim: the cells varying its parameter, by x}
    """
    plan = ctx.plan
    entry = {"name": name, "claim": claim}
    phase = claim.get("phase", "revised")
    try:
        if claim["kind"] != "pairs":
            param = claim["parameter"]
            cells = [c for c in report_cells(ctx, name, claim) if param in dict(c.values)]
            entry["cells"] = [{"experiment": c.experiment, "variant": c.variant, "x": c.value(param)}
                              for c in sorted(cells, key=lambda c: c.value(param))]
            return entry
        for key in ("comparisons", "beside"):
            comps = []
            for c in _comparisons(ctx, name, claim, key):
                comp = {k: c[k] for k in ("prefix", "metric", "better", "required", "paper_effect")}
                try:
                    sides = {s: select_run(ctx, name, claim, c[s]) for s in ("a", "b")}
                except Missing as e:
                    if key == "comparisons":
                        raise
                    comps.append(dict(comp, na=str(e)))  # a run shown beside, not in this suite
                    continue
                for s in ("a", "b"):
                    comp[s] = _side(sides[s], c[s].get("phase", phase))
                if claim.get("per_seed") and key == "comparisons":
                    seeds = {s: plan.seeds_of(sides[s][0]) for s in ("a", "b")}
                    if len(seeds["a"]) != len(seeds["b"]):
                        raise DrrError(f"{ctx.where(name)}: per_seed compares {sides['a'][0]} "
                                       f"({len(seeds['a'])} seeds) with {sides['b'][0]} ({len(seeds['b'])}); "
                                       "give both the same number of seeds (configs/workflow.yaml `seeds`)")
                    comp["seeds"] = [{s: _side((seeds[s][k], sides[s][1]), comp[s]["phase"]) for s in ("a", "b")}
                                     for k in range(len(seeds["a"]))]
                comps.append(comp)
            entry[key] = comps
    except Missing as e:
        entry = {"name": name, "claim": claim, "na": str(e)}
    return entry


def entry_runs(entry: dict) -> dict[str, list[tuple[str, str]]]:
    """The runs whose metrics, speed and FLOPs files a claim's entry reads, each once."""
    out = {"metrics": [], "speed": [], "flops": []}
    claim = entry["claim"]
    for comp in entry.get("comparisons", []) + [c for c in entry.get("beside", []) if "na" not in c]:
        pairs = comp.get("seeds") or [{"a": comp["a"], "b": comp["b"]}]
        for pair in pairs:
            for s in ("a", "b"):
                run = (pair[s]["experiment"], pair[s]["variant"])
                if comp["metric"] == "s_per_sample":
                    out["speed"].append(run)
                    if claim.get("timed_on"):
                        out["flops"].append(run)
                else:
                    out["metrics"].append(run)
    for c in entry.get("cells", []):
        out["speed" if claim["metric"] == "s_per_sample" else "metrics"].append((c["experiment"], c["variant"]))
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def report_files(plan, claims: dict) -> dict[str, str]:
    """report -> the file under reports/ that shows it (`<name>.png` for a figure, `<name>.md` for a
    table), for each studies.yaml report a claim names and the suite can build."""
    out = {}
    for claim in claims.values():
        name = claim["report"]
        if name in plan.reports and plan.available(name):
            out[name] = f"{name}.png" if plan.reports[name].kind == "figure" else f"{name}.md"
    return out


def flops_file(experiment: str, variant: str) -> str:
    """FLOPs per sample of a run's sampler (rule sampling_flops, drr.sampling.flops)."""
    return f"results/flops/{experiment}/{variant}.json"


def transformer_report(experiment: str) -> str:
    return f"results/transformers/{experiment}/report.json"


def evidence(plan, entries: list[dict]) -> dict:
    """What the report shows beside a claim that is not reproduced (docs/small-suite.md, protocol
    v6 §11), and the choices the runs were made with:

    spread      the default runs of the ablation experiment's seeds ([] with one seed): the change
                a second training run makes at the default settings
    models      {experiment: its transformer report (report.json: held-out NLL curve, chain-rule
                NLL)} of every trained model whose runs the claims read, and their other seeds
    selections  [{experiment, name, record}]: the record of each choice (drr.workflow.select)
    """
    ablation = plan.suite.get("ablation")
    spread = [(e, "default") for e in plan.seeds_of(ablation)] if ablation in plan.experiments else []
    spread = spread if len(spread) > 1 else []
    used = {r[0] for e in entries for runs in entry_runs(e).values() for r in runs} | {r[0] for r in spread}
    used |= {s for e in used for s in plan.seeds_of(e)}
    models = {e: transformer_report(e) for e in plan.experiments
              if e in used and e not in plan.imported_transformers}
    selections = [{"experiment": e, "name": n, "record": plan.selection_file(e, n, "json")}
                  for e in plan.selection_experiments() for n in plan.selections]
    return {"spread": [list(r) for r in spread], "models": models, "selections": selections}


def claims_inputs(plan, claims_path=CLAIMS_FILE) -> dict:
    """The rule's inputs: the metrics, speed and FLOPs files of every run the claims read (from the
    plan), the transformer reports and selection records of their evidence, and the tables and
    figures of the reports they name (built from those same files), so that the claims target
    builds the pictures its claims are about."""
    path = Path(plan.root) / claims_path
    ctx = Context(plan, Path(claims_path))
    claims = load_claims(path, plan.studies)
    entries = [claim_entry(ctx, name, claim) for name, claim in claims.items()]
    ev = evidence(plan, entries)
    runs = {"metrics": [tuple(r) for r in ev["spread"]], "speed": [], "flops": []}
    for entry in entries:
        for kind, found in entry_runs(entry).items():
            runs[kind] += found
    runs = {k: list(dict.fromkeys(v)) for k, v in runs.items()}
    return {"metrics": [plan.metrics_file(*r) for r in runs["metrics"]],
            "speed": [plan.speed_file(*r) for r in runs["speed"]],
            "flops": [flops_file(*r) for r in runs["flops"]],
            "models": list(ev["models"].values()),
            "selections": [s["record"] for s in ev["selections"]],
            "reports": [f"reports/{f}" for f in report_files(plan, claims).values()],
            "claims": str(claims_path)}


def claims_hash(plan, claims_path=CLAIMS_FILE) -> str:
    """Rerun parameter of the rule: the claims file's content and the cells of the reports it names."""
    text = (Path(plan.root) / claims_path).read_text(encoding="utf-8")
    return config_hash({"claims": hashlib.sha256(text.encode()).hexdigest(),
                        "cells": {r: [(c.experiment, c.variant, c.values) for c in plan.cells(r)]
                                  for r in plan.reports}})
