"""drr: Draft-and-Revise with Contextual RQ-Transformer, reproduced as a workflow.

Stages (one subpackage each, each with a thin ``python -m`` entry point):

    drr.data        datasets: Fashion-MNIST (embedded default), ImageNet, image-caption sets
    drr.tokenizer   RQ-VAE (paper §3.1): model, training, official-checkpoint import, report
    drr.codes       code maps of a dataset in Parquet, and a Dataset to read them back

Shared plumbing: drr.core.config (YAML configs, validation, hashing), drr.core.provenance (atomic writes,
provenance records), drr.core.progress (progress lines with time left).
"""

__version__ = "0.1.0"
