"""The Contextual RQ-Transformer and the AR RQ-Transformer (paper §3.2; RQ-Transformer baseline).

    model            the contextual model (eq. 4-9), the mask schedule and losses (eq. 10-11)
    ar               the AR RQ-Transformer (raster order, key/value cache)
    build            the model a config names, and its parameter count
    train            training (python -m drr.transformer.train), in process or through submitit
    likelihood       held-out NLL of whole code maps by the chain rule (random orders / raster)
    report           training curve and held-out NLL report (python -m drr.transformer.report)
    io               drr's transformer checkpoint
    official         the official release's RQ-Transformer key map
    import_official  import of an official checkpoint (python -m drr.transformer.import_official)
"""
