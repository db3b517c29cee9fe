"""Choose a setting from its candidate runs by a rule fixed in advance (docs/small-suite.md, protocol
v6 §3 and §5): the lowest held-out NLL at the last step of one training run per value, or the
lowest FID of one validation sample set per value.

    python -m drr.workflow.select --name lr --experiment small --key transformer.train.lr \
        --lowest heldout_nll --values 0.0003 0.001 0.003 \
        --candidates results/select/small/lr-0.0003/checkpoint.pt ... \
        --yaml results/select/small/lr.yaml --json results/select/small/lr.json

    python -m drr.workflow.select --name guidance --experiment small --key sampling.guidance_scale \
        --lowest fid --values 1.0 1.4 1.8 2.0 \
        --candidates results/metrics/small/guidance-1.0.parquet ... --yaml ... --json ...

Rule select_setting (workflow/rules/select.smk) runs it with the plan's arguments
(drr.workflow.plan: configs/studies.yaml `selections`); the candidates are in the order of the
values, one each.

- `heldout_nll`: a candidate is a training run's checkpoint; its value is the `heldout_nll` that
  the training logged (metrics.jsonl beside the checkpoint, transformer.train.eval_every) at the
  step the checkpoint was trained to. The NLL is each model's own training objective on the first
  transformer.train.eval_maps held-out maps.
- `fid`: a candidate is the metrics file of a validation run; its value is the FID of the
  `revised` row, whose `variant` must be the candidate's run, <name>-<value>.

The lowest value wins; a tie goes to the value listed first. A winner at either end of the values
is taken and flagged (`at_edge`), as the protocol says, never extended.

Writes, atomically: `--yaml`, the choice as a config layer (the key and the chosen value, nothing
else), which the jobs that use it read after their experiment file (`--config`), so their
resolved config, the `config.yaml` written beside their results and its hash in their provenance
hold the chosen value; `--json`, the record: every candidate's file and value, the rule, the
choice, and the provenance (commit, versions).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from drr.core.errors import DrrError, user_errors

RULES = {
    "heldout_nll": "lowest held-out NLL (the training objective, nats per code) at the run's last step",
    "fid": "lowest FID of the validation samples (revised images)",
}


def _finite(value, where: str):
    """`value` itself, if it is a finite number; else a DrrError naming `where`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise DrrError(f"{where} is {value!r}, not a finite number")
    return value


def heldout_candidate(checkpoint) -> dict:
    """The held-out NLL a training run logged at the step its checkpoint was trained to."""
    from drr.core.checkpoint import load_file

    checkpoint = Path(checkpoint)
    ckpt = load_file(checkpoint, "transformer checkpoint")
    steps = (ckpt.get("provenance") or {}).get("trained_steps") if isinstance(ckpt, dict) else None
    if not isinstance(steps, int):
        raise DrrError(f"{checkpoint}: field 'provenance.trained_steps' is {steps!r}, not a step count")
    log = checkpoint.parent / "metrics.jsonl"
    if not log.is_file():
        raise DrrError(f"{log}: training log not found (it is written beside {checkpoint.name})")
    curve = []
    for i, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DrrError(f"{log}: line {i} is not JSON") from None
        if isinstance(rec, dict) and "heldout_nll" in rec:
            curve.append((rec.get("step"), _finite(rec["heldout_nll"], f"{log}: line {i}: field 'heldout_nll'")))
    at_end = [v for s, v in curve if s == steps]
    if not at_end:
        raise DrrError(f"{log}: no field 'heldout_nll' at step {steps}, the step {checkpoint.name} was trained "
                       "to (set transformer.train.eval_every)")
    return {"file": str(checkpoint), "value": at_end[-1], "step": steps,
            "heldout_curve": [[s, v] for s, v in curve]}


def fid_candidate(metrics, run: str) -> dict:
    """The FID of a validation run's revised metrics row."""
    import pyarrow
    import pyarrow.parquet as pq

    metrics = Path(metrics)
    if not metrics.is_file():
        raise DrrError(f"{metrics}: metrics file not found")
    try:
        rows = pq.read_table(metrics).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise DrrError(f"{metrics}: not a metrics file ({str(e).splitlines()[0][:120]})") from None
    revised = [r for r in rows if r.get("phase") == "revised"]
    if len(revised) != 1:
        raise DrrError(f"{metrics}: field 'phase' has {len(revised)} 'revised' rows, expected 1")
    row = revised[0]
    if row.get("variant") != run:
        raise DrrError(f"{metrics}: field 'variant' is {row.get('variant')!r}, not the candidate run {run!r}")
    return {"file": str(metrics), "value": _finite(row.get("fid"), f"{metrics}: field 'fid'"),
            "fid_lo": row.get("fid_lo"), "fid_hi": row.get("fid_hi"), "n_samples": row.get("n_samples"),
            "precision": row.get("precision"), "recall": row.get("recall")}


