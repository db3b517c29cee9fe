# Metrics stage (paper §4): network weights placed once in metrics.weights_dir by a local rule
# (compute nodes often have no internet; no job downloads), reference statistics of each
# experiment's data (cached by content under results/cache/reference and shared), and one row per
# (experiment, variant, phase) with FID, IS, KID, precision/recall and CLIP score.


rule metrics_weights:
    output:
        "{weights_dir}/manifest.json",
    log:
        "{weights_dir}/weights.log",
    wildcard_constraints:
        weights_dir=one_of(WEIGHTS_DIRS),
    params:
        py=PY,
        config=lambda w: experiment_file(WEIGHTS_CONFIG[w.weights_dir]),
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.metrics.weights --config {params.config} > {log} 2>&1"


localrules:
    metrics_weights,


rule reference_stats:
    input:
        manifest=lambda w: weights_manifest(w.experiment),
    output:
        "results/reference/{experiment}.npz",
    log:
        "results/reference/{experiment}.log",
    params:
        py=PY,
        config=experiment_config,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.metrics.reference --config {params.config} --out {output}"
        " --cache-dir results/cache/reference > {log} 2>&1"


rule compute_metrics:
    input:
        manifest=lambda w: weights_manifest(w.experiment),
        samples="results/samples/{experiment}/{variant}/samples.npz",
        reference="results/reference/{experiment}.npz",
    output:
        "results/metrics/{experiment}/{variant}.parquet",
    log:
        "results/metrics/{experiment}/{variant}.log",
    params:
        py=PY,
        configs=variant_configs,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.metrics.score {params.configs} --samples {input.samples}"
        " --reference {input.reference} --out {output} --phase all --features-cache results/cache/features"
        " --experiment {wildcards.experiment} --variant {wildcards.variant} > {log} 2>&1"
