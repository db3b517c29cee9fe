# FID against training compute (docs/small-suite.md, protocol v6 §2 and §8: built after the timed
# run, not part of reports/claims.md): for each model of the suite that keeps weight snapshots
# (transformer.train.snapshot_every), seed 0, every snapshot and the final model are sampled at the
# experiment's settings with the `sample` choices (the guidance scale the selection stage chose:
# results/select/<experiment>/guidance.yaml, an input) and scored (rule fid_steps, drr.sampling.steps:
# resumable, features cached with the workflow's); rule fid_compute puts both models in one figure
# against training core-seconds and analytic FLOPs (drr.reports.fid_compute). A suite whose models
# keep no snapshots (tiny, paper) plans none of it: the wildcard matches nothing and the figure's
# input function says why.
COMPUTE = _plan("compute_experiments")


rule fid_steps:
    input:
        unpack(lambda w: _plan("steps_inputs", w.experiment)),
    output:
        json="results/steps/{experiment}.json",
        markdown="results/steps/{experiment}.md",
        png="results/steps/{experiment}.png",
    log:
        "results/steps/{experiment}.log",
    wildcard_constraints:
        experiment=one_of(COMPUTE),
    params:
        py=PY,
        configs=lambda w: PLAN.config_args(w.experiment, "sample"),
        hash=lambda w: _plan("steps_hash", w.experiment),
        samples=lambda w: PLAN.steps_samples(),
        out=lambda w: f"results/steps/{w.experiment}",
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.sampling.steps {params.configs:q} --tokenizer {input.tokenizer:q}"
        " --transformer {input.transformer:q} --reference {input.reference:q} --samples {params.samples:q}"
        " --out {params.out:q} --features-cache results/cache/features > {log:q} 2>&1"


rule fid_compute:
    input:
        unpack(lambda w: _plan("compute_inputs")),
    output:
        png=report("reports/fid_compute.png", category="Figures", caption="../report/figure.rst"),
        pdf="reports/fid_compute.pdf",
        markdown="reports/fid_compute.md",
    log:
        "results/reports/fid_compute.log",
    params:
        py=PY,
    shell:
        "{params.py:q} -m drr.reports.fid_compute --steps {input.steps:q}"
        " --transformers {input.transformers:q} --codes {input.codes:q} --out {output.png:q} > {log:q} 2>&1"