def choose(values: list, scores: list[float]) -> int:
    """Index of the lowest score; a tie goes to the first."""
    if not scores or len(values) != len(scores):
        raise ValueError("one score per value")
    return min(range(len(scores)), key=lambda i: (scores[i], i))


def select(name: str, experiment: str, key: str, lowest: str, values: list, candidates: list) -> dict:
    """The record of one selection (what --json holds)."""
    from drr.core.provenance import provenance
    from drr.workflow.studies import format_value

    if lowest not in RULES:
        raise DrrError(f"--lowest {lowest}: not one of {', '.join(RULES)}")
    if len(values) != len(candidates):
        raise DrrError(f"--values gives {len(values)} values and --candidates {len(candidates)} files; "
                       "give one candidate per value, in order")
    if len(values) < 2:
        raise DrrError(f"--values: {len(values)} value(s); a selection chooses among two or more")
    out = []
    for value, path in zip(values, candidates):
        run = f"{name}-{format_value(value)}"
        cand = heldout_candidate(path) if lowest == "heldout_nll" else fid_candidate(path, run)
        out.append({"value_of_key": value, "run": run, **cand})
    best = choose(values, [c["value"] for c in out])
    return {"selection": name, "experiment": experiment, "key": key, "lowest": lowest,
            "rule": RULES[lowest], "values": values, "candidates": out,
            "chosen": values[best], "chosen_run": out[best]["run"], "chosen_score": out[best]["value"],
            "at_edge": best in (0, len(values) - 1),
            "provenance": provenance(None, experiment=experiment)}


def layer_text(record: dict) -> str:
    """The choice as a config layer, with a comment saying where it comes from."""
    import yaml

    from drr.core.config import nested

    head = (f"# {record['selection']} of {record['experiment']}, chosen by drr.workflow.select: "
            f"{record['rule']}; {record['chosen_run']} of "
            + ", ".join(c["run"] for c in record["candidates"])
            + (" (at the edge of the values)" if record["at_edge"] else "")
            + ". Every value's result: the .json beside this file.\n")
    return head + yaml.safe_dump(nested({record["key"]: record["chosen"]}), sort_keys=False)


def main(argv=None) -> None:
    from drr.core.config import load_config, nested
    from drr.core.files import write_json, write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the selection (configs/studies.yaml selections)")
    p.add_argument("--experiment", required=True, help="the experiment it is made on")
    p.add_argument("--key", required=True, help="the dotted config key it chooses")
    p.add_argument("--lowest", required=True, choices=sorted(RULES), help="what the lowest wins on")
    p.add_argument("--values", required=True, nargs="+", help="the values, as YAML/JSON numbers, in order")
    p.add_argument("--candidates", required=True, nargs="+", type=Path,
                   help="one per value, in order: a training run's checkpoint (heldout_nll) or a "
                        "validation run's metrics file (fid)")
    p.add_argument("--yaml", required=True, type=Path, help="the choice, a config layer")
    p.add_argument("--json", required=True, type=Path, help="the record of every candidate and the choice")
    args = p.parse_args(argv)
    with user_errors():
        values = []
        for text in args.values:
            try:
                values.append(_finite(json.loads(text), f"--values {text!r}"))
            except json.JSONDecodeError:
                raise DrrError(f"--values {text!r}: not a number") from None
        record = select(args.name, args.experiment, args.key, args.lowest, values, args.candidates)
        try:  # the choice is a valid config layer: the key exists and the value fits it
            load_config(nested({record["key"]: record["chosen"]}))
        except DrrError as e:
            raise DrrError(f"--key {args.key}: {e}") from None
        write_text(args.yaml, layer_text(record))
        write_json(args.json, record)
    edge = " (at the edge of the values)" if record["at_edge"] else ""
    print(f"{args.name} of {args.experiment}: {record['key']} = {record['chosen']}{edge}; wrote {args.yaml}, "
          f"{args.json}", flush=True)


if __name__ == "__main__":
    main()
