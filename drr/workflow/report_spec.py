"""A report's specification: what it shows, written by the plan as the input of the report's job.

    python -m drr.workflow.report_spec --suite tiny --report table4 --out results/reports/table4.spec.json
    python -m drr.workflow.report_spec --suite small --report claims --out results/reports/claims.spec.json

The report programs (drr.reports) read their spec and the metrics and speed files their rule gives
them, and nothing else: no config, no plan. The spec is the plan's answer for one report, as plain
JSON: a table's or figure's (`Plan.report_spec`), the index's (`Plan.index_spec`) or the claims'
(`claims_spec`: each claim of configs/claims.yaml with the runs it compares, resolved here by
drr.workflow.claims). Rule `report_spec` (workflow/rules/reports.smk) writes it; its `hash` parameter
is the hash of the same dict (`spec_hash`), so an edit that changes what a report shows reruns its
spec job and then the report, and any other edit neither.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from drr.core.config import REPO, config_hash
from drr.core.errors import DrrError, user_errors
from drr.core.files import write_text
from drr.workflow.claims import (
    CLAIMS_FILE,
    Context,
    claim_entry,
    claims_inputs,
    entry_runs,
    evidence,
    flops_file,
    load_claims,
    report_files,
)
from drr.workflow.plan import Plan
from drr.workflow.studies import WORKFLOW_FILE, read_yaml

INDEX, CLAIMS = "index", "claims"  # the two specs that are not a configs/studies.yaml report


def spec_file(report: str) -> str:
    """Where rule report_spec writes a report's spec (the `spec` input of the report's rule)."""
    return f"results/reports/{report}.spec.json"


def spec_names(plan: Plan) -> list[str]:
    """Every spec the plan can write: its reports, the index and the claims."""
    return [*plan.reports, INDEX, CLAIMS]


def claims_spec(plan: Plan, claims_path=CLAIMS_FILE) -> dict:
    """The claims report's spec: each claim of `claims_path` (relative to the plan's root) with
    the runs it reads, and the evidence the report shows beside a claim that is not reproduced.

    claims            [drr.workflow.claims.claim_entry of each claim: {name, claim, and na, or
                       comparisons and beside (pairs; `seeds` per training seed), or cells (trend)}]
    links             report -> the file under reports/ that shows it
    runs              [{experiment, variant, metrics, speed, flops}]: the files of every run the
                      claims read (null where a claim reads no such file), the rule's inputs
    spread            [[experiment, variant]]: the ablation experiment's default run of each seed
    models            {experiment: transformer report (report.json)} of the models the claims use
    selections        [{experiment, name, record}]: the records of the workflow's choices
    """
    ctx = Context(plan, Path(claims_path))
    claims = load_claims(Path(plan.root) / claims_path, plan.studies)
    out = [claim_entry(ctx, name, claim) for name, claim in claims.items()]
    ev = evidence(plan, out)
    runs: dict[tuple[str, str], dict] = {}
    files = {"metrics": plan.metrics_file, "speed": plan.speed_file, "flops": flops_file}
    found = {"metrics": [tuple(r) for r in ev["spread"]], "speed": [], "flops": []}
    for entry in out:
        for kind, these in entry_runs(entry).items():
            found[kind] += these
    for kind in ("metrics", "speed", "flops"):
        for experiment, variant in dict.fromkeys(found[kind]):
            run = runs.setdefault((experiment, variant), {"experiment": experiment, "variant": variant,
                                                          "metrics": None, "speed": None, "flops": None})
            run[kind] = files[kind](experiment, variant)
    inputs = claims_inputs(plan, claims_path)  # the claims rule's inputs: the same files
    for kind in ("metrics", "speed", "flops"):
        have = {r[kind] for r in runs.values()} - {None}
        if have != set(inputs[kind]):
            raise DrrError(f"{claims_path}: the runs resolved for the spec and the claims rule's "
                           f"--{kind} inputs differ ({', '.join(sorted(have ^ set(inputs[kind])))})")
    return {"name": CLAIMS, "kind": CLAIMS, "suite": plan.suite_name, "scale": plan.scale,
            "claims_file": str(claims_path), "claims": out,
            "links": report_files(plan, claims), "runs": list(runs.values()), **ev}


def spec(plan: Plan, name: str, claims_path=CLAIMS_FILE) -> dict:
    """The spec named `name`: a report of configs/studies.yaml, `index` or `claims`."""
    if name == INDEX:
        return plan.index_spec()
    if name == CLAIMS:
        return claims_spec(plan, claims_path)
    if name not in plan.reports:
        raise DrrError(f"--report {name}: not a report of {plan.studies.path.name} "
                       f"({', '.join(spec_names(plan))})")
    return plan.report_spec(name)


def spec_hash(plan: Plan, name: str, claims_path=CLAIMS_FILE) -> str:
    """Rule report_spec's `hash` parameter: the hash of the spec (of a table's with the model
    sections in place of the parameter counts: Plan.report_hash)."""
    if name in plan.reports:
        return plan.report_hash(name)
    return config_hash(spec(plan, name, claims_path))


def _not_json(obj, where: str = "") -> str | None:
    """Where `obj` holds something JSON would not give back as it is (a non-text key, a tuple,
    another type), or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"{where}: key {k!r} is not text"
            bad = _not_json(v, f"{where}.{k}" if where else k)
            if bad:
                return bad
        return None
    if isinstance(obj, list):
        return next((b for i, v in enumerate(obj) if (b := _not_json(v, f"{where}[{i}]"))), None)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return None
    return f"{where}: {type(obj).__name__} {obj!r} is not JSON data"


def write_spec(data: dict, out) -> None:
    """Write a spec as JSON (atomically); refused if JSON would not give it back unchanged."""
    bad = _not_json(data)
    if bad:
        raise DrrError(f"spec of {data.get('name')}: {bad}")
    write_text(out, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def plan_of(suite: str, scale: str | None = None, root=REPO) -> Plan:
    """The plan of a suite of configs/workflow.yaml (with a scale), as the workflow makes it."""
    root = Path(root)
    wf = read_yaml(root / WORKFLOW_FILE)
    if suite not in wf.get("suites", {}):
        raise DrrError(f"{root / WORKFLOW_FILE}: suites: no suite {suite!r} "
                       f"(have {', '.join(sorted(wf.get('suites', {})))})")
    wf["suite"], wf["scale"] = suite, scale
    return Plan(root, wf)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", required=True, help="suite of configs/workflow.yaml")
    p.add_argument("--scale", help="the overlay of configs/scales/<SCALE>/ (workflow key scale)")
    p.add_argument("--report", required=True,
                   help=f"a report of configs/studies.yaml, {INDEX} or {CLAIMS}")
    p.add_argument("--claims", default=CLAIMS_FILE, help=f"the claims file (default {CLAIMS_FILE})")
    p.add_argument("--out", required=True, type=Path, help="the spec to write (.json)")
    p.add_argument("--root", default=".", type=Path, help="folder holding configs/ (default: here)")
    args = p.parse_args(argv)
    with user_errors():
        write_spec(spec(plan_of(args.suite, args.scale, args.root), args.report, args.claims), args.out)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
