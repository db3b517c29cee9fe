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


def _schema_keys(node, prefix="", schema=None):
    schema = schema or node
    keys = set()
    for k, v in node.get("properties", {}).items():
        if "$ref" in v:  # "#/$defs/<name>"
            v = schema["$defs"][v["$ref"].rsplit("/", 1)[1]]
        keys.add(prefix + k)
        keys |= _schema_keys(v, prefix + k + ".", schema)
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


def test_stage_hashes_are_those_recorded_before_the_configs_were_shared():
    """tests/data/stage_hashes.json holds every stage hash of every experiment (and of the rehearsal
    scale), recorded from the experiment files as they were before the ImageNet and CC-3M ones moved
    their shared settings into configs/shared/ (`extends`), then re-recorded once for the paper
    experiments' sampling stages (samples, merge, speed, pictures) when they took `sampling.precision:
    bf16`, which changes their samples by design, and for their data stages when they took
    `data.max_images: null` (every image, not base.yaml's first 20,000), and for every transformer
    report when it took the chain-rule likelihood (`transformer.report`), and for the VQ experiment's
    tokenizer when it took `tokenizer.train.micro_batch_size: 16`, and the small suite's models and runs
    for protocol v5 and again for v6 (docs/small-suite.md), which change them by design. Equal hashes: no result reruns."""
    import json

    from drr.core.stages import STAGES, stage_hash
    from drr.workflow.studies import Studies

    recorded = json.loads((REPO / "tests/data/stage_hashes.json").read_text())
    studies = Studies(REPO, scale="rehearsal")
    experiments = sorted(p.stem for p in (REPO / "configs/experiments").glob("*.yaml"))
    assert sorted(k for k in recorded if "/" not in k) == experiments
    for key, hashes in recorded.items():
        scale, _, name = key.rpartition("/")
        cfg = studies.config(name) if scale else load_config(REPO / f"configs/experiments/{name}.yaml")
        assert set(hashes) == set(STAGES), key
        for stage, h in hashes.items():
            assert stage_hash(cfg, stage) == h, (key, stage)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")) + sorted((REPO / "workflow/schemas").glob("*.yaml")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_file_reads_strictly(path):
    """No anchors, aliases, duplicate keys or tags in a file the package ships (read_yaml refuses them)."""
    assert isinstance(read_yaml(path), dict)


def test_a_saved_config_with_a_repeated_value_reads_back(tmp_path):
    """yaml.safe_dump writes a value that appears twice as an anchor and an alias; save_config
    writes it out twice, so the strict reader takes its own output."""
    cfg = load_config()
    cfg["tokenizer"]["model"]["ch_mult"] = cfg["tokenizer"]["model"]["attn_resolutions"] = [1, 2]
    save_config(cfg, tmp_path / "c.yaml")
    assert "&" not in (tmp_path / "c.yaml").read_text()
    assert read_yaml(tmp_path / "c.yaml")["tokenizer"]["model"]["attn_resolutions"] == [1, 2]


def test_the_schema_error_names_a_list_item_by_its_index(tmp_path):
    p = write(tmp_path, "tokenizer:\n  model:\n    ch_mult: [1, 0]\n")
    with pytest.raises(DrrError, match=r"exp.yaml: key 'tokenizer\.model\.ch_mult\[1\]': 0 is less than the minimum of 1"):
        load_config(p)


@pytest.mark.parametrize("name", ["experiment", "workflow", "studies", "claims", "published"])
def test_every_schema_is_a_valid_json_schema(name):
    import jsonschema

    from drr.core.config import load_schema
    jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_an_edited_file_is_read_again(tmp_path):
    """read_yaml keeps parsed files by their text: an edit of the same size is seen at once."""
    p = write(tmp_path, "seed: 1\n")
    assert read_yaml(p) == {"seed": 1}
    p.write_text("seed: 2\n")
    assert read_yaml(p) == {"seed": 2}
    read_yaml(p)["seed"] = 3  # a caller's change stays its own
    assert read_yaml(p) == {"seed": 2}
