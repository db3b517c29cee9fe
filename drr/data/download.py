"""Download one file with urllib, check its sha256, and rename it into place atomically.

Works with any URL urllib opens, file:// included (the tests use that to exercise the real path).
The file is written to a temporary name next to `dest` (drr.core.provenance.atomic_path) and renamed only
after the sums match, so a failed or interrupted download never leaves a file in the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from drr.core.errors import DrrError
from drr.core.files import atomic_path

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 4 << 20  # progress lines only for files this large (or of unknown size)


def is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_content(path) -> bytes:
    """A file's bytes, gunzipped when it is gzip (detected by its magic bytes, not its name)."""
    path = Path(path)
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DrrError(f"{path}: cannot read ({e})") from None


def content_sha256(path) -> tuple[str, int]:
    """(sha256, size) of a file's content, decompressed when it is gzip, streamed."""
    h = hashlib.sha256()
    size = 0
    try:
        opener = gzip.open if is_gzip(path) else open
        with opener(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
                size += len(block)
    except (OSError, EOFError, zlib.error) as e:
        raise DrrError(f"{path}: cannot read ({e})") from None
    return h.hexdigest(), size


def progress_line(name: str, done: int, total: int | None, start: float, base: int = 0) -> None:
    """One progress line of a download on stderr: bytes so far, rate and time left. `base`: bytes
    that were already there when this attempt started (a resumed download), left out of the rate."""
    rate = (done - base) / max(time.monotonic() - start, 1e-6)
    if total:
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s"
        line = (f"  {name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done / total:.0f}%, "
                f"{rate / 1e6:.1f} MB/s, ETA {eta_text})")
    else:
        line = f"  {name}: {done / 1e6:.1f} MB ({rate / 1e6:.1f} MB/s)"
    print(line, file=sys.stderr, flush=True)


def download(url: str, dest, sha256: str | None = None, decompressed_sha256: str | None = None,
             *, decompressed_size: int | None = None, timeout: float = 60.0,
             quiet: bool = False) -> Path:
    """Fetch `url` to `dest`; check the sums; rename into place. Returns `dest`.

    sha256: expected sum of the bytes as fetched. decompressed_sha256 / decompressed_size: expected
    sum / length of the gunzipped content (for .gz files whose packing may vary while the content
    does not). A mismatch raises DrrError naming the file and both sums, and leaves nothing at
    `dest`.
    """
    dest = Path(dest)
    name = dest.name
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                length = resp.headers.get("Content-Length") if resp.headers else None
                total = int(length) if length and length.isdigit() else None
                show = not quiet and (total is None or total >= PROGRESS_MIN_BYTES)
                if show:
                    print(f"downloading {url} -> {dest}", file=sys.stderr, flush=True)
                h = hashlib.sha256()
                done, start, next_report = 0, time.monotonic(), 0.1
                while block := resp.read(CHUNK):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if show and total and done / total >= next_report and done < total:
                        progress_line(name, done, total, start)
                        next_report += 0.1
                if show:
                    progress_line(name, done, total or done, start)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DrrError(f"{url}: download failed ({reason})") from None
        if total is not None and done != total:
            raise DrrError(f"{url}: download truncated ({done} of {total} bytes)")
        got = h.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise DrrError(f"{name} (from {url}): sha256 mismatch: expected {sha256.lower()}, "
                           f"got {got}; the download was discarded")
        if decompressed_sha256 is not None or decompressed_size is not None:
            got_c, size_c = content_sha256(tmp)
            if decompressed_sha256 is not None and got_c != decompressed_sha256.lower():
                raise DrrError(f"{name} (from {url}): sha256 of the decompressed content mismatch: "
                               f"expected {decompressed_sha256.lower()}, got {got_c}; "
                               f"the download was discarded")
            if decompressed_size is not None and size_c != decompressed_size:
                raise DrrError(f"{name} (from {url}): decompressed size {size_c} bytes, expected "
                               f"{decompressed_size}; the download was discarded")
    return dest
