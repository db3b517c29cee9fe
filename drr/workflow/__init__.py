"""The workflow's own code, used by the Snakefile and its rules, never by a stage's job.

    plan       which results a suite builds, from what (Plan), and each report's cells and inputs
    studies    the ablation studies as data: suites, variants, reports and their cells, published numbers
    claims     which runs the paper's claims read (the claims rule's inputs)
    report_spec  what each report shows, written for its job (python -m drr.workflow.report_spec)
    release    fetching an official release (python -m drr.workflow.release)
    jobenv     the environment every job starts with
    runlog     job times read from Snakemake's logs (benchmarks/suite_budget.py)
"""
