# Selection stage (docs/small-suite.md, protocol v6 §3 and §5): settings the workflow chooses by a
# rule fixed in advance, for the experiments a suite lists under `select` (configs/workflow.yaml)
# and their other seeds. configs/studies.yaml `selections` says what: a `train` selection (the
# learning rate) trains one short run per value (rule sweep_transformer); a `sample` selection (the
# guidance scale) samples one validation set per value, a named variant of the experiment made by
# the sampling and metrics rules. Rule select_setting then takes the lowest held-out NLL or FID
# (drr.workflow.select) and writes results/select/<experiment>/<name>.yaml, the choice as a config
# layer, and <name>.json, its record. The jobs that use the choice (training and its report;
# sampling, speed and pictures of the default and ablation variants) read the .yaml after their
# experiment file and have it as an input: the DAG is static, the value a file the job reads.


rule sweep_transformer:
    input:
        unpack(lambda w: PLAN.transformer_inputs(w.experiment, choices=False)),
    output:
        "results/select/{experiment}/{sweep}/checkpoint.pt",
    log:
        "results/select/{experiment}/{sweep}/train.log",
    benchmark:
        "results/select/{experiment}/{sweep}/train.benchmark.tsv"
    wildcard_constraints:
        experiment=one_of(PLAN.selection_experiments()),
        sweep=one_of(PLAN.sweep_names()),
    params:
        py=PY,
        configs=lambda w: _plan("sweep_args", w.experiment, w.sweep),
        hash=lambda w: drr.core.stages.stage_hash(_plan("sweep_config", w.experiment, w.sweep), "transformer"),
        text=option("--text-tokenizer", "text"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.transformer.train {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --codes {input.codes:q} {params.text:q} --out {output:q} > {log:q} 2>&1"


rule select_setting:
    input:
        unpack(lambda w: _plan("selection_inputs", w.experiment, w.selection)),
    output:
        yaml="results/select/{experiment}/{selection}.yaml",
        json="results/select/{experiment}/{selection}.json",
    log:
        "results/select/{experiment}/{selection}.log",
    wildcard_constraints:
        experiment=one_of(PLAN.selection_experiments()),
        selection=one_of(PLAN.selections),
    params:
        py=PY,
        args=lambda w: _plan("selection_args", w.experiment, w.selection),
    shell:
        "{params.py:q} -m drr.workflow.select {params.args:q} --candidates {input.candidates:q}"
        " --yaml {output.yaml:q} --json {output.json:q} > {log:q} 2>&1"


localrules:
    select_setting,
