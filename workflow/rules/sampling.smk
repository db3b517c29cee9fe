# Sampling stage (paper §3.3, Algorithm 2): Draft-and-Revise samples of every experiment and
# variant ("default", an ablation variant of configs/studies.yaml such as t_draft=16, or a named
# variant), made in shards that run as parallel (GPU) jobs and are merged into one samples.npz for
# the metrics stage; the speed measurement of Table 4 and the FLOPs per sample; and the inpainting figure of
# App. D.3.


rule generate_shard:
    input:
        unpack(sampling_inputs),
    output:
        "results/samples/{experiment}/{variant}/shards/shard-{shard}.npz",
    log:
        "results/samples/{experiment}/{variant}/shards/shard-{shard}.log",
    params:
        py=PY,
        configs=variant_args,
        hash=variant_hash("samples"),
        text=text_condition_args,
        out=lambda w: f"results/samples/{w.experiment}/{w.variant}",
        shard=lambda w: int(w.shard),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.sampling.generate {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} {params.text:q}"
        " --out {params.out:q} --shard {params.shard:q} > {log:q} 2>&1"


rule merge_samples:
    input:
        unpack(sampling_inputs),
        shards=lambda w: _plan("shard_files", w.experiment, w.variant),
    output:
        npz="results/samples/{experiment}/{variant}/samples.npz",
        json="results/samples/{experiment}/{variant}/samples.json",
        grid="reports/samples/{experiment}/{variant}.png",
    log:
        "results/samples/{experiment}/{variant}/merge.log",
    params:
        py=PY,
        configs=variant_args,
        hash=variant_hash("merge"),
        text=text_condition_args,
        out=lambda w: f"results/samples/{w.experiment}/{w.variant}",
    shell:
        "({params.py:q} -m drr.sampling.generate {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} {params.text:q} --out {params.out:q} --merge-only"
        " && cp {params.out:q}/grid.png {output.grid:q}) > {log:q} 2>&1"


rule sampling_speed:
    input:
        unpack(sampling_inputs),
    output:
        "results/speed/{experiment}/{variant}.json",
    log:
        "results/speed/{experiment}/{variant}.log",
    params:
        py=PY,
        configs=variant_args,
        hash=variant_hash("speed"),
        text=text_condition_args,
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.sampling.speed {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} {params.text:q} --json {output:q} > {log:q} 2>&1"


# FLOPs per sample of a run's sampler (drr.sampling.flops), counted on the CPU for two samples: the
# cost that decides speed on a CPU, which the claims report gives where s/sample is no claim.
rule sampling_flops:
    input:
        unpack(sampling_inputs),
    output:
        "results/flops/{experiment}/{variant}.json",
    log:
        "results/flops/{experiment}/{variant}.log",
    params:
        py=PY,
        configs=variant_args,
        hash=variant_hash("speed"),
        text=text_condition_args,
    shell:
        "{params.py:q} -m drr.sampling.flops {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} {params.text:q} --json {output:q} > {log:q} 2>&1"


rule inpainting_figure:
    input:
        unpack(sampling_inputs),
        codes=lambda w: PLAN.eval_codes(w.experiment),
    output:
        "reports/figures/{experiment}/inpainting.png",
    log:
        "results/figures/{experiment}/inpainting.log",
    params:
        py=PY,
        config=chosen_config("sample"),
        hash=experiment_hash("pictures"),
        text=option("--text-tokenizer", "text"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.sampling.inpaint --config {params.config:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} --codes {input.codes:q} {params.text:q} --out {output:q}"
        " > {log:q} 2>&1"
