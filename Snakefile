# drr: Draft-and-Revise with Contextual RQ-Transformer, as a workflow.
# Wiring only: configuration and validation in workflow/rules/common.smk, one .smk per stage.
#
#   snakemake --cores 2                       # the embedded default (suite tiny), everything
#   snakemake --cores 2 reports/table1.md     # one report and only what it needs
#   snakemake --profile slurm --config suite=paper reports/table1.md   # paper scale on SLURM
from snakemake.utils import min_version

min_version("9.0")


configfile: "configs/workflow.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/release.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/codes.smk"
include: "workflow/rules/transformer.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/reports.smk"
include: "workflow/rules/compute.smk"
include: "workflow/rules/claims.smk"


rule all:
    input:
        PLAN.all_targets(),
        "reports/index.md",
        CLAIMS_TARGETS,
    default_target: True
