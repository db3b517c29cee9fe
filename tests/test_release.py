"""drr.workflow.release: fetching an official release from files in place, a mirror or an HTTP server (with
Range resume), the refusals (damaged, unsafe or mismatching tarballs, wrong key names), and the
workflow's plan of fetch_release before the import rules. Everything on 127.0.0.1 and tmp_path."""

import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch
import yaml

from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.core.releases import read_record, release_of
from drr.workflow.release import expected_keys, fetch

from workflow_fixtures import REPO, SNAKEMAKE, copy_workflow, planned_jobs

NAME = "imagenet_1.4B_rqvae_50e"
CONTEXTUAL = REPO / "configs/experiments/in256-crq-821m.yaml"   # imports stage1 only
AR = REPO / "configs/experiments/in256-rq-1400m-ar.yaml"        # imports stage1 and stage2


# --- a release in the official layout, with the right key names and tiny tensors ------------------

@pytest.fixture(scope="module")
def keys():
    cfg = load_config(AR)
    return {"stage1": sorted(expected_keys(cfg, "tokenizer")),
            "stage2": sorted(expected_keys(cfg, "transformer"))}


def model_bytes(names) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {k: torch.zeros(1) for k in names}}, buf)
    return buf.getvalue()


def make_tarball(path: Path, keys, extra=(), drop=None) -> bytes:
    """<NAME>/stage{1,2}/{model.pt,config.yaml} as <path> (.tar.gz); `extra`: more TarInfo members
    (with bytes or None); `drop`: a stage1 key to leave out. Returns the tarball's bytes."""
    stage1 = [k for k in keys["stage1"] if k != drop]
    files = {f"{NAME}/stage1/model.pt": model_bytes(stage1), f"{NAME}/stage1/config.yaml": b"arch: {}\n",
             f"{NAME}/stage2/model.pt": model_bytes(keys["stage2"]), f"{NAME}/stage2/config.yaml": b"arch: {}\n"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path.read_bytes()


def overrides(tmp_path, url=None, mirror=None, sha256=None, parts=("tokenizer",)) -> dict:
    wdir = tmp_path / "weights"
    out = {}
    for part in parts:
        stage = "stage1" if part == "tokenizer" else "stage2"
        out[part] = {"checkpoint": str(wdir / NAME / stage / "model.pt"),
                     "release": {"name": NAME, "dir": str(wdir), "url": url, "sha256": sha256,
                                 "mirror": mirror and str(mirror)}}
    return out


def config(tmp_path, experiment=CONTEXTUAL, **kw) -> dict:
    parts = ("tokenizer", "transformer") if experiment == AR else ("tokenizer",)
    return load_config(experiment, overrides(tmp_path, parts=parts, **kw))


def marker(tmp_path) -> Path:
    return tmp_path / "weights" / NAME / "release.json"


# --- an HTTP server that honours Range, and can drop the first response midway ----------------------

class Server:
    def __init__(self, data: bytes, drop_first_at: int | None = None):
        self.data, self.drop_at, self.ranges = data, drop_first_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = server.data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_at is not None:   # send part of the body, then close the connection
                    cut, server.drop_at = server.drop_at, None
                    self.wfile.write(body[:cut])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(data, **kw):
        servers.append(Server(data, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def run_cli(tmp_path, experiment=CONTEXTUAL, **kw):
    """python -m drr.workflow.release in a subprocess (its exit status and stderr are the test)."""
    extra = tmp_path / "override.yaml"
    extra.write_text(yaml.safe_dump(overrides(tmp_path, **kw)))
    return subprocess.run([sys.executable, "-m", "drr.workflow.release", "--config", str(experiment),
                           "--config", str(extra), "--out", str(marker(tmp_path)), "--backoff", "0"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def one_error_line(stderr: str) -> str:
    """The error line, checked to be the one error and the last line (progress lines come first)."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in stderr, stderr
    return errors[0]


# --- the routes -------------------------------------------------------------------------------------

def test_files_in_place_are_used_without_network(tmp_path, keys, serve):
    tar = tmp_path / "t.tar.gz"
    make_tarball(tar, keys)
    with tarfile.open(tar) as tf:
        tf.extractall(tmp_path / "weights", filter="data")   # as a user who unpacked it by hand
    server = serve(b"")
    cfg = config(tmp_path, url=server.url)
    record = fetch(cfg, marker(tmp_path))
    assert server.ranges == [] and record["source"] == "in place"
    assert read_record(cfg, "tokenizer") == record   # what the import puts in its provenance
    assert record["checked"] == {"stage1/model.pt": f"{len(keys['stage1'])} state-dict key names "
                                                    "of the tokenizer config"}
    assert set(record["files"]) == {"stage1/model.pt", "stage1/config.yaml", "stage2/model.pt",
                                    "stage2/config.yaml"}
    assert marker(tmp_path).is_file()


def test_mirror_is_used_without_network(tmp_path, keys, serve):
    data = make_tarball(tmp_path / "mirror" / f"{NAME}.tar.gz", keys)
    server = serve(b"")
    record = fetch(config(tmp_path, url=server.url, mirror=tmp_path / "mirror"), marker(tmp_path))
    digest = hashlib.sha256(data).hexdigest()
    assert server.ranges == [] and record["source"].startswith("mirror")
    assert record["sha256"] == digest and record["size"] == len(data)
    assert (tmp_path / "weights" / f"{NAME}.tar.gz.sha256").read_text().split()[0] == digest
    assert (tmp_path / "weights" / NAME / "stage2" / "model.pt").is_file()
    assert (tmp_path / "mirror" / f"{NAME}.tar.gz").read_bytes() == data   # read in place, kept


def test_download_resumes_after_a_dropped_connection(tmp_path, keys, serve):
    data = make_tarball(tmp_path / "src.tar.gz", keys)
    server = serve(data, drop_first_at=len(data) // 2)
    record = fetch(config(tmp_path, experiment=AR, url=server.url), marker(tmp_path),
                   retries=2, backoff_s=0)
    # the first request asks for everything and is cut; the second resumes where it stopped
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["source"].startswith("download")
    assert (tmp_path / "weights" / f"{NAME}.tar.gz").read_bytes() == data
    assert not (tmp_path / "weights" / f"{NAME}.tar.gz.part").exists()
    assert set(record["checked"]) == {"stage1/model.pt", "stage2/model.pt"}   # both parts imported


def test_a_truncated_tarball_is_refused_with_one_line_and_exit_2(tmp_path, keys):
    data = make_tarball(tmp_path / "src.tar.gz", keys)
    placed = tmp_path / "weights" / f"{NAME}.tar.gz"
    placed.parent.mkdir()
    placed.write_bytes(data[: len(data) // 2])
    run = run_cli(tmp_path)
    assert run.returncode == 2
    line = one_error_line(run.stderr)
    assert str(placed) in line and "not a complete .tar.gz archive" in line
    assert placed.stat().st_size == len(data) // 2           # the user's file is left as it is
    assert not (tmp_path / "weights" / NAME).exists()         # nothing half-unpacked


def test_a_file_that_is_no_tarball_is_refused(tmp_path):
    placed = tmp_path / "weights" / f"{NAME}.tar.gz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"<html>not found</html>" * 10)
    with pytest.raises(DrrError, match="not a complete .tar.gz archive") as e:
        fetch(config(tmp_path), marker(tmp_path))
    assert "\n" not in str(e.value)


def test_a_sha256_mismatch_is_refused_with_one_line_and_exit_2(tmp_path, keys):
    data = make_tarball(tmp_path / "mirror" / f"{NAME}.tar.gz", keys)
    run = run_cli(tmp_path, mirror=tmp_path / "mirror", sha256="0" * 64)
    assert run.returncode == 2
    line = one_error_line(run.stderr)
    assert f"sha256 {hashlib.sha256(data).hexdigest()}, expected {'0' * 64}" in line
    assert str(tmp_path / "mirror" / f"{NAME}.tar.gz") in line
    assert not (tmp_path / "weights" / NAME).exists() and not marker(tmp_path).exists()


def test_a_downloaded_sha256_mismatch_discards_the_download(tmp_path, keys, serve):
    data = make_tarball(tmp_path / "src.tar.gz", keys)
    server = serve(data)
    with pytest.raises(DrrError, match="the download was discarded"):
        fetch(config(tmp_path, url=server.url, sha256="f" * 64), marker(tmp_path), backoff_s=0)
    assert not list((tmp_path / "weights").glob(f"{NAME}.tar.gz*"))


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    data = b"x" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    return info, data


@pytest.mark.parametrize("bad, why", [
    (member("../evil"), "leaves the release folder"),
    (member(f"{NAME}/stage1/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (member(f"{NAME}/stage1/hard", tarfile.LNKTYPE, f"{NAME}/stage1/config.yaml"), "is a link"),
    (member("/abs/path"), "has an absolute path"),
    (member(f"{NAME}/dev", tarfile.CHRTYPE), "is a device or special file"),
])
def test_unsafe_members_are_refused(tmp_path, keys, bad, why):
    make_tarball(tmp_path / "weights" / f"{NAME}.tar.gz", keys, extra=[bad])
    with pytest.raises(DrrError) as e:
        fetch(config(tmp_path), marker(tmp_path))
    assert f"member {bad[0].name!r} {why}" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "weights" / NAME).exists()
    assert not [p for p in (tmp_path / "weights").iterdir() if p.name.endswith(".tmp")]


def test_wrong_key_names_are_refused_naming_the_key(tmp_path, keys):
    drop = keys["stage1"][0]
    make_tarball(tmp_path / "weights" / f"{NAME}.tar.gz", keys, drop=drop)
    with pytest.raises(DrrError, match=f"key '{drop}' is missing"):
        fetch(config(tmp_path), marker(tmp_path))
    assert not marker(tmp_path).exists()


def test_a_checkpoint_outside_its_release_folder_is_an_error(tmp_path):
    cfg = config(tmp_path)
    cfg["tokenizer"]["checkpoint"] = "elsewhere/model.pt"
    with pytest.raises(DrrError, match="not a file inside the release folder"):
        release_of(cfg, "tokenizer")


# --- the workflow -----------------------------------------------------------------------------------

def test_paper_dry_run_fetches_each_release_once_before_the_imports(tmp_path):
    cwd = copy_workflow(tmp_path, official_standins=True)
    counts = planned_jobs(cwd, "--profile", "slurm", "--config", "suite=paper")
    assert counts["fetch_release"] == 2                  # imagenet_1.4B_rqvae_50e and cc3m
    assert counts["import_tokenizer"] == 2 and counts["import_transformer"] == 1  # ImageNet (one file, every ImageNet experiment, AR included), CC-3M
    dag = subprocess.run([*SNAKEMAKE, "results/transformers/in256-rq-1400m-ar/checkpoint.pt",
                          "--dag", "--config", "suite=paper"],
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert dag.returncode == 0, dag.stderr[-2000:]
    node = {}
    for line in dag.stdout.splitlines():
        if "[label = \"" in line:
            node[line.split("[")[0].strip()] = line.split('label = "')[1].split("\\n")[0].split('"')[0]
    edges = {(node[a.strip()], node[b.strip().rstrip(";")]) for a, b in
             (line.split("->") for line in dag.stdout.splitlines() if "->" in line)}
    assert ("fetch_release", "import_tokenizer") in edges and ("fetch_release", "import_transformer") in edges


def test_the_import_reads_a_fetched_release_and_records_it(tmp_path, serve):
    # the tiny RQ-VAE with its real shapes, in the official layout: fetch, then import it
    from drr.tokenizer.import_official import import_official
    from drr.tokenizer.io import load_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    from drr.tokenizer.official import save_official

    tiny = REPO / "configs/experiments/tiny.yaml"
    cfg = load_config(tiny, overrides(tmp_path))
    torch.manual_seed(0)
    save_official(RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])), tmp_path / "src" / "stage1" / "model.pt")
    (tmp_path / "src" / "stage2").mkdir()
    (tmp_path / "src" / "stage2" / "model.pt").write_bytes(b"not read: tiny imports stage1 only")
    (tmp_path / "mirror").mkdir()
    with tarfile.open(tmp_path / "mirror" / f"{NAME}.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src", arcname=NAME)
    cfg = load_config(tiny, overrides(tmp_path, mirror=tmp_path / "mirror"))
    record = fetch(cfg, marker(tmp_path))
    out = import_official(cfg, tmp_path / "tok" / "checkpoint.pt")
    _, ckpt, _ = load_tokenizer(out)
    assert ckpt["provenance"]["release"] == record and record["source"].startswith("mirror")
