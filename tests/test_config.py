"""Configs: layering, unknown and mistyped keys named with their file, hashing, schema coverage."""

from pathlib import Path

import pytest

from drr.core.config import (
    BASE_CONFIG,
    SCHEMA,
    config_hash,
    load_config,
    override_from_dotted,
    read_yaml,
    save_config,
)
from drr.core.errors import DrrError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_override_layers_in_order(tmp_path):
    a = write(tmp_path, "tokenizer:\n  train:\n    steps: 7\n", "a.yaml")
    b = write(tmp_path, "tokenizer:\n  train:\n    steps: 9\n", "b.yaml")
    assert load_config(a)["tokenizer"]["train"]["steps"] == 7
    assert load_config(a, b)["tokenizer"]["train"]["steps"] == 9
    # untouched keys keep the base value
    assert load_config(a)["tokenizer"]["train"]["lr"] == read_yaml(BASE_CONFIG)["tokenizer"]["train"]["lr"]


def test_unknown_key_names_file_and_key(tmp_path):
    p = write(tmp_path, "tokenizer:\n  model:\n    chh: 3\n")
    with pytest.raises(DrrError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'tokenizer.model.chh'" in msg and "tokenizer.model.ch" in msg
    assert "\n" not in msg


def test_mistyped_value_names_file_and_key(tmp_path):
    p = write(tmp_path, "tokenizer:\n  train:\n    steps: many\n")
    with pytest.raises(DrrError, match=r"exp.yaml: key 'tokenizer.train.steps'"):
        load_config(p)
    p = write(tmp_path, "data:\n  name: mnist\n")
    with pytest.raises(DrrError, match=r"key 'data.name'"):
        load_config(p)


def test_section_replaced_by_scalar_is_refused(tmp_path):
    with pytest.raises(DrrError, match="'tokenizer' must be a mapping"):
        load_config(write(tmp_path, "tokenizer: 3\n"))


def test_bad_yaml_names_file(tmp_path):
    with pytest.raises(DrrError, match=r"exp.yaml: not valid YAML \(line 2\)"):
        load_config(write(tmp_path, "seed: 1\n  bad: [\n"))


def test_dotted_overrides():
    cfg = load_config(override_from_dotted(["tokenizer.train.steps=3", "data.max_images=10"]))
    assert cfg["tokenizer"]["train"]["steps"] == 3 and cfg["data"]["max_images"] == 10


def test_hash_changes_with_content_and_save_round_trip(tmp_path):
    cfg = load_config()
    h = config_hash(cfg)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert h in (tmp_path / "c.yaml").read_text()
    cfg["seed"] = 1
    assert config_hash(cfg) != h


def _schema_keys(node, prefix=""):
    keys = set()
    for k, v in node.get("properties", {}).items():
        keys.add(prefix + k)
        keys |= _schema_keys(v, prefix + k + ".")
    return keys


def _config_keys(d, prefix=""):
    keys = set()
    for k, v in d.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _config_keys(v, prefix + k + ".")
    return keys


def test_schema_and_base_describe_the_same_keys():
    assert _schema_keys(read_yaml(SCHEMA)) == _config_keys(read_yaml(BASE_CONFIG))


def test_every_base_key_has_a_comment():
    for n, line in enumerate(BASE_CONFIG.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert "#" in line, f"configs/base.yaml line {n} has no comment: {line!r}"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "experiments").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_experiment_config_loads(path):
    load_config(path)
