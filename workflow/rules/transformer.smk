# Transformer stage (paper §3.2): the caption tokenizer of text-conditional experiments, then the
# Contextual RQ-Transformer of each experiment, trained on its tokenizer's code maps, and a report.
#
# Training runs where transformer.launch.executor says: `inprocess` experiments are ordinary
# (GPU) jobs; `slurm`/`local` experiments submit themselves through submitit (a checkpointable,
# self-requeueing SLURM job for the paper configs), so their rule runs on the submitting host and
# waits for the job.


rule train_text_tokenizer:
    input:
        codes=lambda w: codes_dir(EXPERIMENTS[TEXT_TOKENIZER_OF[w.tokenizer]],
                                  EXPERIMENTS[TEXT_TOKENIZER_OF[w.tokenizer]]["data"]["train_split"]),
    output:
        "results/text/{tokenizer}/bpe.json",
    log:
        "results/text/{tokenizer}/bpe.log",
    wildcard_constraints:
        tokenizer=one_of(sorted(TEXT_TOKENIZER_OF)),
    params:
        py=PY,
        vocab=lambda w: EXPERIMENTS[TEXT_TOKENIZER_OF[w.tokenizer]]["transformer"]["model"]["cond"]["vocab_size"],
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.text.train_bpe --codes {input.codes} --vocab-size {params.vocab}"
        " --out {output} > {log} 2>&1"


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
        experiment=one_of(TRAINED_INPROCESS),
    params:
        py=PY,
        config=experiment_config,
        hash=transformer_hash,
        text=text_tokenizer_arg,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
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
        experiment=one_of(TRAINED_SUBMITTED),
    params:
        py=PY,
        config=experiment_config,
        hash=transformer_hash,
        text=text_tokenizer_arg,
    conda:
        "../../environment.yml"
    shell:
        _TRAIN_SHELL


localrules:
    submit_transformer,


rule import_transformer:
    input:
        tokenizer=lambda w: f"{tokenizer_dir(EXPERIMENTS[w.experiment])}/checkpoint.pt",
        official=lambda w: EXPERIMENTS[w.experiment]["transformer"]["checkpoint"],
    output:
        "results/transformers/{experiment}/checkpoint.pt",
    log:
        "results/transformers/{experiment}/import.log",
    wildcard_constraints:
        experiment=one_of(IMPORTED_TRANSFORMERS),
    params:
        py=PY,
        config=experiment_config,
        hash=transformer_hash,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.transformer.import_official --config {params.config}"
        " --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"


rule report_transformer:
    input:
        unpack(transformer_inputs),
        transformer="results/transformers/{experiment}/checkpoint.pt",
        eval_codes=lambda w: codes_dir(EXPERIMENTS[w.experiment],
                                       EXPERIMENTS[w.experiment]["data"]["eval_split"]),
    output:
        json="results/transformers/{experiment}/report.json",
        markdown="reports/transformers/{experiment}.md",
        png="reports/transformers/{experiment}.png",
    log:
        "results/transformers/{experiment}/report.log",
    params:
        py=PY,
        config=experiment_config,
        text=text_tokenizer_arg,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.transformer.report --config {params.config} --transformer {input.transformer}"
        " --codes {input.eval_codes} {params.text} --json {output.json}"
        " --markdown {output.markdown} --png {output.png} > {log} 2>&1"
