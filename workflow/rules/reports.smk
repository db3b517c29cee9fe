# Reports stage: the paper's tables and figures from the cells' metrics (drr/reports). What each
# report shows is data: configs/studies.yaml names its experiment (the suite's `ablation` or `vq`
# experiment, or all of them) and its cells; configs/published.yaml holds the paper's numbers.
# Each cell is its own target (results/metrics/<experiment>/<cell>.parquet), so a report rebuilds
# only the cells that changed, and a cell changes only sampling: no model is retrained.
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
        suite=config["suite"],
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.tables --suite {params.suite} --report {wildcards.report}"
        " --out {output} > {log} 2>&1"


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
        suite=config["suite"],
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.figures --suite {params.suite} --figure {wildcards.report}"
        " --out {output.png} > {log} 2>&1"


rule figure5:
    input:
        unpack(lambda w: sampling_inputs(SimpleNamespace(experiment=ABLATION))),
    output:
        png=report("reports/fig5.png", category="Figures", caption="../report/figure.rst"),
        pdf="reports/fig5.pdf",
        json="reports/fig5.json",
    log:
        "results/reports/fig5.log",
    params:
        py=PY,
        config=experiment_file(ABLATION),
        t_draft=" ".join(str(t) for t in FIG5["t_draft"]),
        m=FIG5["revise_iterations"],
        n=FIG5["samples"],
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.pictures progression --config {params.config} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} --t-draft {params.t_draft} --revise-iterations {params.m}"
        " --samples {params.n} --out {output.png} > {log} 2>&1"


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
        config=experiment_config,
        args=grid_args,
    resources:
        gpu=1,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.pictures conditions --config {params.config} --tokenizer {input.tokenizer}"
        " --transformer {input.transformer} {params.args} --out {output.png} > {log} 2>&1"


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
        ar=one_of(list(AR_PARTNER)),
        contextual=one_of(sorted(set(AR_PARTNER.values()))),
    params:
        py=PY,
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.pictures compare --images {input.contextual} {input.ar}"
        " --labels 'Contextual RQ-Transformer ({wildcards.contextual})' 'AR RQ-Transformer ({wildcards.ar})'"
        " --out {output.png} > {log} 2>&1"


rule report_index:
    input:
        tables=[f"reports/{t}.md" for t in report_targets()[0]],
        figures=[f"reports/{f}.png" for f in report_targets()[1]],
        pictures=picture_targets(),
    output:
        "reports/index.md",
    log:
        "results/reports/index.log",
    params:
        py=PY,
        suite=config["suite"],
        tables=" ".join(report_targets()[0]),
        figures=" ".join(report_targets()[1]),
        missing=" ".join(f"'{f}={missing_reason(f)}'" for f in TABLES + FIGURES if not report_available(f)),
    conda:
        "../../environment.yml"
    shell:
        "{params.py} -m drr.reports.index --suite {params.suite} --out {output} --tables {params.tables}"
        " --figures {params.figures} --pictures {input.pictures} --missing {params.missing} > {log} 2>&1"
