# Tokenizer stage (paper §3.1): train an RQ-VAE, or import the official checkpoint as the paper
# does, then report its reconstructions.


# Training runs where tokenizer.launch.executor says, as transformer training does: `inprocess`
# tokenizers are ordinary (GPU) jobs; `slurm`/`local` ones submit themselves through submitit (a
# multi-GPU job that saves and requeues itself at its time limit), so their rule runs on the
# submitting host and waits for the job.
_TOKENIZER_SUBMITTED = [t for t in PLAN.trained_tokenizers
                        if PLAN.experiments[PLAN.tokenizer_of[t]]["tokenizer"]["launch"]["executor"] != "inprocess"]
_TOKENIZER_INPROCESS = [t for t in PLAN.trained_tokenizers if t not in _TOKENIZER_SUBMITTED]

# torchvision's VGG16, LPIPS' backbone (drr.metrics.weights.VGG16_FILE), placed in metrics.weights_dir
# on the submitting host (compute nodes often have no internet; training never downloads).
_VGG16 = "torchvision/vgg16-397923af.pth"


# The input of each trained tokenizer with LPIPS whose tokenizer.loss.vgg16_weights is null.
_TOKENIZER_VGG16 = {
    t: {"vgg16": f"{cfg['metrics']['weights_dir']}/{_VGG16}"}
    for t, cfg in ((t, PLAN.experiments[PLAN.tokenizer_of[t]]) for t in PLAN.trained_tokenizers)
    if cfg["tokenizer"]["loss"]["perceptual_weight"] > 0 and cfg["tokenizer"]["loss"]["vgg16_weights"] is None
}


_TRAIN_TOKENIZER_SHELL = (
    "{params.py:q} -m drr.tokenizer.train --config {params.config:q} --out {output:q} > {log:q} 2>&1")


rule train_tokenizer:
    input:
        unpack(lambda w: _TOKENIZER_VGG16.get(w.tokenizer, {})),
        data=tokenizer_data("train_split"),
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/train.log",
    benchmark:
        "results/tokenizers/{tokenizer}/train.benchmark.tsv"
    wildcard_constraints:
        tokenizer=one_of(_TOKENIZER_INPROCESS),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("tokenizer"),
    resources:
        gpu=1,
    shell:
        _TRAIN_TOKENIZER_SHELL


rule submit_tokenizer:
    input:
        unpack(lambda w: _TOKENIZER_VGG16.get(w.tokenizer, {})),
        data=tokenizer_data("train_split"),
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/submit.log",
    wildcard_constraints:
        tokenizer=one_of(_TOKENIZER_SUBMITTED),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("tokenizer"),
    shell:
        _TRAIN_TOKENIZER_SHELL


rule lpips_weights:
    output:
        f"{{weights_dir}}/{_VGG16}",
    log:
        "{weights_dir}/torchvision/vgg16.log",
    wildcard_constraints:
        weights_dir=one_of(PLAN.weights_dirs),
    params:
        py=PY,
        config=lambda w: PLAN.config_value(PLAN.weights_experiment[w.weights_dir]),
    shell:
        "{params.py:q} -m drr.metrics.weights --config {params.config:q} --lpips > {log:q} 2>&1"


localrules:
    submit_tokenizer,
    lpips_weights,


rule import_tokenizer:
    input:
        official=lambda w: PLAN.official_input(PLAN.tokenizer_of[w.tokenizer], "tokenizer"),
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/import.log",
    wildcard_constraints:
        tokenizer=one_of(PLAN.imported_tokenizers),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("tokenizer"),
    shell:
        "{params.py:q} -m drr.tokenizer.import_official --config {params.config:q} --out {output:q} > {log:q} 2>&1"


rule report_tokenizer:
    input:
        unpack(lambda w: PLAN.tokenizer_report_inputs(w.tokenizer)),
        data=tokenizer_data("eval_split"),
    output:
        json="results/tokenizers/{tokenizer}/report.json",
        markdown="reports/tokenizers/{tokenizer}.md",
        png="reports/tokenizers/{tokenizer}.png",
    log:
        "results/tokenizers/{tokenizer}/report.log",
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("tokenizer_report"),
        reference=lambda w, input: ["--reference", input.reference] if "reference" in input.keys() else [],
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.tokenizer.report --config {params.config:q} --tokenizer {input.tokenizer:q}"
        " {params.reference:q} --json {output.json:q} --markdown {output.markdown:q} --png {output.png:q} > {log:q} 2>&1"
