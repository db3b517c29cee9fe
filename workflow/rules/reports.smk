# Reports stage: the paper's tables and figures from the cells' metrics (drr/reports). What each
# report shows is data: configs/studies.yaml names its experiment (the suite's `ablation` or `vq`
# experiment, or all of them), its cells and its layout; configs/published.yaml holds the paper's
# numbers. The plan resolves them once into the report's spec (rule report_spec:
# results/reports/<report>.spec.json), and a report program reads only its spec and the files its
# rule declares (--metrics, --speed): no config, no plan.
# Each cell's variant is its own target (results/metrics/<experiment>/<variant>.parquet), so a report
# rebuilds only the variants that changed, and a variant changes only sampling: no model is retrained.
TABLES, FIGURES = PLAN.report_names("table"), PLAN.report_names("figure")
ABLATION = PLAN.suite["ablation"]
FIG5 = PLAN.studies.pictures["fig5"]


# A report's spec (drr.workflow.report_spec): what it shows, as JSON, from the plan. Its `hash` is
# the spec's own hash, so an edit of configs/studies.yaml, published.yaml or claims.yaml reruns the
# specs it changes and, through them, those reports only.
rule report_spec:
    input:
        unpack(spec_inputs),
    output:
        "results/reports/{report}.spec.json",
    log:
        "results/reports/{report}.spec.log",
    wildcard_constraints:
        report=one_of(drr.workflow.report_spec.spec_names(PLAN)),
    params:
        py=PY,
        suite=SUITE,
        hash=spec_hash,
    shell:
        "{params.py:q} -m drr.workflow.report_spec --suite {params.suite:q} --report {wildcards.report:q}"
        " --out {output:q} > {log:q} 2>&1"


localrules:
    report_spec,


rule report_table:
    input:
        unpack(report_inputs),
    output:
        "reports/{report}.md",
    log:
        "results/reports/{report}.log",
    wildcard_constraints:
        report=one_of(TABLES),
    params:
        py=PY,
    shell:
        "{params.py:q} -m drr.reports.tables --spec {input.spec:q}"
        " --metrics {input.metrics:q} --speed {input.speed:q} --out {output:q} > {log:q} 2>&1"


rule report_figure:
    input:
        unpack(report_inputs),
    output:
        png=report("reports/{report}.png", category="Figures", caption="../report/figure.rst"),
        pdf="reports/{report}.pdf",
    log:
        "results/reports/{report}.log",
    wildcard_constraints:
        report=one_of(FIGURES),
    params:
        py=PY,
    shell:
        "{params.py:q} -m drr.reports.figures --spec {input.spec:q}"
        " --metrics {input.metrics:q} --out {output.png:q} > {log:q} 2>&1"


rule figure5:
    input:
        unpack(lambda w: PLAN.sampling_inputs(ABLATION)),
    output:
        png=report("reports/fig5.png", category="Figures", caption="../report/figure.rst"),
        pdf="reports/fig5.pdf",
        json="reports/fig5.json",
    log:
        "results/reports/fig5.log",
    params:
        py=PY,
        config=PLAN.config_value(ABLATION, "sample") if ABLATION else None,
        hash=lambda w: drr.core.config.config_hash([FIG5, PLAN.hash("pictures", ABLATION)]),
        t_draft=[str(t) for t in FIG5["t_draft"]],
        m=FIG5["revise_iterations"],
        n=FIG5["samples"],
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.reports.pictures progression --config {params.config:q}"
        " --tokenizer {input.tokenizer:q} --transformer {input.transformer:q} --t-draft {params.t_draft:q}"
        " --revise-iterations {params.m:q} --samples {params.n:q} --out {output.png:q} > {log:q} 2>&1"


rule condition_grid:
    input:
        unpack(sampling_inputs),
    output:
        png=report("reports/figures/{experiment}/{grid}.png", category="Samples",
                   caption="../report/figure.rst"),
        pdf="reports/figures/{experiment}/{grid}.pdf",
        json="reports/figures/{experiment}/{grid}.json",
    log:
        "results/figures/{experiment}/{grid}.log",
    wildcard_constraints:
        grid="classes|captions",
    params:
        py=PY,
        config=chosen_config("sample"),
        hash=lambda w: drr.core.config.config_hash([PLAN.studies.pictures, PLAN.hash("pictures", w.experiment)]),
        args=grid_args,
    resources:
        gpu=1,
    shell:
        "{params.py:q} -m drr.reports.pictures conditions --config {params.config:q}"
        " --tokenizer {input.tokenizer:q} --transformer {input.transformer:q} {params.args:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule inpainting_comparison:
    input:
        ar="reports/figures/{ar}/inpainting.png",
        contextual="reports/figures/{contextual}/inpainting.png",
    output:
        png=report("reports/figures/{ar}/inpainting-vs-{contextual}.png", category="Figures",
                   caption="../report/figure.rst"),
        pdf="reports/figures/{ar}/inpainting-vs-{contextual}.pdf",
    log:
        "results/figures/{ar}/inpainting-vs-{contextual}.log",
    wildcard_constraints:
        ar=one_of(PLAN.ar_partner),
        contextual=one_of(PLAN.ar_partner.values()),
    params:
        py=PY,
        labels=lambda w: [f"Contextual RQ-Transformer ({w.contextual})", f"AR RQ-Transformer ({w.ar})"],
    shell:
        "{params.py:q} -m drr.reports.pictures compare --images {input.contextual:q} {input.ar:q}"
        " --labels {params.labels:q} --out {output.png:q} > {log:q} 2>&1"


rule report_index:
    input:
        spec=drr.workflow.report_spec.spec_file("index"),
        tables=[f"reports/{t}.md" for t in TABLES],
        figures=[f"reports/{f}.png" for f in FIGURES],
        pictures=PLAN.picture_targets(),
        compute=PLAN.compute_targets(),  # the FID-against-compute figure, where the suite makes it
    output:
        "reports/index.md",
    log:
        "results/reports/index.log",
    params:
        py=PY,
    shell:
        "{params.py:q} -m drr.reports.index --spec {input.spec:q} --out {output:q} > {log:q} 2>&1"
