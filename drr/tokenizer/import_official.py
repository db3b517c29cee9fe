"""Import the official pretrained RQ-VAE checkpoint (the paper uses it, App. A.1) into drr's format.

    python -m drr.tokenizer.import_official --config configs/experiments/in256-crq-821m.yaml \
        --out results/tokenizers/in256-rqvae-8x8x4/checkpoint.pt

The file named by `tokenizer.checkpoint` must be ``{'state_dict': ...}`` with exactly the official
key names and shapes (see ../shared/reference/official-checkpoint-keys/in256-rqvae-8x8x4.txt); a
missing, extra or mis-shaped key, or a tensor that holds NaN or inf, is an error that names it.
When it comes from an official release (`tokenizer.release`, fetched by python -m
drr.workflow.release), the release's release.json is recorded in the checkpoint's provenance.
"""

from __future__ import annotations

import sys
from pathlib import Path

from drr.core.cli import config_parser, resolve
from drr.core.config import save_config
from drr.core.errors import DrrError, user_errors
from drr.core.files import sha256_file


def import_official(cfg: dict, out: Path) -> Path:
    from drr.core.releases import read_record
    from drr.tokenizer.io import check_finite, save_tokenizer
    from drr.tokenizer.model import RQVAEConfig
    from drr.tokenizer.official import load_official

    src = cfg["tokenizer"]["checkpoint"]
    if src is None:
        raise DrrError("key 'tokenizer.checkpoint' is null: nothing to import")
    if not Path(src).exists():
        raise DrrError(f"{src}: official RQ-VAE checkpoint not found (key 'tokenizer.checkpoint'); "
                       "download it from the rq-vae-transformer release and set the path")
    release = read_record(cfg, "tokenizer")
    model = load_official(src, RQVAEConfig(**cfg["tokenizer"]["model"]))
    check_finite(model.state_dict().items(), src)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out.parent / "config.yaml")
    save_tokenizer(model, cfg, out, imported_from=str(Path(src).resolve()),
                   imported_sha256=sha256_file(src), release=release)
    print(f"imported {src} -> {out}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    with user_errors():
        import_official(resolve(args), args.out)


if __name__ == "__main__":
    main()
