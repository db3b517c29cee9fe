"""User-facing errors: one line that names the file and the field, and a non-zero exit."""

import sys
from contextlib import contextmanager


class DrrError(Exception):
    """An error caused by the user's input (a config, a data file, a checkpoint).

    Its message is a single line naming the offending file and field; CLIs print it without a
    traceback and exit with status 2.
    """


@contextmanager
def user_errors():
    """Turn DrrError into `error: <message>` on stderr and exit status 2."""
    try:
        yield
    except DrrError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
