"""Import an official autoregressive RQ-Transformer checkpoint (the paper's baseline) into drr's
transformer format, for sampling, speed and metrics like a model trained here.

    python -m drr.transformer.import_official --config AR_EXPERIMENT.yaml \
        --tokenizer results/tokenizers/in256-rqvae-8x8x4/checkpoint.pt \
        --out results/transformers/AR_EXPERIMENT/checkpoint.pt

The config must have `transformer.model.kind: ar`, the official sizes (n_spatial, n_depth, d_model,
head_dim 64, cond, code shape, K, n_z) and `transformer.checkpoint` naming the official file,
``{'state_dict': ...}`` with exactly the official key names and shapes (see
../shared/reference/official-checkpoint-keys/*-rqtransformer-*.txt); a missing, extra or
mis-shaped key, or a tensor that holds NaN or inf, is an error that names it (a file from an
official release, `transformer.release`: its release.json is recorded in the provenance). The
tokenizer is the drr checkpoint of the official RQ-VAE (drr.tokenizer.import_official); its
codebook becomes the code embeddings and its sha256 is recorded, as for a trained transformer.
Writes config.yaml next to --out and --out itself (atomically), with 'null_condition': false (no
classifier-free guidance: sampling.ar.guidance_scale must stay null).
"""

from __future__ import annotations

import sys
from pathlib import Path

from drr.core.cli import config_parser, resolve
from drr.core.config import save_config
from drr.core.errors import DrrError, user_errors
from drr.core.files import sha256_file


def import_official(cfg: dict, tokenizer: Path, out: Path) -> Path:
    from drr.core.releases import read_record
    from drr.tokenizer.io import load_tokenizer, shared_code_embeddings
    from drr.transformer.io import save_transformer
    from drr.transformer.model import TransformerConfig
    from drr.transformer.official import load_official

    src = cfg["transformer"]["checkpoint"]
    if src is None:
        raise DrrError("key 'transformer.checkpoint' is null: nothing to import")
    if cfg["transformer"]["model"]["kind"] != "ar":
        raise DrrError(f"transformer.model.kind: {cfg['transformer']['model']['kind']!r}; the "
                       f"official RQ-Transformer (key 'transformer.checkpoint') is an 'ar' model")
    if not Path(src).exists():
        raise DrrError(f"{src}: official RQ-Transformer checkpoint not found (key "
                       "'transformer.checkpoint'); download it from the rq-vae-transformer release "
                       "and set the path")
    release = read_record(cfg, "transformer")
    tok, _, tok_sha = load_tokenizer(tokenizer)
    model = load_official(src, TransformerConfig.from_experiment(cfg),
                          shared_code_embeddings(tok, tokenizer))
    del tok
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out.parent / "config.yaml")
    save_transformer(model, cfg, out, tok_sha, imported_from=str(Path(src).resolve()),
                     imported_sha256=sha256_file(src), release=release,
                     parameters=sum(p.numel() for p in model.parameters()))
    print(f"imported {src} -> {out}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--out", required=True, type=Path, help="transformer checkpoint to write")
    args = p.parse_args(argv)
    with user_errors():
        import_official(resolve(args), args.tokenizer, args.out)


if __name__ == "__main__":
    main()
