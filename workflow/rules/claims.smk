# Claims stage: the paper's claims (configs/claims.yaml) against the suite's results, one verdict
# each, computed by drr.reports.claims under the protocol of docs/small-suite.md. Its inputs are the
# claims' spec (rule report_spec: each claim with the runs it compares, resolved by the plan), the
# metrics rows of every run the claims read (cells of the studies.yaml reports they name, the
# default runs of the ablation experiment and its AR baseline for every training seed, their plain
# runs), the speed files and FLOPs counts of the s/sample claim, and the evidence: the transformer
# reports of the models and the records of the workflow's choices (rule select_setting).
# drr.workflow.claims.claims_inputs asks the plan, so the rule and the spec name the same files.
#
# In rule all only for suite `small`, the suite whose protocol the claims were written for (1,000
# samples per ablation variant, 5,000 per default run, intervals fixed in advance). On `tiny` (100
# samples per ablation variant) the intervals are too wide to say anything, and `paper` is a cluster run whose claims
# target is asked for by name: snakemake reports/claims.md --config suite=paper.
# (The input function claims_inputs is in common.smk.)
CLAIMS_IN_ALL = PLAN.suite_name == "small"
CLAIMS_TARGETS = ["reports/claims.md"] if CLAIMS_IN_ALL else []


rule claims:
    input:
        unpack(claims_inputs),
    output:
        "reports/claims.md",
    log:
        "results/reports/claims.log",
    params:
        py=PY,
        speed=lambda w, input: ["--speed", *input.speed] if input.speed else [],
        evidence=lambda w, input: [a for k in ("flops", "models", "selections") if getattr(input, k)
                                   for a in (f"--{k}", *getattr(input, k))],
    shell:
        "{params.py:q} -m drr.reports.claims --spec {input.spec:q} --metrics {input.metrics:q} {params.speed:q}"
        " {params.evidence:q} --out {output:q} > {log:q} 2>&1"
