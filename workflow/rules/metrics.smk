# Metrics stage (paper §4): network weights placed once in metrics.weights_dir by a local rule
# (compute nodes often have no internet; no job downloads), reference statistics of each
# experiment's data (cached by content under results/cache/reference and shared), and one row per
# (experiment, variant, phase) with FID, IS, KID, precision/recall and CLIP score.


def weights_manifest(experiment):
    return f"{EXPERIMENTS[experiment]['metrics']['weights_dir']}/manifest.json"


WEIGHTS_DIRS = sorted({cfg["metrics"]["weights_dir"] for cfg in EXPERIMENTS.values()})
WEIGHTS_CONFIG = {d: next(n for n in sorted(EXPERIMENTS) if EXPERIMENTS[n]["metrics"]["weights_dir"] == d)
                  for d in WEIGHTS_DIRS}


rule metrics_weights:
    output:
        "{weights_dir}/manifest.json",
    log:
        "{weights_dir}/weights.log",
    wildcard_constraints:
        weights_dir=one_of(WEIGHTS_DIRS),
    params:
        config=lambda w: experiment_file(WEIGHTS_CONFIG[w.weights_dir]),
    shell:
        "{PY} -m drr.metrics.weights --config {params.config} > {log} 2>&1"


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
        config=experiment_config,
    resources:
        gpu=1,
    shell:
        "{PY} -m drr.metrics.reference --config {params.config} --out {output}"
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
        configs=variant_configs,
    resources:
        gpu=1,
    shell:
        "{PY} -m drr.metrics.score {params.configs} --samples {input.samples}"
        " --reference {input.reference} --out {output} --phase all"
        " --experiment {wildcards.experiment} --variant {wildcards.variant} > {log} 2>&1"
