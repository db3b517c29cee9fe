"""The paper's tables and figures, regenerated from the workflow's results (reports/).

    tables    Markdown tables 1-4, A2, A3: our numbers | published | Δ, sample count, reference
    figures   Figures 4(a-c) and A1 as PNG + PDF, published points beside ours
    pictures  Figure 5 (draft -> revised for M = 1..5) and the class / caption grids of App. D
    index     reports/index.md, linking everything

What each report shows is data (configs/studies.yaml: its experiment and cells; configs/published.yaml:
the paper's numbers with their source); cells are named by drr.workflow.studies, the same code the workflow
uses to build them, so a report reads exactly the files made for it.
"""
