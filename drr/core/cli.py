"""Argument handling shared by the `python -m drr...` entry points: --config layers and --set
overrides, resolved by drr.core.config (errors: one line naming the file or --set, and the key),
and the training commands' refusal of a config that imports what they would train."""

from __future__ import annotations

import argparse

from drr.core.config import load_config, override_from_dotted
from drr.core.errors import DrrError


def config_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", action="append", required=True, metavar="YAML",
                   help="experiment config (and ablation overrides, in order) on top of configs/base.yaml; "
                        "a file's `extends:` is applied before it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set tokenizer.train.steps=10 (the value read as YAML, "
                        "as strictly as a config file: no tags, anchors or duplicate keys)")
    return p


def resolve(args) -> dict:
    layers = list(args.config)
    if args.set:
        layers.append(override_from_dotted(args.set))
    return load_config(*layers)


def refuse_imported(cfg: dict, stage: str, source) -> None:
    """Refuse to train `stage` ('tokenizer' or 'transformer') whose config imports an official
    checkpoint (`<stage>.checkpoint` set), naming `source` (the config file that says so)."""
    if cfg[stage]["checkpoint"] is not None:
        raise DrrError(f"{source}: key '{stage}.checkpoint' is set, so this {stage} is imported, not "
                       f"trained: use python -m drr.{stage}.import_official")
