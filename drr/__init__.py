"""drr: Draft-and-Revise with Contextual RQ-Transformer, reproduced as a workflow.

Layers, top to bottom; a package imports only its own layer and those below it
(tests/test_layers.py):

    drr.reports      the paper's tables, figures, pictures and the claims' verdicts, from a spec
    drr.workflow     the plan of a suite, studies, report specs, release fetch, job environment
    drr.sampling     Draft-and-Revise (Algorithms 1-2) and AR sampling, generation, speed, inpainting
    drr.transformer  Contextual and AR RQ-Transformers (§3.2): model, training, likelihood, report
    drr.text         the caption BPE of text-conditional models
    drr.codes        code maps of a dataset in Parquet, and a Dataset to read them back
    drr.tokenizer    RQ-VAE (§3.1): model, training, official-checkpoint import, report
    drr.metrics      FID, KID, IS, precision/recall, CLIP score, intervals, reference statistics
    drr.data         datasets: Fashion-MNIST (embedded default), ImageNet, image-caption sets
    drr.core         errors, configs, atomic writes, provenance, stage keys, devices, locks,
                     checkpoints, training helpers, launch

Each stage has thin ``python -m drr.<package>.<command>`` entry points that the workflow's rules call.
"""

__version__ = "0.1.0"
