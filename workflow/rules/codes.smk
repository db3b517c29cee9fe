# Code maps: every split a model trains or is evaluated on, encoded once per tokenizer into
# Parquet shards (drr.codes.store).


rule encode_codes:
    input:
        tokenizer="results/tokenizers/{tokenizer}/checkpoint.pt",
        data=codes_data,
    output:
        directory("results/codes/{tokenizer}/{dataset}/{split}"),
    log:
        "results/codes/{tokenizer}/{dataset}/{split}.log",
    benchmark:
        "results/codes/{tokenizer}/{dataset}/{split}.benchmark.tsv"
    params:
        py=PY,
        config=tokenizer_config,
        hash=tokenizer_hash("codes"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.codes.encode --config {params.config:q} --tokenizer {input.tokenizer:q}"
        " --split {wildcards.split:q} --out {output:q} > {log:q} 2>&1"
