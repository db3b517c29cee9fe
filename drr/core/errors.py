"""User-facing errors: one line that names the file and the field, and a non-zero exit."""

import errno
import sys
from contextlib import contextmanager

# Write failures that are the machine's state, not a bug: a full disk or quota, a read-only or
# forbidden place. They end a command with one line like a DrrError; outputs are written to a
# temporary name and renamed (drr.core.provenance.atomic_path), so nothing partial is left.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class DrrError(Exception):
    """An error caused by the user's input (a config, a data file, a checkpoint).

    Its message is a single line naming the offending file and field; CLIs print it without a
    traceback and exit with status 2.
    """


@contextmanager
def user_errors():
    """Turn DrrError, and an OSError of `WRITE_ERRNOS`, into `error: <message>` on stderr and exit
    status 2."""
    try:
        yield
    except DrrError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {e.filename or 'an output file'}: cannot be written ({e.strerror})",
              file=sys.stderr)
        raise SystemExit(2)
