"""Experiment configs: YAML layers on top of configs/base.yaml, validated, hashed, stored; and the
one YAML reader of the package.

A config is resolved from layers: ``configs/base.yaml`` (every key, each with a comment), then the
files given, in order (an experiment file, then ablation overrides). A layer may only set keys that
the base defines; values are checked against ``workflow/schemas/experiment.schema.yaml`` after
every layer, so an error names the file and the key that caused it::

    configs/experiments/x.yaml: unknown key 'tokenizer.model.chh' (did you mean 'tokenizer.model.ch'?)
    configs/experiments/x.yaml: key 'tokenizer.train.steps': 'many' is not of type 'integer'
    configs/experiments/x.yaml: key 'sampling.guidance_scale': .nan is not a finite number

A layer file may start from another: ``extends: ../shared/in256.yaml`` (a path relative to the
file) or ``extends: in256-crq-821m`` (an experiment of configs/experiments/). The file it names is
applied first, then the file itself; chains are followed, a cycle or a missing file is refused.

Every number must be finite: a JSON schema cannot refuse NaN (it fails no comparison, so it passes
every ``minimum``), so `validate` checks finiteness itself, for every number in the config. Sizes
are bounded before anything is planned: the ``limits`` section of configs/base.yaml caps sample
counts, sample shards and batch sizes (a layer may raise a limit). ``limits`` guards the input and
is not part of the resolved config, so no result depends on it.

The resolved config is a plain nested dict. It is written next to every result (`save_config`) and
stored in every checkpoint; `config_hash` identifies it in provenance records.

`read_yaml` is the package's one reader of YAML files (configs, studies, claims, published numbers,
saved configs, the schemas themselves): UTF-8 whatever the locale, a regular file of at most
`MAX_YAML_BYTES`, plain YAML only. A duplicate key, an anchor or alias (a few hundred bytes of
nested aliases expand to billions of nodes), a merge key or a tag outside YAML's plain types
(``!!python/object``...) is refused in one line naming the file and the line. `parse_yaml` reads
``--set`` values and the values in variant names the same way.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import pickle
import stat
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from drr.core.errors import DrrError
from drr.core.files import write_text

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO / "configs" / "base.yaml"
SCHEMAS = REPO / "workflow" / "schemas"
SCHEMA = SCHEMAS / "experiment.schema.yaml"
# A config is a page of settings; the largest shipped file is under 20 KB. The bound keeps a wrong
# path (a data file, a device) from being read into memory before the parser refuses it.
MAX_YAML_BYTES = 4 << 20
CACHED_BYTES = 256 << 10  # files up to this size are kept parsed (read_yaml), by their text
# The parser: libyaml's where PyYAML has it (it does in the locked environment), about 8x faster
# than the pure-Python one, which matters because every Snakemake job parses the plan (some 40
# config files for the paper suite) before it runs. The composer (events -> nodes) is PyYAML's
# Python one, so that anchors, aliases and duplicate keys can be refused with their line.
try:
    from yaml._yaml import CParser
    _PARSER: tuple = (CParser,)
except ImportError:  # PyYAML built without libyaml
    _PARSER = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)
# Explicit tags a file may carry: YAML's plain types (`!!str 08` keeps a string a string).
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """Valid YAML that drr does not accept: `text` (with its line) completes '<source>: '."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


