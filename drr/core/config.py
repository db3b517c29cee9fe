"""Experiment configs: YAML layers on top of configs/base.yaml, validated, hashed, stored.

A config is resolved from layers: ``configs/base.yaml`` (every key, each with a comment), then the
files given, in order (an experiment file, then ablation overrides). A layer may only set keys that
the base defines; values are checked against ``workflow/schemas/experiment.schema.yaml`` after
every layer, so an error names the file and the key that caused it::

    configs/experiments/x.yaml: unknown key 'tokenizer.model.chh' (did you mean 'tokenizer.model.ch'?)
    configs/experiments/x.yaml: key 'tokenizer.train.steps': 'many' is not of type 'integer'
    configs/experiments/x.yaml: key 'sampling.guidance_scale': .nan is not a finite number

Every number must be finite: a JSON schema cannot refuse NaN (it fails no comparison, so it passes
every ``minimum``), so `validate` checks finiteness itself, for every number in the config.

The resolved config is a plain nested dict. It is written next to every result (`save_config`) and
stored in every checkpoint; `config_hash` identifies it in provenance records.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from drr.core.errors import DrrError
from drr.core.files import write_text

REPO = Path(__file__).resolve().parents[2]
# libyaml's safe loader where PyYAML has it (it does in the locked environment): the same documents,
# about 8x faster than the pure-Python one, which matters because every Snakemake job parses the
# plan (some 40 config files for the paper suite) before it runs.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BASE_CONFIG = REPO / "configs" / "base.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "experiment.schema.yaml"


def read_yaml(path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=SAFE_LOADER)
    except FileNotFoundError:
        raise DrrError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise DrrError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DrrError(f"{path}: top level must be a mapping of keys, not {type(data).__name__}")
    return data


@lru_cache(maxsize=1)
def _schema() -> dict:
    return read_yaml(SCHEMA)


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _flat_keys(v, prefix + k + ".")
    return keys


def _merge(into: dict, layer: dict, source: Path, prefix: str = "") -> None:
    """Merge `layer` into `into` in place; keys must already exist in `into`."""
    for key, value in layer.items():
        dotted = prefix + str(key)
        if key not in into:
            known = _flat_keys(into, prefix)
            close = difflib.get_close_matches(dotted, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DrrError(f"{source}: unknown key '{dotted}'{hint}")
        if isinstance(into[key], dict):
            if not isinstance(value, dict):
                raise DrrError(f"{source}: key '{dotted}' must be a mapping, got {value!r}")
            _merge(into[key], value, source, dotted + ".")
        else:
            into[key] = copy.deepcopy(value)


def _non_finite(node, key: str = "") -> tuple[str, float] | None:
    """The first (dotted key, value) in `node` that is a NaN or infinite float, or None."""
    if isinstance(node, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
    elif isinstance(node, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(node))
    else:
        return (key, node) if isinstance(node, float) and not math.isfinite(node) else None
    for k, v in items:
        found = _non_finite(v, k)
        if found:
            return found
    return None


def validate(cfg: dict, source) -> None:
    """Check a resolved config against the JSON schema, and that every number in it is finite;
    raise DrrError naming `source` and the key."""
    bad = _non_finite(cfg)
    if bad:
        text = yaml.safe_dump(bad[1]).splitlines()[0]  # .nan, .inf or -.inf, as YAML writes them
        raise DrrError(f"{source}: key '{bad[0]}': {text} is not a finite number")
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "<top level>"
        raise DrrError(f"{source}: key '{key}': {e.message}")


def load_config(*layers, base=BASE_CONFIG) -> dict:
    """Resolve a config: base, then each layer (a path, or a dict of overrides) in order."""
    cfg = read_yaml(base)
    validate(cfg, base)
    for layer in layers:
        if isinstance(layer, dict):
            source, data = "--set", layer
        else:
            source, data = Path(layer), read_yaml(layer)
        _merge(cfg, data, source)
        validate(cfg, source)
    return cfg


def config_hash(cfg: dict) -> str:
    """16 hex digits identifying a resolved config (sorted-key JSON, sha256)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def section_hash(cfg: dict, *sections: str) -> str:
    """Hash of only some top-level sections (e.g. what a tokenizer depends on)."""
    return config_hash({s: cfg[s] for s in sections})


def dump_config(cfg: dict) -> str:
    head = f"# resolved drr config, hash {config_hash(cfg)}\n"
    return head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path) -> None:
    """Write the resolved config (atomically) with its hash in a header comment."""
    write_text(path, dump_config(cfg))


def override_from_dotted(pairs: list[str]) -> dict:
    """Turn ['a.b=1', 'c=x'] (values parsed as YAML) into a nested override dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise DrrError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out
