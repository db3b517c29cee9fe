# Tokenizer stage (paper §3.1): train an RQ-VAE, or import the official checkpoint as the paper
# does, then report its reconstructions.


rule train_tokenizer:
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/train.log",
    benchmark:
        "results/tokenizers/{tokenizer}/train.benchmark.tsv"
    wildcard_constraints:
        tokenizer=one_of(TRAINED),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.tokenizer.train --config {params.config} --out {output} > {log} 2>&1"


rule import_tokenizer:
    input:
        official=lambda w: EXPERIMENTS[TOKENIZER_OF[w.tokenizer]]["tokenizer"]["checkpoint"],
    output:
        "results/tokenizers/{tokenizer}/checkpoint.pt",
    log:
        "results/tokenizers/{tokenizer}/import.log",
    wildcard_constraints:
        tokenizer=one_of(IMPORTED),
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.tokenizer.import_official --config {params.config} --out {output} > {log} 2>&1"


rule report_tokenizer:
    input:
        tokenizer="results/tokenizers/{tokenizer}/checkpoint.pt",
    output:
        json="results/tokenizers/{tokenizer}/report.json",
        markdown="reports/tokenizers/{tokenizer}.md",
        png="reports/tokenizers/{tokenizer}.png",
    log:
        "results/tokenizers/{tokenizer}/report.log",
    params:
        py=PY,
        config=tokenizer_config,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.tokenizer.report --config {params.config} --tokenizer {input.tokenizer}"
        " --json {output.json} --markdown {output.markdown} --png {output.png} > {log} 2>&1"
