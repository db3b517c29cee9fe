# Transformer stage (paper §3.2): the caption BPE of text-conditional experiments, then the
# Contextual RQ-Transformer of each experiment, trained on its tokenizer's code maps, and a report.
#
# Training runs where transformer.launch.executor says: `inprocess` experiments are ordinary
# (GPU) jobs; `slurm`/`local` experiments submit themselves through submitit (a checkpointable,
# self-requeueing SLURM job for the paper configs), so their rule runs on the submitting host and
# waits for the job.


# The caption BPE (drr.text) trained on the captions of a tokenizer's training code map.
rule train_text_tokenizer:
    input:
        codes=lambda w: PLAN.codes_dir(PLAN.experiments[PLAN.caption_bpe_of[w.tokenizer]],
                                       PLAN.experiments[PLAN.caption_bpe_of[w.tokenizer]]["data"]["train_split"]),
    output:
        "results/text/{tokenizer}/bpe.json",
    log:
        "results/text/{tokenizer}/bpe.log",
    wildcard_constraints:
        tokenizer=one_of(PLAN.caption_bpe_of),
    params:
        py=PY,
        vocab=lambda w: PLAN.experiments[PLAN.caption_bpe_of[w.tokenizer]]["transformer"]["model"]["cond"]["vocab_size"],
    shell:
        "{params.py:q} -m drr.text.train_bpe --codes {input.codes:q} --vocab-size {params.vocab:q}"
        " --out {output:q} > {log:q} 2>&1"


_TRAIN_SHELL = (
    "{params.py:q} -m drr.transformer.train --config {params.config:q} --tokenizer {input.tokenizer:q}"
    " --codes {input.codes:q} {params.text:q} --out {output:q} > {log:q} 2>&1")


rule train_transformer:
    input:
        unpack(transformer_inputs),
    output:
        "results/transformers/{experiment}/checkpoint.pt",
    log:
        "results/transformers/{experiment}/train.log",
    benchmark:
        "results/transformers/{experiment}/train.benchmark.tsv"
    wildcard_constraints:
        experiment=one_of(PLAN.trained_inprocess),
    params:
        py=PY,
        config=chosen_config("train"),
        hash=experiment_hash("transformer"),
        text=option("--text-tokenizer", "text"),
    resources:
        gpu=1,
    shell:
        _TRAIN_SHELL


rule submit_transformer:
    input:
        unpack(transformer_inputs),
    output:
        "results/transformers/{experiment}/checkpoint.pt",
    log:
        "results/transformers/{experiment}/submit.log",
    wildcard_constraints:
        experiment=one_of(PLAN.trained_submitted),
    params:
        py=PY,
        config=chosen_config("train"),
        hash=experiment_hash("transformer"),
        text=option("--text-tokenizer", "text"),
    shell:
        _TRAIN_SHELL


localrules:
    submit_transformer,


rule import_transformer:
    input:
        tokenizer=lambda w: PLAN.transformer_inputs(w.experiment)["tokenizer"],
        official=lambda w: PLAN.official_input(w.experiment, "transformer"),
    output:
        "results/transformers/{experiment}/checkpoint.pt",
    log:
        "results/transformers/{experiment}/import.log",
    wildcard_constraints:
        experiment=one_of(PLAN.imported_transformers),
    params:
        py=PY,
        config=experiment_config,
        hash=experiment_hash("transformer"),
    shell:
        "{params.py:q} -m drr.transformer.import_official --config {params.config:q}"
        " --tokenizer {input.tokenizer:q} --out {output:q} > {log:q} 2>&1"


rule report_transformer:
    input:
        unpack(transformer_inputs),
        transformer="results/transformers/{experiment}/checkpoint.pt",
        eval_codes=lambda w: PLAN.eval_codes(w.experiment),
    output:
        json="results/transformers/{experiment}/report.json",
        markdown="reports/transformers/{experiment}.md",
        png="reports/transformers/{experiment}.png",
    log:
        "results/transformers/{experiment}/report.log",
    params:
        py=PY,
        config=chosen_config("train"),
        hash=experiment_hash("transformer_report"),
        text=option("--text-tokenizer", "text"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.transformer.report --config {params.config:q} --transformer {input.transformer:q}"
        " --codes {input.eval_codes:q} {params.text:q} --json {output.json:q}"
        " --markdown {output.markdown:q} --png {output.png:q} > {log:q} 2>&1"
