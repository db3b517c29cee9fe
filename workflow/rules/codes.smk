# Code maps: every split a model trains or is evaluated on, encoded once per tokenizer into
# Parquet shards (drr.codes.store).


rule encode_codes:
    input:
        tokenizer="results/tokenizers/{tokenizer}/checkpoint.pt",
    output:
        directory("results/codes/{tokenizer}/{dataset}/{split}"),
    log:
        "results/codes/{tokenizer}/{dataset}/{split}.log",
    benchmark:
        "results/codes/{tokenizer}/{dataset}/{split}.benchmark.tsv"
    params:
        py=PY,
        config=tokenizer_config,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.codes.encode --config {params.config} --tokenizer {input.tokenizer}"
        " --split {wildcards.split} --out {output} > {log} 2>&1"
