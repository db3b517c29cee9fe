# Metrics stage (paper §4): network weights placed once in metrics.weights_dir by a local rule
# (compute nodes often have no internet; no job downloads), reference statistics (one file per
# distinct data + reference setting, shared by the experiments that have it, and cached by content
# under results/cache/reference), and one row per
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
        manifest=lambda w: weights_manifest(REFERENCE_EXPERIMENT[w.reference]),
    output:
        "results/reference/{reference}.npz",
    log:
        "results/reference/{reference}.log",
    wildcard_constraints:
        reference=one_of(sorted(REFERENCE_EXPERIMENT)),
    params:
        py=PY,
        config=lambda w: experiment_file(REFERENCE_EXPERIMENT[w.reference]),
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
        reference=lambda w: f"results/reference/{REFERENCE_OF[w.experiment]}.npz",
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
