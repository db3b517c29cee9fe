# drr: Draft-and-Revise with Contextual RQ-Transformer, as a workflow.
# Wiring only: configuration and validation in workflow/rules/common.smk, one .smk per stage.
#
#   snakemake --cores 2                       # the embedded default (suite tiny), everything
#   snakemake --profile slurm --config suite=paper reports/...   # paper scale on SLURM
from snakemake.utils import min_version

min_version("9.0")


configfile: "configs/workflow.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/codes.smk"
include: "workflow/rules/transformer.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/metrics.smk"


rule all:
    input:
        all_targets(),
    default_target: True