class _StrictLoader(yaml.composer.Composer, *_PARSER, yaml.constructor.SafeConstructor,
                    yaml.resolver.Resolver):
    """PyYAML's safe loader, stricter: no anchors, aliases, merge keys, duplicate keys or tags
    beyond the plain types. Nodes carry `drr_path`, their dotted key path, for the messages."""

    def __init__(self, stream):
        _PARSER[0].__init__(self, stream)  # libyaml's parser, or the reader of the Python one
        for part in _PARSER[1:]:
            part.__init__(self)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._path: list[str] = []

    def _where(self) -> str:
        return "".join(p if p.startswith("[") else f".{p}" for p in self._path).lstrip(".")

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise _Refused(f"line {line}: YAML alias *{event.anchor} refused (drr's YAML files take "
                           "no anchors or aliases: write the value out)")
        if event.anchor is not None:
            raise _Refused(f"line {line}: YAML anchor &{event.anchor} refused (drr's YAML files take "
                           "no anchors or aliases: write the value out)")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in PLAIN_TAGS:
            raise _Refused(f"line {line}: YAML tag {_short_tag(tag)} refused (drr's YAML files take "
                           "plain values only)")
        # the path step of this node: a sequence index, or the key of a mapping value
        step = (f"[{index}]" if isinstance(index, int) else
                str(index.value) if isinstance(index, ScalarNode) else
                "?" if isinstance(index, Node) else None)
        if step is not None:
            self._path.append(step)
        try:
            node = super().compose_node(parent, index)
            node.drr_path = self._where()
        finally:
            if step is not None:
                self._path.pop()
        return node

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, MappingNode):
            return super().construct_mapping(node, deep=deep)
        mapping, first = {}, {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == MERGE_TAG:
                raise _Refused(f"line {line}: YAML merge key << refused (write the keys out)")
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in mapping
            except TypeError:
                raise _Refused(f"line {line}: a mapping key must be a plain value (a name or a number)") from None
            if seen:
                dotted = f"{node.drr_path}.{key}" if node.drr_path else str(key)
                raise _Refused(f"duplicate key '{dotted}' at line {line} (first at line {first[key]})")
            first[key] = line
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def parse_yaml(text: str, source: str):
    """The value of a YAML document read strictly (see the module docstring); a DrrError naming
    `source` otherwise."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as e:
        raise DrrError(f"{source}: {e.text}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DrrError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # thousands of nested brackets
        raise DrrError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_text(path) -> str:
    """A regular file's text, decoded as UTF-8 whatever the locale, at most MAX_YAML_BYTES."""
    path = Path(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise DrrError(f"{path}: is a folder, not a YAML file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader, a device never end
            raise DrrError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise DrrError(f"{path}: config file not found") from None
    except OSError as e:
        raise DrrError(f"{path}: cannot be read ({e.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise DrrError(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB: not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DrrError(f"{path}: not UTF-8 text (line {line}, byte {e.start})") from None


@lru_cache(maxsize=256)
def _parsed(text: str, source: str) -> bytes:
    """The parsed document, pickled: a plan reads the same few files for every config it resolves,
    and unpickling a copy is some 20x faster than parsing (keyed by the text: an edit between two
    reads is always seen)."""
    data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DrrError(f"{source}: top level must be a mapping of keys, not {type(data).__name__}")
    return pickle.dumps(data)


def read_yaml(path) -> dict:
    """A YAML file whose top level is a mapping (an empty file: {}), read strictly."""
    path = Path(path)
    text = read_text(path)
    parsed = _parsed if len(text) <= CACHED_BYTES else _parsed.__wrapped__
    return pickle.loads(parsed(text, str(path)))


# -- JSON schemas (workflow/schemas/<name>.schema.yaml) -----------------------------------------

@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    return read_yaml(SCHEMAS / f"{name}.schema.yaml")


@lru_cache(maxsize=None)
def _validator(name: str, partial: bool = False) -> jsonschema.Draft202012Validator:
    """The schema's validator; `partial`: without the top level's required keys, to check some
    sections of a config alone."""
    schema = load_schema(name)
    return jsonschema.Draft202012Validator(dict(schema, required=[]) if partial else schema)


def key_path(data, path) -> str:
    """'a.b[2].c' for the path [a, b, 2, c] into `data` (an index where the node is a list)."""
    out, node = "", data
    for p in path:
        if isinstance(node, list):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def _message(e: jsonschema.ValidationError) -> tuple[list, str]:
    """(path, text) of a schema error, in words a config's author reads: enum choices listed,
    a missing or unknown field named (with the closest known one), or the schema's own
    `errorMessage` (a mapping: validator -> text) where it has one."""
    path, schema, value = list(e.absolute_path), e.schema, e.instance
    if "propertyNames" in e.absolute_schema_path:  # the instance is a key of the mapping at `path`
        path.append(value)
    custom = schema.get("errorMessage", {}) if isinstance(schema, dict) else {}
    if e.validator in custom:
        return path, custom[e.validator]
    if e.validator == "enum":
        return path, f"{value!r} is not one of {', '.join(str(v) for v in e.validator_value)}"
    if e.validator == "required":
        missing = [k for k in e.validator_value if k not in value]
        return path, f"missing field '{missing[0]}'"
    if e.validator == "additionalProperties" and isinstance(value, dict):
        known = list(schema.get("properties", {}))
        extra = [k for k in value if k not in known]
        if extra:
            close = difflib.get_close_matches(str(extra[0]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (fields: {', '.join(known)})"
            return path, f"unknown field '{extra[0]}'{hint}"
    return path, e.message


def schema_problem(data, name: str, by_path: bool = False, partial: bool = False) -> tuple[str, str] | None:
    """(key path, message) of the first error of `data` against workflow/schemas/<name>.schema.yaml
    (`partial`: some of its top-level sections only), or None. The first by key path where
    `by_path`, else jsonschema's best match (which looks inside anyOf / oneOf for the alternative
    that came closest)."""
    errors = list(_validator(name, partial).iter_errors(data))
    if not errors:
        return None
    if by_path:
        e = min(errors, key=lambda e: [(isinstance(p, str), p) for p in e.absolute_path])
    else:
        e = jsonschema.exceptions.best_match(errors)
    path, text = _message(e)
    return key_path(data, path), text


def check_schema(data, name: str, source) -> None:
    """Raise DrrError '<source>: <key path>: <what is wrong>' where `data` breaks its schema."""
    problem = schema_problem(data, name)
    if problem:
        key, text = problem
        raise DrrError(f"{source}: {key}: {text}" if key else f"{source}: {text}")


# -- experiment configs -------------------------------------------------------------------------

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


# limits.<name> -> the keys of a resolved config it bounds (`shards` is computed: _check_limits)
LIMITED = {
    "num_samples": ("generation.num_samples", "generation.ablation_samples"),
    "batch_size": ("tokenizer.train.batch_size", "tokenizer.encode.batch_size",
                   "transformer.train.batch_size", "generation.batch_size",
                   "generation.speed_batch_size", "metrics.batch_size"),
}


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_limits(cfg: dict, source) -> None:
    """Refuse a size above its limit (cfg['limits']) before any job is planned: a typo of a few
    zeros would otherwise plan millions of shard jobs or allocate a batch no machine holds."""
    limits = cfg.get("limits") or {}
    how = "raise it in the experiment file or with --set if you mean it"
    for name, keys in LIMITED.items():
        if name not in limits:
            continue
        for key in keys:
            value = _get(cfg, key)
            if value is not None and value > limits[name]:
                raise DrrError(f"{source}: key '{key}': {value} is above limits.{name} "
                               f"({limits[name]}; {how})")
    if "shards" in limits:
        gen = cfg["generation"]
        n = max(gen["num_samples"], gen["ablation_samples"] or 0)
        shards = -(-n // gen["shard_size"])
        if shards > limits["shards"]:
            raise DrrError(f"{source}: key 'generation.shard_size': {n} samples in shards of "
                           f"{gen['shard_size']} make {shards} shard jobs, above limits.shards "
                           f"({limits['shards']}; {how})")


def validate(cfg: dict, source, sections=None) -> None:
    """Check a config against the JSON schema, that every number in it is finite and that its
    sizes are within `limits`; raise DrrError naming `source` and the key. `sections`: check only
    these top-level sections against the schema (those a layer changed, the rest having passed)."""
    part = cfg if sections is None else {s: cfg[s] for s in sections if s in cfg}
    bad = _non_finite(part)
    if bad:
        text = yaml.safe_dump(bad[1]).splitlines()[0]  # .nan, .inf or -.inf, as YAML writes them
        raise DrrError(f"{source}: key '{bad[0]}': {text} is not a finite number")
    problem = schema_problem(part, "experiment", by_path=True, partial=sections is not None)
    if problem:
        key, text = problem
        raise DrrError(f"{source}: key '{key or '<top level>'}': {text}")
    _check_limits(cfg, source)


def _extended(path: Path, target, base: Path) -> Path:
    """The file that `extends: <target>` in `path` names."""
    if not isinstance(target, str) or not target.strip():
        raise DrrError(f"{path}: key 'extends': expected a file path or an experiment name, got {target!r}")
    if "/" in target or target.endswith((".yaml", ".yml")):
        return Path(os.path.normpath(path.parent / target))
    return Path(base).parent / "experiments" / f"{target}.yaml"


def layer_files(path, base=BASE_CONFIG, _chain: tuple = ()) -> list[tuple[Path, dict]]:
    """(file, its keys) of a layer file and of the files it extends, the most basic first."""
    path = Path(path)
    data = read_yaml(path)
    if "extends" not in data:
        return [(path, data)]
    target = data.pop("extends")
    parent = _extended(path, target, base)
    chain = _chain + (path,)
    if any(os.path.realpath(parent) == os.path.realpath(p) for p in chain):
        loop = " -> ".join(str(p) for p in (*chain, parent))
        raise DrrError(f"{path}: key 'extends': {target!r} makes a cycle ({loop})")
    if not parent.is_file():
        raise DrrError(f"{path}: key 'extends': {target!r} not found ({parent})")
    return layer_files(parent, base, chain) + [(path, data)]


def load_config(*layers, base=BASE_CONFIG) -> dict:
    """Resolve a config: base, then each layer (a path, with what it extends first, or a dict of
    overrides) in order. The result leaves out `limits` (checked here, on every layer)."""
    cfg = pickle.loads(_checked_base(read_text(base), str(base)))
    for layer in layers:
        steps = [("--set", layer)] if isinstance(layer, dict) else layer_files(layer, base)
        for source, data in steps:
            _merge(cfg, data, source)
            validate(cfg, source, sections=list(data))  # the rest is as the last layer left it
    cfg.pop("limits", None)
    return cfg


@lru_cache(maxsize=8)
def _checked_base(text: str, source: str) -> bytes:
    """The base config, validated and pickled (see _parsed): every config a plan resolves starts here."""
    cfg = pickle.loads(_parsed(text, source))
    validate(cfg, source)
    return pickle.dumps(cfg)


def config_hash(cfg: dict) -> str:
    """16 hex digits identifying a resolved config (sorted-key JSON, sha256)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _PlainDumper(yaml.SafeDumper):
    """yaml.safe_dump's writer that never writes an anchor (read_yaml refuses them): a value that
    appears twice is written out twice."""

    def ignore_aliases(self, data):
        return True


def dump_config(cfg: dict) -> str:
    head = f"# resolved drr config, hash {config_hash(cfg)}\n"
    return head + yaml.dump(cfg, Dumper=_PlainDumper, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path) -> None:
    """Write the resolved config (atomically) with its hash in a header comment."""
    write_text(path, dump_config(cfg))


def override_from_dotted(pairs: list[str]) -> dict:
    """Turn ['a.b=1', 'c=x'] (values parsed as YAML, strictly: parse_yaml) into a nested
    override dict; a later pair overrides an earlier one."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise DrrError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        parts = key.split(".")
        if not all(p.strip() for p in parts):
            raise DrrError(f"--set {pair!r}: expected key=value with a dotted key (a.b.c)")
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DrrError(f"--set {pair!r}: '{'.'.join(parts[:i + 1])}' is set to a value "
                               "by an earlier --set, not a section")
        node[parts[-1]] = parse_yaml(value, f"--set {key}")
    return out


# -- dotted keys ----------------------------------------------------------------------------------

ABSENT = "<absent>"  # the value `first_differing` gives a key one of the two dicts lacks


def nested(settings: dict) -> dict:
    """{dotted key: value} as a nested override (a config layer)."""
    out: dict = {}
    for key, value in settings.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested dict as {dotted key: value}; an empty section counts as a value of its own."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def first_differing(a: dict, b: dict) -> tuple[str, object, object] | None:
    """(key, value in a, value in b) of the first key, in sorted order, whose value differs between
    two flat dicts ({dotted key: value}: `flatten`), a key one of them lacks reading as ABSENT; None
    if they agree."""
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, ABSENT), b.get(key, ABSENT)
        if x != y:
            return key, x, y
    return None
