"""Argument handling shared by the `python -m drr...` entry points."""

from __future__ import annotations

import argparse

from drr.core.config import load_config, override_from_dotted


def config_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", action="append", required=True, metavar="YAML",
                   help="experiment config (and ablation overrides, in order) on top of configs/base.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, e.g. --set tokenizer.train.steps=10 (value parsed as YAML)")
    return p


def resolve(args) -> dict:
    layers = list(args.config)
    if args.set:
        layers.append(override_from_dotted(args.set))
    return load_config(*layers)
