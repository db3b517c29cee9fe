"""Configs read strictly (drr.core.config): every bad input is one line naming the file (or --set)
and the key or line, never a traceback, a hang or a plan of billions of jobs. Table-driven: each
case is an input and the line it must give."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drr.core.config import MAX_YAML_BYTES, load_config, override_from_dotted, parse_yaml, read_yaml
from drr.core.errors import DrrError
from drr.workflow.claims import load_claims
from drr.workflow.plan import Plan
from drr.workflow.studies import Studies

REPO = Path(__file__).resolve().parents[1]

# 338 bytes whose aliases expand to 9^8 list items: the unchecked reader spent over a minute on it.
ALIAS_BOMB = "sampling:\n  ar:\n    top_k:\n      - &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"      - &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh"))


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# (name, file text, the message after '<file>: ')
FILES = [
    ("duplicate key", "seed: 1\nseed: 2\n", r"duplicate key 'seed' at line 2 \(first at line 1\)"),
    ("duplicate nested key", "tokenizer:\n  train:\n    steps: 1\n    lr: 0.1\n    steps: 2\n",
     r"duplicate key 'tokenizer\.train\.steps' at line 5 \(first at line 3\)"),
    ("duplicate key in a list item", "sampling:\n  ar:\n    top_k: [{a: 1, a: 2}]\n",
     r"duplicate key 'sampling\.ar\.top_k\[0\]\.a' at line 3"),
    ("duplicate number key", "cells:\n  8: {fid: 1}\n  8: {fid: 2}\n", r"duplicate key 'cells\.8' at line 3"),
    ("anchor", "seed: &s 1\n", r"line 1: YAML anchor &s refused"),
    ("alias bomb", ALIAS_BOMB, r"line 4: YAML anchor &a refused"),
    ("merge key", "tokenizer:\n  <<: {name: x}\n", r"line 2: YAML merge key << refused"),
    ("python tag", "seed: !!python/object/apply:os.system ['true']\n",
     r"line 1: YAML tag !!python/object/apply:os\.system refused"),
    ("local tag", "seed: !env HOME\n", r"line 1: YAML tag !env refused"),
    ("set tag", "data:\n  name: !!set {a, b}\n", r"line 2: YAML tag !!set refused"),
    ("complex key", "? [1, 2]\n: x\n", r"line 1: a mapping key must be a plain value"),
    ("broken YAML", "seed: 1\n  bad: [\n", r"not valid YAML \(line 2\)"),
    ("nested too deeply", "seed: " + "[" * 20000 + "]" * 20000 + "\n", r"not valid YAML: nested too deeply"),
    ("a list at the top", "- seed\n", r"top level must be a mapping of keys, not list"),
]


@pytest.mark.parametrize("name, text, message", FILES, ids=[c[0] for c in FILES])
def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(DrrError, match=f"^{path}: " + message) as e:
        load_config(path)
    one_line(e)
    assert time.perf_counter() - start < 5


def test_explicit_plain_tags_are_read():
    assert parse_yaml("a: !!str 08\nb: !!int '3'\nc: !!float 1\n", "x") == {"a": "08", "b": 3, "c": 1.0}


def test_a_folder_a_fifo_a_device_and_a_huge_file_are_refused(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block until a writer came
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(MAX_YAML_BYTES + 1)
    cases = [(tmp_path, "is a folder, not a YAML file"), (fifo, "not a regular file"),
             (Path("/dev/zero"), "not a regular file"), (huge, "larger than 4 MiB"),
             (tmp_path / "nope.yaml", "config file not found")]
    for path, message in cases:
        with pytest.raises(DrrError, match=f"^{path}: {message}") as e:
            load_config(path)
        one_line(e)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 0\ndata:\n  root: /données\n".encode("latin-1"))
    with pytest.raises(DrrError, match=rf"^{path}: not UTF-8 text \(line 3, byte 27\)"):
        read_yaml(path)


def test_configs_are_read_as_utf8_whatever_the_locale(tmp_path):
    """Under LC_ALL=C with Python's UTF-8 mode and locale coercion off, open() decodes as ASCII; the
    shipped studies.yaml, published.yaml and claims.yaml (×, ✓, §, †) still read."""
    exp = tmp_path / "exp.yaml"
    exp.write_text("data:\n  root: /données/imagenet   # é\n", encoding="utf-8")
    code = ("import locale; from drr.core.config import load_config; from drr.workflow.studies import Studies;"
            "from drr.workflow.claims import load_claims;"
            "print(locale.getpreferredencoding(False));"
            f"print(load_config({str(exp)!r})['data']['root'].encode('unicode_escape').decode());"
            "s = Studies(); print(len(load_claims('configs/claims.yaml', s)), s.published['table1']['rows'][1]['model'].encode('unicode_escape').decode())")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    encoding, root, claims = run.stdout.splitlines()
    assert encoding.lower() in ("ansi_x3.4-1968", "ascii", "us-ascii")  # the test means something
    assert root == "/donn\\xe9es/imagenet"
    assert claims == "15 StyleGAN-XL\\u2020"


# (--set pairs, the message)
SETS = [
    (["seed=!!python/object/apply:os.system ['true']"], r"^--set seed: line 1: YAML tag !!python/object/apply:os\.system refused"),
    (["seed=&a 1"], r"^--set seed: line 1: YAML anchor &a refused"),
    (["sampling.ar.top_k=[1, 2"], r"^--set sampling\.ar\.top_k: not valid YAML"),
    (["sampling.ar.top_k={a: 1, a: 2}"], r"^--set sampling\.ar\.top_k: duplicate key 'a'"),
    (["sampling..t_draft=3"], r"^--set 'sampling\.\.t_draft=3': expected key=value with a dotted key"),
    (["=3"], r"^--set '=3': expected key=value with a dotted key"),
    (["seed=1", "seed.x=2"], r"^--set 'seed\.x=2': 'seed' is set to a value by an earlier --set"),
    (["seed"], r"^--set 'seed': expected key=value"),
]


@pytest.mark.parametrize("pairs, message", SETS, ids=[s[0][-1] for s in SETS])
def test_a_bad_set_is_one_line(pairs, message):
    with pytest.raises(DrrError, match=message) as e:
        load_config(override_from_dotted(pairs))
    one_line(e)


def test_set_values_are_yaml():
    cfg = load_config(override_from_dotted(["sampling.ar.top_k=[3, 4]", "data.root=null", "seed=7",
                                            "seed=8"]))
    assert cfg["sampling"]["ar"]["top_k"] == [3, 4] and cfg["data"]["root"] is None and cfg["seed"] == 8


# (--set pairs, the message): sizes past configs/base.yaml `limits`
LIMITS = [
    (["generation.num_samples=1000000000000"],
     r"^--set: key 'generation\.num_samples': 1000000000000 is above limits\.num_samples \(1000000;"),
    (["generation.ablation_samples=2000000"], r"^--set: key 'generation\.ablation_samples': 2000000 is above limits\.num_samples"),
    (["generation.num_samples=600000", "generation.shard_size=500"],
     r"^--set: key 'generation\.shard_size': 600000 samples in shards of 500 make 1200 shard jobs, above limits\.shards \(1000;"),
    (["transformer.train.batch_size=100000"], r"^--set: key 'transformer\.train\.batch_size': 100000 is above limits\.batch_size \(16384;"),
    (["metrics.batch_size=20000"], r"^--set: key 'metrics\.batch_size': 20000 is above limits\.batch_size"),
    (["limits.shards=0"], r"^--set: key 'limits\.shards': 0 is less than the minimum of 1"),
    (["limits.sharts=10"], r"^--set: unknown key 'limits\.sharts' \(did you mean 'limits\.shards'\?\)"),
]


@pytest.mark.parametrize("pairs, message", LIMITS, ids=[s[0][0] for s in LIMITS])
def test_a_size_past_its_limit_is_one_line(pairs, message):
    with pytest.raises(DrrError, match=message) as e:
        load_config(override_from_dotted(pairs))
    one_line(e)


def test_a_raised_limit_admits_the_size_and_is_not_part_of_the_config(tmp_path):
    exp = tmp_path / "big.yaml"
    exp.write_text("limits:\n  num_samples: 5000000\n  shards: 2000\ngeneration:\n  num_samples: 2000000\n"
                   "  shard_size: 1000\n")
    cfg = load_config(exp)
    assert cfg["generation"]["num_samples"] == 2000000 and "limits" not in cfg
    assert "limits" not in load_config()  # so no config hash, stage hash or saved config.yaml has it


def test_a_huge_sample_count_stops_the_plan_in_one_line(tmp_path):
    """generation.num_samples 10^12: one line when the plan is made, not 2·10^9 shard jobs."""
    import shutil
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    tiny = tmp_path / "configs/experiments/tiny.yaml"
    tiny.write_text(tiny.read_text() + "generation:\n  num_samples: 1000000000000\n")
    wf = read_yaml(REPO / "configs/workflow.yaml")
    with pytest.raises(DrrError, match=rf"^{tiny}: key 'generation\.num_samples': 1000000000000 is above "
                                       r"limits\.num_samples") as e:
        Plan(tmp_path, wf)
    one_line(e)


# -- extends ----------------------------------------------------------------------------------------

def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_applies_the_named_file_first(tmp_path):
    write(tmp_path, "shared/common.yaml", "extends: root.yaml\ntokenizer:\n  train:\n    steps: 7\n    lr: 0.5\n")
    write(tmp_path, "shared/root.yaml", "seed: 3\ntokenizer:\n  train:\n    steps: 1\n")
    exp = write(tmp_path, "experiments/x.yaml", "extends: ../shared/common.yaml\ntokenizer:\n  train:\n    lr: 0.25\n")
    cfg = load_config(exp)
    assert (cfg["seed"], cfg["tokenizer"]["train"]["steps"], cfg["tokenizer"]["train"]["lr"]) == (3, 7, 0.25)
    assert "extends" not in cfg


def test_extends_by_name_reads_configs_experiments(tmp_path):
    exp = write(tmp_path, "x.yaml", "extends: in256-crq-821m\ngeneration:\n  num_samples: 1000\n")
    cfg = load_config(exp)
    want = load_config(REPO / "configs/experiments/in256-crq-821m.yaml")
    want["generation"]["num_samples"] = 1000
    assert cfg == want


# (files: name -> text, the file given, the message)
EXTENDS = [
    ({"a.yaml": "extends: missing.yaml\n"}, "a.yaml", r"a\.yaml: key 'extends': 'missing\.yaml' not found"),
    ({"a.yaml": "extends: no-such-experiment\n"}, "a.yaml",
     r"a\.yaml: key 'extends': 'no-such-experiment' not found \(.*configs/experiments/no-such-experiment\.yaml\)"),
    ({"a.yaml": "extends: a.yaml\n"}, "a.yaml", r"a\.yaml: key 'extends': 'a\.yaml' makes a cycle"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: a.yaml\n"}, "a.yaml",
     r"c\.yaml: key 'extends': 'a\.yaml' makes a cycle \(.*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml\)"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "a.yaml", r"a\.yaml: key 'extends': expected a file path or an experiment name"),
    ({"a.yaml": "extends: b.yaml\nseed: 1\n", "b.yaml": "tokenizer:\n  trian: {}\n"}, "a.yaml",
     r"b\.yaml: unknown key 'tokenizer\.trian' \(did you mean 'tokenizer\.train'\?\)"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "seed: 1\nseed: 1\n"}, "a.yaml", r"b\.yaml: duplicate key 'seed'"),
    ({"a.yaml": "extends: shared\n", "shared/x.yaml": ""}, "a.yaml", r"a\.yaml: key 'extends': 'shared' not found"),
]


@pytest.mark.parametrize("files, given, message", EXTENDS, ids=[str(i) for i in range(len(EXTENDS))])
def test_bad_extends_is_one_line(tmp_path, files, given, message):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(DrrError, match=message) as e:
        load_config(tmp_path / given)
    one_line(e)


def test_shared_files_are_not_experiments():
    suites = read_yaml(REPO / "configs/workflow.yaml")["suites"]
    named = {e for s in suites.values() for e in s["experiments"]}
    experiments = {p.stem for p in (REPO / "configs/experiments").glob("*.yaml")}
    assert named <= experiments
    assert not {p.stem for p in (REPO / "configs/shared").glob("*.yaml")} & experiments


# -- the data files: studies.yaml, published.yaml, claims.yaml ---------------------------------------

@pytest.fixture
def root(tmp_path):
    import shutil
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return tmp_path


def edit(path: Path, change) -> None:
    doc = read_yaml(path)
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


# (file, change, message after '<file>: ')
DATA = [
    ("studies", lambda d: d["reports"]["table3"].update(layuot="cells"),
     r"reports\.table3: unknown field 'layuot' \(did you mean 'layout'\?\)"),
    ("studies", lambda d: d["reports"]["table1"].update(cells=[{"t_draft": [8]}]),
     r"reports\.table1\.cells: a `layout: models` table shows each experiment's default run, not cells"),
    ("studies", lambda d: d["reports"]["fig4a"]["panels"][0].pop("show"), r"reports\.fig4a\.panels\[0\]: missing field 'show'"),
    ("studies", lambda d: d["reports"]["fig4a"].update(cells=[{"t_draft": []}]),
     r"reports\.fig4a\.cells\[0\]\.t_draft: expected a non-empty list of values"),
    ("studies", lambda d: d["reports"]["table4"]["columns"][0].update(values={8: "x"}),
     r"reports\.table4\.columns\[0\]: expected header, parameter and one of values / format"),
    ("studies", lambda d: d["reports"]["table4"]["columns"][0].update(format="T_draft"),
     r"reports\.table4\.columns\[0\]\.format: expected a string with \{\} for the value"),
    ("studies", lambda d: d["parameters"].update({"t=d": "sampling.t_draft"}),
     r"parameters\.t=d: a parameter's short name is letters, digits"),
    ("studies", lambda d: d["parameters"].update(t_draft="sampling.t_drafts"),
     r"parameters\.t_draft: 'sampling\.t_drafts' is not a setting of configs/base\.yaml"),
    ("studies", lambda d: d["reports"]["fig4a"]["panels"][0].update(parameter="M"),
     r"reports\.fig4a\.panels\[0\]\.parameter: 'M' is not a parameter of the report's cells \(t_draft\)"),
    ("studies", lambda d: d["pictures"]["fig5"].update(samples=0), r"pictures\.fig5\.samples: 0 is less than the minimum of 1"),
    ("published", lambda d: d["table1"]["rows"][0].update(fdi=1.0), r"table1\.rows\[0\]: unknown field 'fdi' \(did you mean 'fid'\?\)"),
    ("published", lambda d: d["table1"]["rows"][0].pop("model"), r"table1\.rows\[0\]: missing field 'model'"),
    ("published", lambda d: d["table1"]["rows"][0].update(fid="6.95"), r"table1\.rows\[0\]\.fid: '6\.95' is not of type 'number'"),
    ("published", lambda d: d["table3"].update(experiment="in256-crq-822m"),
     r"table3\.experiment: no experiment 'in256-crq-822m' \(configs/experiments/in256-crq-822m\.yaml\)"),
    ("published", lambda d: d["table1"]["rows"][10].update(experiment="in256-rq-1400m"),
     r"table1\.rows\[10\]\.experiment: no experiment 'in256-rq-1400m'"),
    ("published", lambda d: d.update(table9={"source": "x"}), r"table9: not a table of studies\.yaml"),
    ("published", lambda d: d["figures"]["notes"].update(fig9="x"), r"figures\.notes\.fig9: not a figure of studies\.yaml"),
    ("published", lambda d: d["figures"]["figA1"][0].update(panel="T_draft"),
     r"figures\.figA1\[0\]\.panel: 'T_draft' is not a panel of figA1 \(t_draft, M\)"),
    ("published", lambda d: d["tableA3"]["cells"][8].update(random={"fid": 6.28}),
     r"tableA3\.cells\.8\.random: expected values of 'phase' here: reports\.tableA3\.paper in studies\.yaml is t_draft, strategy, phase"),
    ("published", lambda d: d["table4"].update(cells={8: {"x": {"fid": 5.41}}}),
     r"table4\.cells\.8: expected the paper's numbers \(fid, is, precision, recall, clip, s_per_sample\)"),
    ("published", lambda d: d["table1"].update(cells={8: {"fid": 1.0}}),
     r"table1\.cells: reports\.table1 in studies\.yaml is a `layout: models` table"),
    ("published", lambda d: d["table2"].pop("source"), r"table2: missing field 'source'"),
    ("claims", lambda d: d["claims"]["recall_falls_with_m"].update(direction="falls"),
     r"claims\.recall_falls_with_m\.direction: 'falls' is not one of improves, worsens"),
    ("claims", lambda d: d["claims"]["recall_falls_with_m"].pop("direction"),
     r"claims\.recall_falls_with_m: missing field 'direction'"),
    ("claims", lambda d: d["claims"]["contextual_faster_than_ar"].update(timed_on="tpu"),
     r"claims\.contextual_faster_than_ar\.timed_on: 'tpu' is not one of gpu"),
    ("claims", lambda d: d["claims"]["ar_has_higher_recall"].update(metric="recal"),
     r"claims\.ar_has_higher_recall\.metric: 'recal' is not one of fid, is"),
    ("claims", lambda d: d["claims"]["contextual_faster_than_ar"]["comparisons"][0]["a"].update(cel={}),
     r"claims\.contextual_faster_than_ar\.comparisons\[0\]\.a: unknown field 'cel' \(did you mean 'cell'\?\)"),
    ("claims", lambda d: d["claims"]["guidance_in_both_trades_recall_for_precision"]["comparisons"][0].pop("better"),
     r"claims\.guidance_in_both_trades_recall_for_precision\.comparisons\[0\]: missing field 'better' \(here or in the claim\)"),
    ("claims", lambda d: d["claims"]["revise_beats_draft_every_t_draft"].update(where={"T": 8}),
     r"claims\.revise_beats_draft_every_t_draft\.where: unknown parameter 'T'"),
    ("claims", lambda d: d.update(claims={}), r"claims: expected a non-empty mapping of claims"),
]


@pytest.mark.parametrize("name, change, message", DATA, ids=[f"{d[0]}-{i}" for i, d in enumerate(DATA)])
def test_a_bad_data_file_is_one_line_naming_file_and_key(root, name, change, message):
    path = root / f"configs/{name}.yaml"
    edit(path, change)
    with pytest.raises(DrrError, match=f"^{path}: " + message) as e:
        if name == "claims":
            load_claims(path, Studies(root))
        else:
            Studies(root)
    one_line(e)


def test_the_shipped_data_files_pass():
    studies = Studies(REPO)
    assert set(studies.published) >= {"table1", "figures"}
    assert len(load_claims(REPO / "configs/claims.yaml", studies)) == 15


# -- the command line: exit status 2 and one line on stderr -------------------------------------------

CLI = [
    ("dup.yaml", "seed: 1\nseed: 1\n", [], r"dup\.yaml: duplicate key 'seed' at line 2"),
    ("bomb.yaml", ALIAS_BOMB, [], r"bomb\.yaml: line 4: YAML anchor &a refused"),
    ("ok.yaml", "seed: 1\n", ["--set", "generation.num_samples=1000000000000"],
     r"--set: key 'generation\.num_samples': 1000000000000 is above limits\.num_samples"),
    ("ok.yaml", "seed: 1\n", ["--set", "seed=!!python/object/apply:os.system ['touch PWNED']"],
     r"--set seed: line 1: YAML tag !!python/object/apply:os\.system refused"),
]


@pytest.mark.parametrize("name, text, extra, message", CLI, ids=[f"{c[0]}{c[2][1:2]}" for c in CLI])
def test_the_cli_exits_2_with_one_line(tmp_path, name, text, extra, message):
    config = write(tmp_path, name, text)
    run = subprocess.run([sys.executable, "-m", "drr.sampling.generate", "--config", str(config), *extra,
                          "--tokenizer", "t.pt", "--transformer", "m.pt", "--out", str(tmp_path / "out")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"^error: .*" + message, lines[0]), run.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_without_libyaml_the_same_files_are_refused():
    """PyYAML built without libyaml: the pure-Python parser under the same strict composer."""
    code = ("import sys; sys.modules['yaml._yaml'] = None\n"
            "import yaml; from drr.core.config import _PARSER, parse_yaml; from drr.core.errors import DrrError\n"
            "assert _PARSER[0] is yaml.reader.Reader\n"
            "text = open('configs/base.yaml', encoding='utf-8').read()\n"
            "assert parse_yaml(text, 'base') == yaml.safe_load(text)\n"
            f"for text in {[f[1] for f in FILES[:10]]!r}:\n"
            "    try:\n        parse_yaml(text, 'x.yaml')\n    except DrrError as e:\n        print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 10
    for line, (_, _, message) in zip(lines, FILES[:10]):
        assert re.match("x.yaml: " + message, line), line
