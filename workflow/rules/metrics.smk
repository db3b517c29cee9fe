# Metrics stage (paper §4): network weights placed once in metrics.weights_dir by a local rule
# (compute nodes often have no internet; no job downloads), reference statistics (one file per
# distinct `reference` stage config of drr.workflow.plan, shared by the experiments that have it, and cached
# by content under results/cache/reference), and one row per (experiment, variant, phase) with
# FID, IS, KID, precision/recall and CLIP score.


rule metrics_weights:
    output:
        "{weights_dir}/manifest.json",
    log:
        "{weights_dir}/weights.log",
    wildcard_constraints:
        weights_dir=one_of(PLAN.weights_dirs),
    params:
        py=PY,
        config=lambda w: PLAN.config_value(PLAN.weights_experiment[w.weights_dir]),
    shell:
        "{params.py:q} -m drr.metrics.weights --config {params.config:q} > {log:q} 2>&1"


localrules:
    metrics_weights,


rule reference_stats:
    input:
        manifest=lambda w: PLAN.weights_manifest(PLAN.reference_experiment[w.reference]),
        data=reference_data,
    output:
        "results/reference/{reference}.npz",
    log:
        "results/reference/{reference}.log",
    wildcard_constraints:
        reference=one_of(PLAN.reference_experiment),
    params:
        py=PY,
        config=lambda w: PLAN.config_value(PLAN.reference_experiment[w.reference]),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.metrics.reference --config {params.config:q} --out {output:q}"
        " --cache-dir results/cache/reference > {log:q} 2>&1"


rule compute_metrics:
    input:
        manifest=lambda w: PLAN.weights_manifest(w.experiment),
        samples="results/samples/{experiment}/{variant}/samples.npz",
        reference=lambda w: f"results/reference/{PLAN.reference_of[w.experiment]}.npz",
    output:
        "results/metrics/{experiment}/{variant}.parquet",
    log:
        "results/metrics/{experiment}/{variant}.log",
    params:
        py=PY,
        configs=variant_args,
        hash=variant_hash("metrics"),
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.metrics.score {params.configs:q} --samples {input.samples:q}"
        " --reference {input.reference:q} --out {output:q} --phase all --features-cache results/cache/features"
        " --experiment {wildcards.experiment:q} --variant {wildcards.variant:q} > {log:q} 2>&1"
