"""Official releases as an experiment config names them: where a release's files live and the
record (release.json) that drr.workflow.release writes once a release is fetched and checked. The
import jobs read that record for their provenance; the plan reads where the files live."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from drr.core.errors import DrrError

PARTS = {"tokenizer": "stage1", "transformer": "stage2"}   # config section -> release subfolder


EXPECTED = tuple(f"{stage}/model.pt" for stage in PARTS.values())


MARKER = "release.json"


@dataclass(frozen=True)
class Release:
    """One official release as an experiment config names it (`<part>.release`)."""

    name: str                 # tarball name without .tar.gz, e.g. imagenet_1.4B_rqvae_50e
    url: str | None           # where to download it; None: only local sources
    size: int | None          # bytes of the tarball; None: unknown (then not checked)
    sha256: str | None        # expected sha256 of the tarball; None: recorded, not checked
    dir: str                  # folder holding <name>/ and <name>.tar.gz
    mirror: str | None        # local folder holding <name>.tar.gz; None: none

    @property
    def folder(self) -> Path:
        return Path(self.dir) / self.name

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    @property
    def tarball(self) -> Path:
        return Path(self.dir) / f"{self.name}.tar.gz"

    @property
    def part(self) -> Path:
        return Path(f"{self.tarball}.part")

    @property
    def sha_file(self) -> Path:
        return Path(f"{self.tarball}.sha256")


def _inside(path: str, folder: Path) -> bool:
    """Whether `path` lies strictly below `folder` (as written: both relative, or both absolute)."""
    p, f = os.path.normpath(path), os.path.normpath(folder)
    if os.path.isabs(p) != os.path.isabs(f) or p == f:
        return False
    return os.path.commonpath([p, f]) == f


def release_of(cfg: dict, part: str) -> Release | None:
    """The release `cfg[part]` imports its checkpoint from, or None (`<part>.release.name` null).

    `<part>.checkpoint` must then name a file inside the release folder: one key says where the
    file is read from, the other where it comes from; a mismatch is a DrrError naming both."""
    block = cfg[part]["release"]
    if block["name"] is None:
        return None
    rel = Release(**{k: block[k] for k in ("name", "url", "size", "sha256", "dir", "mirror")})
    ckpt = cfg[part]["checkpoint"]
    if ckpt is None or not _inside(ckpt, rel.folder):
        raise DrrError(f"key '{part}.checkpoint' is {ckpt!r}, not a file inside the release folder "
                       f"{rel.folder}/ ({part}.release.dir + name); set it to "
                       f"{rel.folder}/{PARTS[part]}/model.pt or set {part}.release.name to null")
    return rel


def read_record(cfg: dict, part: str) -> dict | None:
    """The release.json of the release `cfg[part]` imports from (None: no release), for the
    import's provenance; DrrError when it is absent or unreadable (run fetch_release first)."""
    rel = release_of(cfg, part)
    if rel is None:
        return None
    try:
        return json.loads(rel.marker.read_text())
    except (OSError, ValueError) as e:
        raise DrrError(f"{rel.marker}: release record not readable ({e}); fetch the release with "
                       f"python -m drr.workflow.release --config ... --out {rel.marker}") from None
