"""The jobs a plan makes and which of them an edit reruns: a model of Snakemake's rerun decision
from the same stage hashes the rules carry as their `hash` parameter (tests/test_plan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drr.core.config import config_hash
from drr.core.stages import stage_config, stage_hash
from drr.workflow.claims import CLAIMS_FILE, claims_hash, claims_inputs
from drr.workflow.plan import Plan


@dataclass(frozen=True)
class Job:
    key: str           # "<stage>:<what>", e.g. "transformer:tiny", "metrics:tiny/t_draft=16"
    hash: str          # the rerun parameter of its rule(s)
    needs: tuple       # keys of the jobs whose outputs it reads


def _variants(plan: Plan) -> dict[str, list[str]]:
    out = {e: ["default", *plan.named.get(e, {})] for e in plan.experiments}
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
    for tok, exp in plan.caption_bpe_of.items():
        cfg = plan.experiments[exp]
        add(f"text:{tok}", stage_hash(cfg, "text_tokenizer"), f"codes:{tok}/{cfg['data']['train_split']}")
    for ref, exp in plan.reference_experiment.items():
        add(f"reference:{ref}", stage_hash(plan.experiments[exp], "reference"))
    for tok, exp in plan.tokenizer_of.items():
        rfid = [f"reference:{plan.reference_of[exp]}"] if "reference" in plan.tokenizer_report_inputs(tok) else []
        add(f"tokenizer_report:{tok}", stage_hash(plan.experiments[exp], "tokenizer_report"),
            f"tokenizer:{tok}", *rfid)
    def choices(exp, use):  # the select jobs whose choice files a job of `exp` reads
        return [f"select:{plan.select_source[exp]}/{n}" for n, sel in plan.selections.items()
                if exp in plan.select_source and sel["runs"] == use]

    for exp, cfg in plan.experiments.items():
        tok = cfg["tokenizer"]["name"]
        model = [f"tokenizer:{tok}", f"codes:{tok}/{cfg['data']['train_split']}"]
        if exp in plan.caption_bpe_of.values() or plan.cond_type(exp) == "text":
            model.append(f"text:{tok}")
        if "eval_codes" in plan.transformer_inputs(exp):
            model.append(f"codes:{tok}/{cfg['data']['eval_split']}")
        for run in plan.sweeps(exp):
            add(f"sweep:{exp}/{run}", stage_hash(plan.sweep_config(exp, run), "transformer"), *model)
        add(f"transformer:{exp}", stage_hash(cfg, "transformer"), *model, *choices(exp, "train"))
        add(f"transformer_report:{exp}", stage_hash(cfg, "transformer_report"), f"transformer:{exp}",
            f"codes:{tok}/{cfg['data']['eval_split']}")
    claims = _claims_runs(plan)
    timed = {(e, "default") for e in plan.experiments}  # speed files: default variants, the runs of speed reports
    timed |= {run for r in plan.reports if plan.reports[r].speed and plan.available(r) for run in plan.report_runs(r)}
    timed |= set(claims["speed"]) if claims else set()  # and those of the speed claims
    for exp, variants in _variants(plan).items():
        tok = plan.experiments[exp]["tokenizer"]["name"]
        for v in variants:
            cfg = plan.resolved(exp, v)
            deps = (f"tokenizer:{tok}", f"transformer:{exp}", *([] if plan.is_named(exp, v) else choices(exp, "sample")))
            add(f"samples:{exp}/{v}", config_hash([stage_config(cfg, "samples"), stage_config(cfg, "merge")]),
                *deps)
            if (exp, v) in timed:
                add(f"speed:{exp}/{v}", stage_hash(cfg, "speed"), *deps)
            if claims and (exp, v) in claims["flops"]:
                add(f"flops:{exp}/{v}", stage_hash(cfg, "speed"), *deps)
            add(f"metrics:{exp}/{v}", stage_hash(cfg, "metrics"), f"samples:{exp}/{v}",
                f"reference:{plan.reference_of[exp]}")
    for exp in plan.selection_experiments():
        for name, sel in plan.selections.items():
            runs = [plan.selection_run(name, v) for v in sel["values"]]
            needs = [f"sweep:{exp}/{r}" for r in runs] if sel["runs"] == "train" else [f"metrics:{exp}/{r}" for r in runs]
            add(f"select:{exp}/{name}", config_hash(plan.selection_args(exp, name)), *needs)
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
            *(f"speed:{e}/{v}" for e, v in claims["speed"]), *(f"flops:{e}/{v}" for e, v in claims["flops"]),
            *(f"transformer_report:{Path(f).parent.name}" for f in claims["models"]),
            *(f"select:{Path(f).parent.name}/{Path(f).stem}" for f in claims["selections"]))
    return out


def _run_of(path: str) -> tuple[str, str]:
    """(experiment, variant) of a metrics, speed or FLOPs file path (Plan.metrics_file, Plan.speed_file,
    drr.workflow.claims.flops_file)."""
    p = Path(path)
    return p.parent.name, p.stem


def _claims_runs(plan: Plan) -> dict | None:
    """The runs the claims report reads (drr.reports.claims: configs/claims.yaml), or None without the file."""
    if not (plan.root / CLAIMS_FILE).is_file():
        return None
    inputs = claims_inputs(plan, CLAIMS_FILE)
    return {"metrics": [_run_of(f) for f in inputs["metrics"]], "speed": [_run_of(f) for f in inputs["speed"]],
            "flops": [_run_of(f) for f in inputs["flops"]], "models": inputs["models"],
            "selections": inputs["selections"], "hash": claims_hash(plan, CLAIMS_FILE)}


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
