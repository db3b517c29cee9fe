# Tokenizer stage (paper §3.1): train an RQ-VAE, or import the official checkpoint as the paper
# does, then report its reconstructions.


rule train_tokenizer:
    input:
        data=tokenizer_data("train_split"),
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/train.log",
    benchmark:
        "results/tokenizers/{tokenizer}/train.benchmark.tsv"
    wildcard_constraints:
        tokenizer=one_of(PLAN.trained_tokenizers),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("tokenizer"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.tokenizer.train --config {params.config:q} --out {output:q} > {log:q} 2>&1"


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
