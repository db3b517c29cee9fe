"""The paper suite's dress rehearsal (issue 16): `snakemake --profile slurm --config suite=paper
scale=rehearsal` on the private test cluster (tests/slurm), building every paper table and figure.

Every paper experiment and every rule it uses run with the paper configs' code paths; the overlay
configs/scales/rehearsal/ shrinks only sizes. What the test provides, as a user's site would:

- the official releases as tarballs in the official layout (<name>/stage1/model.pt, stage2/...),
  made here from models of the rehearsal's sizes and served over HTTP on 127.0.0.1: fetch_release
  downloads, checks, records and unpacks them, the import rules read them;
- ImageNet in class folders and CC-3M as img2dataset's `files` output, generated (small pictures
  with captions that say what they show) under the paper configs' own data.root;
- the files that cannot be downloaded here: a CLIP ViT-B/32 and a VGG16 (for LPIPS) of the right
  architectures with random weights.

Training runs through submitit as 2 processes (gloo on CPU) of one SLURM job per model. It took
22 min 17 s on the 2-core machine (175 jobs; docs/paper-scale.md, "Dress rehearsal"), so it is not
part of `make test` (which must stay well under 30 minutes): run it with `make rehearsal`
(pytest -m rehearsal).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from workflow_fixtures import copy_workflow

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TABLES = ["table1", "table2", "table3", "table4", "tableA2", "tableA3"]
FIGURES = ["fig4a", "fig4b", "fig4c", "figA1"]
COLORS = {"red": (220, 40, 30), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "disc", "stripe")

pytestmark = [pytest.mark.rehearsal, pytest.mark.slurm, pytest.mark.slow]


# --- data in the layouts the paper configs read -----------------------------------------------------

def picture(i: int, size: int = 48):
    """A small RGB picture (one of 12 colour-shape pairs, jittered) and its caption."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(i)
    color = list(COLORS)[i % len(COLORS)]
    shape = SHAPES[(i // len(COLORS)) % len(SHAPES)]
    bg = tuple(int(v) for v in rng.integers(0, 90, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    a, b = (int(v) for v in rng.integers(4, 14, 2))
    box = (a, b, size - b, size - a)
    if shape == "square":
        d.rectangle(box, fill=COLORS[color])
    elif shape == "disc":
        d.ellipse(box, fill=COLORS[color])
    else:
        d.rectangle((0, a + 8, size, a + 20), fill=COLORS[color])
    return img, f"a {color} {shape} on a dark background"


def make_imagenet(root: Path, classes: int = 8, train: int = 4, val: int = 2) -> None:
    """<root>/{train,val}/<wnid>/*.JPEG: ILSVRC-style names, one colour-shape pair per class."""
    for c in range(classes):
        wnid = f"n{c:08d}"
        for split, n in (("train", train), ("val", val)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                img, _ = picture(c + 12 * j + (1000 if split == "val" else 0))
                img.save(folder / f"{wnid}_{j}.JPEG", quality=95)


def make_cc3m(root: Path, shards: dict[str, list[int]]) -> None:
    """img2dataset's `files` output: <root>/<split>/<shard>/<key>.jpg + .txt + .json."""
    key = 0
    for split, sizes in shards.items():
        for s, n in enumerate(sizes):
            folder = root / split / f"{s:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                img, caption = picture(key + (500 if split == "val" else 0))
                name = f"{key:09d}"
                img.save(folder / f"{name}.jpg", quality=95)
                (folder / f"{name}.txt").write_text(caption)
                (folder / f"{name}.json").write_text(json.dumps({"key": name, "caption": caption,
                                                                 "status": "success"}))
                key += 1


# --- the official releases, served over HTTP --------------------------------------------------------

def release_tarball(path: Path, name: str, parts: dict[str, object]) -> None:
    """<name>/stage{1,2}/{model.pt,config.yaml} in a .tar.gz, as the official tarballs hold them."""
    from drr.tokenizer.official import save_official as save_stage1
    from drr.transformer.official import save_official as save_stage2

    tmp = path.parent / f"{name}-tree"
    for stage, model in parts.items():
        (tmp / name / stage).mkdir(parents=True, exist_ok=True)
        (save_stage1 if stage == "stage1" else save_stage2)(model, tmp / name / stage / "model.pt")
        (tmp / name / stage / "config.yaml").write_text("arch: {}\n")
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tmp / name, arcname=name)
    shutil.rmtree(tmp)


def make_releases(folder: Path, configs: dict[str, dict]) -> None:
    """The two official releases the paper suite imports, with random weights of the rehearsal's
    sizes (the import checks every key name and shape against the model the config builds). Both
    hold a stage2, as the official ones do; drr reads cc3m's stage1 only, so its stage2 here is
    the ImageNet AR model."""
    import torch

    from drr.tokenizer import RQVAE, RQVAEConfig
    from drr.transformer.build import build_transformer
    from drr.transformer.model import TransformerConfig

    torch.manual_seed(0)
    in256, cc3m, ar = configs["in256-crq-821m"], configs["cc3m-crq-366m"], configs["in256-rq-1400m-ar"]
    release_tarball(folder / "imagenet_1.4B_rqvae_50e.tar.gz", "imagenet_1.4B_rqvae_50e", {
        "stage1": RQVAE(RQVAEConfig(**in256["tokenizer"]["model"])),
        "stage2": build_transformer(TransformerConfig.from_experiment(ar))})
    release_tarball(folder / "cc3m.tar.gz", "cc3m", {
        "stage1": RQVAE(RQVAEConfig(**cc3m["tokenizer"]["model"])),
        "stage2": build_transformer(TransformerConfig.from_experiment(ar))})


class Server:
    """A static file server on 127.0.0.1 that records the paths it served."""

    def __init__(self, folder: Path):
        self.served: list[str] = []
        served = self.served

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                served.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def point_releases_at(workdir: Path, url: str) -> None:
    """Give every release of the workdir's rehearsal overlay the test server's URL (each
    experiment naming a release must describe it alike, so all of them)."""
    from drr.workflow.studies import Studies

    studies = Studies(workdir, scale="rehearsal")
    for f in sorted((workdir / "configs/scales/rehearsal").glob("*.yaml")):
        if f.name == "all.yaml":
            continue
        cfg = studies.config(f.stem)
        data = yaml.safe_load(f.read_text()) or {}
        for part in ("tokenizer", "transformer"):
            name = cfg[part]["release"]["name"]
            if name and cfg[part]["checkpoint"]:
                data.setdefault(part, {}).setdefault("release", {})["url"] = f"{url}/{name}.tar.gz"
        f.write_text(yaml.safe_dump(data, sort_keys=False))


def make_unobtainable_weights(workdir: Path, configs: dict[str, dict]) -> None:
    """CLIP ViT-B/32 and torchvision's VGG16 with random weights, where the overlay expects them."""
    import open_clip
    import torch
    import torchvision

    torch.manual_seed(0)
    clip = configs["cc3m-crq-366m"]["metrics"]["clip_weights"]
    vgg = configs["in256-cvq-350m"]["tokenizer"]["loss"]["vgg16_weights"]
    for p in (clip, vgg):
        (workdir / p).parent.mkdir(parents=True, exist_ok=True)
    torch.save(open_clip.create_model(configs["cc3m-crq-366m"]["metrics"]["clip_model"]).state_dict(),
               workdir / clip)
    torch.save(torchvision.models.vgg16().state_dict(), workdir / vgg)


# --- the run ----------------------------------------------------------------------------------------

def env() -> dict:
    # MASTER_ADDR: the test node calls itself `localhost` at 127.0.0.1 (tests/slurm/start.sh), a name
    # torch.distributed's rendezvous would otherwise resolve through the node list; one thread
    # per process, as in tests/test_slurm.py.
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                MASTER_ADDR="127.0.0.1")


@pytest.fixture(scope="module")
def rehearsal(slurm_cluster, tmp_path_factory):
    from drr.workflow.studies import Studies

    r = type("Rehearsal", (), {})()
    r.t0 = time.time()
    r.dir = copy_workflow(tmp_path_factory.mktemp("rehearsal"))
    studies = Studies(r.dir, scale="rehearsal")
    suite = yaml.safe_load((r.dir / "configs/workflow.yaml").read_text())["suites"]["paper"]
    configs = {e: studies.config(e) for e in suite["experiments"]}
    make_imagenet(r.dir / configs["in256-crq-821m"]["data"]["root"])
    make_cc3m(r.dir / configs["cc3m-crq-366m"]["data"]["root"], {"train": [10, 10], "val": [8]})
    tarballs = tmp_path_factory.mktemp("official-release")
    make_releases(tarballs, configs)
    make_unobtainable_weights(r.dir, configs)
    r.server = Server(tarballs)
    point_releases_at(r.dir, r.server.url)
    r.setup_s = time.time() - r.t0
    r.sacct_start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.t0 - 1))
    cmd = [*SNAKEMAKE, "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "2",
           "--keep-going", "all", "reports/claims.md", "--config", "suite=paper", "scale=rehearsal"]
    with open(r.dir / "run.log", "w") as log:
        proc = subprocess.run(cmd, cwd=r.dir, env=env(), stdout=log, stderr=subprocess.STDOUT, timeout=2700)
    r.rc, r.log = proc.returncode, (r.dir / "run.log").read_text()
    r.seconds = time.time() - r.t0
    r.server.close()
    print(f"\nrehearsal: set-up {r.setup_s:.0f} s, whole run {r.seconds:.0f} s ({r.dir})")
    return r


def cells_of(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def missing_rows(workdir: Path) -> dict[str, list[str]]:
    """Per paper table, the runs the plan says it shows whose row is absent or has no FID."""
    from drr.workflow.plan import Plan

    wf = yaml.safe_load((workdir / "configs/workflow.yaml").read_text())
    plan = Plan(workdir, dict(wf, suite="paper", scale="rehearsal"))
    out = {}
    for t in TABLES:
        lines = [line for line in (workdir / "reports" / f"{t}.md").read_text().splitlines()
                 if line.startswith("|")]
        header, rows = cells_of(lines[0]), [cells_of(line) for line in lines[2:]]
        # the first metric we measured (FID), and Table 2's CLIP score (random CLIP weights: computed, not meaningful)
        checked = [next(i for i, h in enumerate(header) if " ours" in h)]
        checked += [i for i, h in enumerate(header) if h.startswith("CLIP-s") and " ours" in h]
        models = plan.studies.reports[t]["layout"] == "models"
        bad = []
        for exp, variant in plan.report_runs(t):
            label = f"`{exp}`" if models else f"`{exp}/{variant}`"
            row = next((r for r in rows if r[-1] == label), None)
            for i in checked:
                if row is None or not re.fullmatch(r"\d+\.\d+( \[.*\])?", row[i]):
                    bad.append(f"{label}: {row and (header[i], row[i])}")
        if bad:
            out[t] = bad
    return out


def test_rehearsal_builds_every_paper_table_and_figure(rehearsal):
    assert rehearsal.rc == 0, rehearsal.log[-6000:]
    reports = rehearsal.dir / "reports"
    assert missing_rows(rehearsal.dir) == {}
    assert "**Scale `rehearsal`**" in (reports / "table1.md").read_text()
    for f in FIGURES + ["fig5"]:
        assert (reports / f"{f}.png").stat().st_size > 1000
    assert (reports / "claims.md").is_file() and (reports / "index.md").is_file()
    m = re.search(r"(\d+) of (\d+) steps \(100%\) done", rehearsal.log)
    assert m, "Snakemake did not report all steps done"
    print(f"rehearsal: {m.group(2)} jobs")


def test_the_releases_were_downloaded_checked_and_recorded(rehearsal):
    assert sorted(set(rehearsal.server.served)) == ["/cc3m.tar.gz", "/imagenet_1.4B_rqvae_50e.tar.gz"]
    weights = rehearsal.dir / "results/rehearsal/weights"
    for name, stages in (("imagenet_1.4B_rqvae_50e", ("stage1", "stage2")), ("cc3m", ("stage1",))):
        record = json.loads((weights / name / "release.json").read_text())
        assert record["sha256"] == (weights / f"{name}.tar.gz.sha256").read_text().split()[0]
        for s in stages:
            assert (weights / name / s / "model.pt").is_file()


def test_training_ran_as_two_processes_of_a_slurm_job(rehearsal):
    from test_slurm import sacct_jobs

    jobs = sacct_jobs(rehearsal.sacct_start)
    trained = ["in256-crq-371m", "in256-crq-821m", "in256-crq-1400m", "cc3m-crq-366m", "cc3m-crq-654m",
               "in256-cvq-350m"]
    for e in trained:
        run = rehearsal.dir / "results/transformers" / e
        log = "\n".join(p.read_text() for p in (run / "submitit").rglob("*_log.*"))
        assert "2 process(es)" in log, f"{e}: not trained by 2 processes\n{log[-1500:]}"
    gpu_jobs = [j for j in jobs if "gres/gpu=2" in j["ReqTRES"] or "gpu=2" in j["ReqTRES"]]
    assert len(gpu_jobs) >= len(trained), jobs
