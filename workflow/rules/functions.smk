# Input functions, parameters and target lists of the rule files (kept apart from the rules,
# as snakemake --lint asks). Included after common.smk, before the rule files.

# --- transformer.smk -------------------------------------------------------------------------------

def transformer_inputs(wildcards):
    cfg = EXPERIMENTS[wildcards.experiment]
    inputs = {"tokenizer": f"{tokenizer_dir(cfg)}/checkpoint.pt",
              "codes": codes_dir(cfg, cfg["data"]["train_split"])}
    if cfg["transformer"]["model"]["cond"]["type"] == "text":
        inputs["text"] = text_tokenizer_path(cfg)
    return inputs


def text_tokenizer_arg(wildcards, input):
    return f"--text-tokenizer {input.text}" if "text" in input.keys() else ""


_TRAIN_SHELL = (
    "{params.py} -m drr.transformer.train --config {params.config} --tokenizer {input.tokenizer}"
    " --codes {input.codes} {params.text} --out {output} > {log} 2>&1")


# --- sampling.smk ----------------------------------------------------------------------------------

def sampling_inputs(wildcards):
    cfg = EXPERIMENTS[wildcards.experiment]
    inputs = {"tokenizer": f"{tokenizer_dir(cfg)}/checkpoint.pt",
              "transformer": f"results/transformers/{wildcards.experiment}/checkpoint.pt"}
    if cfg["transformer"]["model"]["cond"]["type"] == "text":
        inputs["text"] = text_tokenizer_path(cfg)
        inputs["captions"] = codes_dir(cfg, cfg["data"]["eval_split"])
    return inputs


def text_condition_args(wildcards, input):
    if "text" not in input.keys():
        return ""
    return f"--text-tokenizer {input.text} --captions {input.captions}"


def shard_files(wildcards):
    n = num_shards(wildcards.experiment, wildcards.variant)
    return [f"results/samples/{wildcards.experiment}/{wildcards.variant}/shards/shard-{i:05d}.npz"
            for i in range(n)]


# --- metrics.smk -----------------------------------------------------------------------------------

def weights_manifest(experiment):
    return f"{EXPERIMENTS[experiment]['metrics']['weights_dir']}/manifest.json"


# Reference statistics depend on the data and the metrics' reference settings only: experiments
# that share them share one file, results/reference/<data name>-<hash>.npz.
def _reference_name(cfg):
    data = {k: v for k, v in cfg["data"].items() if k not in ("root", "download", "cache_dir")}
    keys = ("reference_split", "reference_images", "pr_reference_size", "fid_network", "weights_dir")
    material = {"data": data, "metrics": {k: cfg["metrics"][k] for k in keys}}
    return f"{cfg['data']['name']}-{drr.config.config_hash(material)[:8]}"


REFERENCE_OF = {name: _reference_name(cfg) for name, cfg in EXPERIMENTS.items()}
REFERENCE_EXPERIMENT = {}  # reference name -> first experiment (sorted) that has it
for _name in sorted(EXPERIMENTS):
    REFERENCE_EXPERIMENT.setdefault(REFERENCE_OF[_name], _name)


WEIGHTS_DIRS = sorted({cfg["metrics"]["weights_dir"] for cfg in EXPERIMENTS.values()})
WEIGHTS_CONFIG = {d: next(n for n in sorted(EXPERIMENTS) if EXPERIMENTS[n]["metrics"]["weights_dir"] == d)
                  for d in WEIGHTS_DIRS}


# --- reports.smk -----------------------------------------------------------------------------------

from types import SimpleNamespace

TABLES = ["table1", "table2", "table3", "table4", "tableA2", "tableA3"]
FIGURES = ["fig4a", "fig4b", "fig4c", "figA1"]
SPEED_REPORTS = {"table4", "tableA2"}


def report_cells(name):
    try:
        return STUDIES.cells(name, SUITE_SPEC)
    except DrrError as e:
        raise WorkflowError(str(e))


def report_available(name):
    """Tables 1, 2 and A2 always exist (the published rows); the others need their cells."""
    return name in ("table1", "table2", "tableA2") or bool(report_cells(name))


def missing_reason(name):
    role = STUDIES.reports[name]["experiment"]
    return f"suite {config['suite']} has no {role} experiment (configs/workflow.yaml)"


def report_inputs(wildcards):
    name = wildcards.report
    cells = report_cells(name)
    inputs = {"published": "configs/published.yaml", "studies": "configs/studies.yaml",
              "metrics": [f"results/metrics/{c.experiment}/{c.name}.parquet" for c in cells]}
    if name in SPEED_REPORTS:
        inputs["speed"] = [f"results/speed/{c.experiment}/{c.name}.json" for c in cells]
    for experiment in STUDIES.baselines(name, SUITE_SPEC):
        inputs["metrics"].append(f"results/metrics/{experiment}/default.parquet")
        inputs["speed"].append(f"results/speed/{experiment}/default.json")
    return inputs


FIG5 = STUDIES.pictures["fig5"]
ABLATION = SUITE_SPEC["ablation"]


def grid_kind(experiment):
    return {"class": "classes", "text": "captions"}.get(
        EXPERIMENTS[experiment]["transformer"]["model"]["cond"]["type"])


def grid_args(wildcards, input):
    spec = STUDIES.pictures
    if wildcards.grid == "classes":
        return (f"--classes {' '.join(str(c) for c in spec['class_grids']['classes'])}"
                f" --per-class {spec['class_grids']['per_class']}")
    return (f"--text-tokenizer {input.text} --captions {input.captions}"
            f" --num-captions {spec['caption_grids']['captions']}"
            f" --per-caption {spec['caption_grids']['per_caption']}")


# AR experiment -> a contextual experiment of the same tokenizer (the suite's ablation experiment
# when it qualifies): their inpainting figures show the same masked images (paper Figure 1).
def _contextual_partner(ar):
    tok = EXPERIMENTS[ar]["tokenizer"]["name"]
    same = [n for n in SUITE if n != ar and EXPERIMENTS[n]["tokenizer"]["name"] == tok
            and EXPERIMENTS[n]["transformer"]["model"]["kind"] == "contextual"]
    return ABLATION if ABLATION in same else (sorted(same) or [None])[0]


AR_PARTNER = {n: _contextual_partner(n) for n in SUITE
              if EXPERIMENTS[n]["transformer"]["model"]["kind"] == "ar"}
AR_PARTNER = {k: v for k, v in AR_PARTNER.items() if v is not None}


def picture_targets():
    out = ["reports/fig5.png"]
    out += [f"reports/figures/{a}/inpainting-vs-{c}.png" for a, c in AR_PARTNER.items()]
    for name in SUITE:
        out.append(f"reports/samples/{name}/default.png")
        out.append(f"reports/figures/{name}/inpainting.png")
        if grid_kind(name):
            out.append(f"reports/figures/{name}/{grid_kind(name)}.png")
    return out


def report_targets():
    tables = [t for t in TABLES if report_available(t)]
    figures = [f for f in FIGURES if report_available(f)]
    return tables, figures
