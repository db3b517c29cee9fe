"""Fetch an official rq-vae-transformer release into place, check it, and record what was fetched.

    python -m drr.workflow.release --config configs/experiments/in256-rq-1400m-ar.yaml \
        --out weights/rq-vae-transformer/imagenet_1.4B_rqvae_50e/release.json

A release is one tarball of the official repository (github.com/kakaobrain/rq-vae-transformer),
``<name>.tar.gz``, holding ``stage1/`` (the RQ-VAE) and ``stage2/`` (the RQ-Transformer), each a
``model.pt`` and its ``config.yaml``. An experiment names the release a checkpoint comes from in
``tokenizer.release`` / ``transformer.release`` ({name, url, size, sha256, dir, mirror}); its
``checkpoint`` key names the file inside ``<dir>/<name>/`` that drr imports (`release_of`).

The release folder ``<dir>/<name>/`` is made from the first source that exists:

1. the files already unpacked there (the offline route: nothing is read but the files);
2. the tarball ``<dir>/<name>.tar.gz``;
3. ``<mirror>/<name>.tar.gz`` (a local folder, e.g. a shared file system; read in place);
4. the URL, downloaded into ``<dir>/<name>.tar.gz.part`` with HTTP Range resume (a rerun or a
   retry continues where the last attempt stopped), progress and ETA on stderr.

A tarball's size is checked against `size` (when known) and its sha256 against `sha256` (when
set); the sha256 is written beside it as ``<dir>/<name>.tar.gz.sha256`` (sha256sum format). The
archive is unpacked member by member into a temporary folder, refusing absolute paths, ``..``,
links and device files, and renamed into place. The folder must then hold stage1/model.pt and
stage2/model.pt; each file the config imports is read (``weights_only``, memory-mapped) and its
state-dict key names checked against the model drr builds from the config (shapes are checked by
the import itself). ``release.json`` (name, url, size, sha256, source, files) is written last:
its presence means the release is complete, and the import rules record it in their provenance.

Every failure is one line (DrrError, exit status 2); nothing already in place is removed, except a
download whose sha256 or size is wrong.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import open_regular, sha256_file, write_json, write_text
from drr.core.lock import hold
from drr.core.releases import EXPECTED, MARKER, PARTS, Release, release_of
from drr.data.download import progress_line

CHUNK = 1 << 20
PROGRESS_EVERY_S = 10.0   # seconds between progress lines of a download








# --- sources ---------------------------------------------------------------------------------------

def _complete(folder: Path, needed) -> list[str]:
    """The files of `needed` (paths relative to `folder`) that are missing there."""
    return [n for n in needed if not (folder / n).is_file()]


class _Retry(Exception):
    """A download attempt that failed in a way a later attempt can recover from (cut connection,
    timeout, server error); the .part file keeps what arrived."""


def _total_of(resp, have: int) -> int | None:
    """The full size of the file from a 206's Content-Range or a 200's Content-Length."""
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _attempt(rel: Release, timeout: float) -> None:
    """One download attempt of `rel.url` into `rel.part`, resuming from its current size."""
    have = rel.part.stat().st_size if rel.part.exists() else 0
    if rel.size is not None and have > rel.size:  # not a prefix of this file: start again
        have = 0
        rel.part.unlink()
    if rel.size is not None and have == rel.size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(rel.url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:   # nothing after `have`: the .part already holds the whole file
            return
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"HTTP {e.code}") from None
        raise DrrError(f"{rel.url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Retry(str(getattr(e, "reason", None) or e)) from None
    with resp:
        if have and resp.status != 206:   # the server ignored Range: it sends the whole file
            have = 0
        total = _total_of(resp, have)
        if rel.size is not None and total is not None and total != rel.size:
            raise DrrError(f"{rel.url}: the server offers {total} bytes, expected {rel.size} "
                           f"(release.size of {rel.name}); nothing was written")
        if have:
            print(f"resuming {rel.url} at {have / 1e6:.0f} MB", file=sys.stderr, flush=True)
        else:
            print(f"downloading {rel.url} -> {rel.tarball}", file=sys.stderr, flush=True)
        done, start, last = have, time.monotonic(), time.monotonic()
        with open_regular(rel.part, "ab" if have else "wb") as out:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException) as e:
                    raise _Retry(f"connection lost at {done} bytes ({e})") from None
                if not block:
                    break
                out.write(block)   # a write failure (disk full) is not retried: user_errors says so
                done += len(block)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    progress_line(rel.tarball.name, done, total, start, have)
                    last = time.monotonic()
        progress_line(rel.tarball.name, done, total, start, have)
        if total is not None and done < total:
            raise _Retry(f"connection closed at {done} of {total} bytes")


def download(rel: Release, *, retries: int = 4, backoff_s: float = 5.0, timeout: float = 60.0) -> Path:
    """Download `rel.url` into `rel.part` (resumed across attempts and runs), up to `retries`
    retries with exponential backoff; returns the finished .part file."""
    if not rel.url:
        raise DrrError(f"{rel.folder}: release {rel.name} not found (no {rel.folder}/stage1, no "
                       f"{rel.tarball}, no mirror) and release.url is null")
    rel.part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _attempt(rel, timeout)
            return rel.part
        except _Retry as e:
            if attempt == retries:
                raise DrrError(f"{rel.url}: download failed after {retries + 1} attempts ({e}); "
                               f"{rel.part} keeps what arrived: run again to resume") from None
            wait = backoff_s * 2 ** attempt
            print(f"  {e}; retrying in {wait:.0f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")


def verify(rel: Release, tarball: Path, downloaded: bool) -> str:
    """Check `tarball` against release.size and release.sha256; returns its sha256. A download
    that fails is removed (a rerun fetches it again); a tarball the user placed is left as it is."""
    what = "the download was discarded" if downloaded else "the file was left as it is"
    size = tarball.stat().st_size
    if rel.size is not None and size != rel.size:
        if downloaded:
            tarball.unlink()
        raise DrrError(f"{tarball}: {size} bytes, expected {rel.size} (release.size of {rel.name}); {what}")
    digest = sha256_file(tarball)
    if rel.sha256 is not None and digest != rel.sha256.lower():
        if downloaded:
            tarball.unlink()
        raise DrrError(f"{tarball}: sha256 {digest}, expected {rel.sha256.lower()} "
                       f"(release.sha256 of {rel.name}); {what}")
    return digest


# --- unpacking -------------------------------------------------------------------------------------

def _check_member(m: tarfile.TarInfo, tarball: Path) -> None:
    """Refuse a member that could write outside the folder or is not a plain file or folder."""
    parts = PurePosixPath(m.name).parts
    if m.name.startswith(("/", "\\")) or PurePosixPath(m.name).is_absolute():
        why = "has an absolute path"
    elif ".." in parts:
        why = "leaves the release folder (..)"
    elif m.issym() or m.islnk():
        why = f"is a link (to {m.linkname!r})"
    elif not (m.isfile() or m.isdir()):
        why = "is a device or special file"
    else:
        return
    raise DrrError(f"{tarball}: member {m.name!r} {why}; refused, nothing was unpacked")


def _root(tmp: Path) -> Path:
    """The release root inside an unpacked archive: the archive's single top folder, if it has
    exactly one and no stage1/ at the top (the official tarballs hold <name>/stage1/...)."""
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not (tmp / "stage1").exists():
        return entries[0]
    return tmp


def unpack(rel: Release, tarball: Path) -> None:
    """Unpack `tarball` to a temporary folder beside `rel.folder`, check it, rename it into place."""
    if rel.folder.exists():
        if any(rel.folder.iterdir()):
            raise DrrError(f"{rel.folder}: exists but lacks {', '.join(_complete(rel.folder, EXPECTED))}; "
                           f"move it away to unpack {tarball} there")
        rel.folder.rmdir()   # the empty folder Snakemake makes for the marker
    tmp = Path(tempfile.mkdtemp(prefix=f".{rel.name}.", suffix=".tmp", dir=rel.dir))
    try:
        print(f"unpacking {tarball}", file=sys.stderr, flush=True)
        try:
            with tarfile.open(tarball, "r:gz") as tf:
                for m in tf:
                    _check_member(m, tarball)
                    tf.extract(m, tmp, filter="data")  # the filter repeats the checks above
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DrrError(f"{tarball}: not a complete .tar.gz archive ({e}); delete it to "
                           f"fetch it again") from None
        root = _root(tmp)
        missing = _complete(root, EXPECTED)
        if missing:
            raise DrrError(f"{tarball}: holds no {', '.join(missing)} (an official release holds "
                           f"{rel.name}/stage1/model.pt and {rel.name}/stage2/model.pt)")
        os.replace(root, rel.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_unpacked(rel: Release, **download_args) -> tuple[str, str | None, int | None]:
    """Make `rel.folder` hold the release from the first source that exists (module docstring);
    returns (source, sha256 and size of the tarball). Files found in place are not re-hashed:
    the sha256 is the one recorded beside the tarball when it was unpacked, if any."""
    if not _complete(rel.folder, EXPECTED):
        recorded = rel.sha_file.read_text().split()[0] if rel.sha_file.is_file() else None
        return "in place", recorded, rel.size
    mirror = Path(rel.mirror) / rel.tarball.name if rel.mirror else None
    if rel.tarball.is_file():
        source, tarball = "tarball", rel.tarball
        digest = verify(rel, tarball, downloaded=False)
    elif mirror is not None and mirror.is_file():
        source, tarball = f"mirror {mirror}", mirror
        digest = verify(rel, tarball, downloaded=False)
    else:
        source, tarball = f"download {rel.url}", rel.tarball
        part = download(rel, **download_args)
        digest = verify(rel, part, downloaded=True)
        os.replace(part, tarball)
    write_text(rel.sha_file, f"{digest}  {rel.tarball.name}\n")
    unpack(rel, tarball)
    return source, digest, tarball.stat().st_size


# --- key check -------------------------------------------------------------------------------------

def expected_keys(cfg: dict, part: str) -> set[str]:
    """The official state-dict key names of `cfg`'s tokenizer (RQ-VAE) or transformer (AR
    RQ-Transformer): those of the model drr builds and imports into, on the meta device."""
    import torch

    if part == "tokenizer":
        from drr.tokenizer.model import RQVAE, RQVAEConfig

        with torch.device("meta"):
            return set(RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).state_dict())
    from drr.transformer.model import TransformerConfig
    from drr.transformer.official import official_shapes

    return set(official_shapes(TransformerConfig.from_experiment(cfg)))


def check_keys(path: Path, expected: set[str], part: str, max_listed: int = 3) -> int:
    """DrrError naming the file and the first keys unless its state dict has exactly `expected`'s
    names; returns their number. The file is memory-mapped: a 5 GB checkpoint is not read whole."""
    from drr.core.checkpoint import read_official_state_dict

    layout = "RQ-VAE" if part == "tokenizer" else "RQ-Transformer"
    got = set(read_official_state_dict(path, layout, mmap=True))
    problems = [f"key '{k}' is missing" for k in sorted(expected - got)]
    problems += [f"key '{k}' is unexpected for this {part} config" for k in sorted(got - expected)]
    if problems:
        more = f" (and {len(problems) - max_listed} more)" if len(problems) > max_listed else ""
        raise DrrError(f"{path}: {'; '.join(problems[:max_listed])}{more}")
    return len(got)


# --- the command -----------------------------------------------------------------------------------

def releases_at(cfg: dict, marker: Path) -> dict[str, Release]:
    """part -> release of the parts of `cfg` whose release folder holds `marker`."""
    uses = {p: r for p in PARTS if (r := release_of(cfg, p)) is not None
            and os.path.abspath(r.marker) == os.path.abspath(marker)}
    if not uses:
        raise DrrError(f"{marker}: no release of this config is unpacked there (tokenizer.release / "
                       f"transformer.release: <dir>/<name>/{MARKER})")
    if len(set(uses.values())) > 1:
        raise DrrError(f"{marker}: tokenizer.release and transformer.release name the same release "
                       f"with different settings; make them equal")
    return uses


def fetch(cfg: dict, marker: Path, **download_args) -> dict:
    """Fetch and check the release whose folder holds `marker`; write `marker`; return its record."""
    uses = releases_at(cfg, marker)
    rel = next(iter(uses.values()))
    with hold(rel.dir, f"release-{rel.name}"):
        source, digest, size = ensure_unpacked(rel, **download_args)
        checked = {}
        for part, r in uses.items():
            rel_path = Path(os.path.relpath(cfg[part]["checkpoint"], r.folder)).as_posix()
            n = check_keys(Path(cfg[part]["checkpoint"]), expected_keys(cfg, part), part)
            checked[rel_path] = f"{n} state-dict key names of the {part} config"
        files = {p.relative_to(rel.folder).as_posix(): p.stat().st_size
                 for p in sorted(rel.folder.rglob("*")) if p.is_file() and p.name != MARKER}
        record = {"name": rel.name, "url": rel.url, "size": size, "sha256": digest,
                  "source": source, "files": files, "checked": checked}
        write_json(marker, record)
    print(f"release {rel.name} ready in {rel.folder} ({source})", file=sys.stderr)
    return record




def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help=f"<dir>/<name>/{MARKER} of the release")
    p.add_argument("--retries", type=int, default=4, help="download retries after the first attempt")
    p.add_argument("--backoff", type=float, default=5.0, help="seconds before the first retry (doubling)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    args = p.parse_args(argv)
    with user_errors():
        fetch(resolve(args), args.out, retries=args.retries, backoff_s=args.backoff, timeout=args.timeout)


if __name__ == "__main__":
    main()
