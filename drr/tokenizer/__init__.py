"""The RQ-VAE tokenizer (paper §3.1, App. A.1).

    drr.tokenizer.vqgan      VQGAN encoder and decoder
    drr.tokenizer.quantizer  residual quantization with EMA codebooks (eq. 1-3)
    drr.tokenizer.model      RQVAE and its config, RQVAEConfig
    drr.tokenizer.official   import/export of the official checkpoint layout
"""

from drr.tokenizer.model import OFFICIAL_CONFIGS, RQVAE, RQVAEConfig
from drr.tokenizer.official import load_official, save_official

__all__ = ["RQVAE", "RQVAEConfig", "OFFICIAL_CONFIGS", "load_official", "save_official"]
