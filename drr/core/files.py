"""Safe file writes: every file drr writes goes to a temporary name in the same folder and is
renamed into place, so a killed job never leaves a half-written file that looks finished; and no
write goes through a link planted where an output belongs.

- `atomic_path` creates the temporary with O_EXCL (``tempfile.mkstemp``: a link or any other file
  at that name is never opened), and the final ``rename`` replaces whatever is at the output's name,
  a symbolic link included, instead of writing into the file the link points to. The data and the
  folder entry are flushed to disk (fsync) before and after the rename, so a crash of the machine
  cannot leave a renamed but empty output.
- `open_regular` opens a file that is written in place (a lock file, an appended log) without
  following a link at its last component (O_NOFOLLOW) and refuses anything that is not a regular
  file, in one line naming it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from drr.core.errors import DrrError


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data, or a folder's entries, to disk (a file is opened without following a
    link; a folder may be one, as a results folder on another disk often is)."""
    path = Path(path)
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync folders
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary is an empty file created for this call alone (O_EXCL), with the permissions a
    new file gets (0666 less the umask); the block writes it (opening it again truncates it). To
    write a folder, remove the file and make a folder of that name. After the block the temporary
    is synced and renamed onto `path`: a link at `path` is replaced, not written through, and a
    folder at `path` is refused in one line unless the temporary is a folder too (it is then
    replaced whole). On error the temporary is removed and `path` is left untouched; an OSError
    without a file name gets `path` as its name, so that the one-line error names the output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        try:
            yield tmp
            tmp_is_dir = tmp.is_dir() and not tmp.is_symlink()
            if path.is_dir() and not path.is_symlink() and not tmp_is_dir:
                raise DrrError(f"{path}: is a folder, and this output is a file; remove the "
                               f"folder or name another output")
            fsync_path(tmp)
            if tmp_is_dir and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
            fsync_path(path.parent)
        except OSError as e:  # name the output, not the temporary, in the one-line error
            if e.filename is None or str(e.filename) == str(tmp):
                e.filename = str(path)
            raise
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            tmp.unlink()


def open_regular(path: str | os.PathLike, mode: str = "a"):
    """Open `path` for writing in place ('w', 'a', 'a+', with or without 'b'), creating it if
    needed, without following a symbolic link at its last component; DrrError naming the file if
    a link or anything but a regular file (a FIFO, a folder) is there. 'w' truncates only after
    that check, so nothing but a regular file of this name is ever emptied."""
    base = mode.replace("b", "")
    if base not in ("w", "a", "a+"):
        raise ValueError(f"open_regular: mode {mode!r}")
    path = Path(path)
    flags = (os.O_RDWR if base == "a+" else os.O_WRONLY) | os.O_CREAT | os.O_NOFOLLOW \
        | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_APPEND if base.startswith("a") else 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DrrError(f"{path}: is a symbolic link; drr does not write through a link at an "
                           f"output's name (remove the link)") from None
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise DrrError(f"{path}: is not a regular file; remove it") from None
        e.filename = e.filename or str(path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DrrError(f"{path}: is not a regular file; remove it")
        os.set_blocking(fd, True)
        if base == "w":
            os.ftruncate(fd, 0)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
