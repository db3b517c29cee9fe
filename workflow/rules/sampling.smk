# Sampling stage (paper §3.3, Algorithm 2): Draft-and-Revise samples of every experiment and
# variant ("default", or an ablation file configs/ablations/<variant>.yaml), made in shards that
# run as parallel (GPU) jobs and are merged into one samples.npz for the metrics stage; the
# speed measurement of Table 4; and the inpainting figure of App. D.3.


rule generate_shard:
    input:
        unpack(sampling_inputs),
    output:
        "results/samples/{experiment}/{variant}/shards/shard-{shard}.npz",
    log:
        "results/samples/{experiment}/{variant}/shards/shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{5}",
    params:
        py=PY,
        configs=variant_configs,
        hash=samples_hash,
        text=text_condition_args,
        shard=lambda w: int(w.shard),
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.sampling.generate {params.configs} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} {params.text}"
        " --out results/samples/{wildcards.experiment}/{wildcards.variant} --shard {params.shard}"
        " > {log} 2>&1"


rule merge_samples:
    input:
        unpack(sampling_inputs),
        shards=shard_files,
    output:
        npz="results/samples/{experiment}/{variant}/samples.npz",
        json="results/samples/{experiment}/{variant}/samples.json",
        grid="reports/samples/{experiment}/{variant}.png",
    log:
        "results/samples/{experiment}/{variant}/merge.log",
    params:
        py=PY,
        configs=variant_configs,
        text=text_condition_args,
    conda:
        "../../environment.yml"
    shell:
        "({params.py} -m drr.sampling.generate {params.configs} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} {params.text}"
        " --out results/samples/{wildcards.experiment}/{wildcards.variant} --merge-only"
        " && cp results/samples/{wildcards.experiment}/{wildcards.variant}/grid.png {output.grid})"
        " > {log} 2>&1"


rule sampling_speed:
    input:
        unpack(sampling_inputs),
    output:
        "results/speed/{experiment}/{variant}.json",
    log:
        "results/speed/{experiment}/{variant}.log",
    params:
        py=PY,
        configs=variant_configs,
        text=text_condition_args,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.sampling.speed {params.configs} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} {params.text} --json {output} > {log} 2>&1"


rule inpainting_figure:
    input:
        unpack(sampling_inputs),
        codes=lambda w: codes_dir(EXPERIMENTS[w.experiment], EXPERIMENTS[w.experiment]["data"]["eval_split"]),
    output:
        "reports/figures/{experiment}/inpainting.png",
    log:
        "results/figures/{experiment}/inpainting.log",
    params:
        py=PY,
        config=experiment_config,
        text=lambda w, input: f"--text-tokenizer {input.text}" if "text" in input.keys() else "",
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.sampling.inpaint --config {params.config} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} --codes {input.codes} {params.text} --out {output} > {log} 2>&1"
