"""The paper's tables and figures, regenerated from the workflow's results (reports/).

    tables    Markdown tables 1-4, A2, A3: our numbers | published | Δ, sample count, reference
    figures   Figures 4(a-c) and A1 as PNG + PDF, published points beside ours
    pictures  Figure 5 (draft -> revised for M = 1..5) and the class / caption grids of App. D
    index     reports/index.md, linking everything
    claims    the paper's claims (configs/claims.yaml): one verdict each, reports/claims.md

What each report shows is data (configs/studies.yaml: its experiment and cells; configs/published.yaml:
the paper's numbers with their source), which the plan resolves into the report's spec
(results/reports/<report>.spec.json, drr.workflow.report_spec). The tables, figures, index and
claims read their spec and the metrics and speed files their rule gives them, nothing else; the
pictures are drawn from the models, with the experiment's config like any sampling job. No module
here imports drr.workflow.
"""
