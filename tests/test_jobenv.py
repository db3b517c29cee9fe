"""The jobs' environment (drr/workflow/jobenv.py, workflow key glibc_tunables): what it sets, what it leaves
alone, what it refuses, and that glibc then really keeps freed memory (no page faults on reuse)."""

import os
import subprocess
import sys

import pytest
import yaml

from drr.core.errors import DrrError
from drr.workflow import jobenv

from workflow_fixtures import REPO

RETAIN = jobenv.RETAIN_FREED


def test_the_workflow_default_is_off():
    # about twice the peak memory (drr/workflow/jobenv.py): opt-in only
    assert yaml.safe_load((REPO / "configs/workflow.yaml").read_text())["glibc_tunables"] is None


def test_a_value_is_set_for_the_jobs():
    assert jobenv.job_environment(RETAIN, {}) == {"GLIBC_TUNABLES": RETAIN}


def test_null_sets_nothing():
    assert jobenv.job_environment(None, {}) == {}


def test_the_users_own_tunables_are_kept():
    assert jobenv.job_environment(RETAIN, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {}


@pytest.mark.parametrize("bad", ["glibc.malloc.mmap_max=0; rm -rf /", "mmap_max=0", "glibc.malloc.x=abc", 7, ""])
def test_a_bad_value_is_one_line_naming_file_and_key(bad):
    with pytest.raises(DrrError) as e:
        jobenv.job_environment(bad, {})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("configs/workflow.yaml: glibc_tunables")


# Allocate, touch and free a 256 MiB block twice; print the minor page faults of the second time.
FAULTS = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 256 << 20
def cycle():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(ctypes.c_size_t(n))
    ctypes.memset(ctypes.c_void_p(p), 1, n)
    libc.free(ctypes.c_void_p(p))
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
cycle()
print(cycle())
"""


def second_use_faults(env_update):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_with_retain_freed_glibc_reuses_freed_memory_without_page_faults():
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    plain = second_use_faults({})
    if plain < pages // 2:
        pytest.skip(f"this C library does not unmap a freed 256 MiB block ({plain} faults on reuse)")
    tuned = second_use_faults(jobenv.job_environment(RETAIN, {}))
    assert tuned < pages // 100, (plain, tuned)


def _job_env(prefix: str, environ: dict) -> str:
    """GLIBC_TUNABLES as a job's shell sees it after the prefix, and that strict mode is on."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(environ)
    out = subprocess.run(["bash", "-c", prefix + 'echo "$GLIBC_TUNABLES"; [[ $- == *u* ]] && echo strict'],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout


def test_the_shell_prefix_exports_the_value_and_keeps_strict_mode():
    prefix = jobenv.shell_prefix(RETAIN)
    assert "{" not in prefix and "}" not in prefix  # Snakemake formats a prefix
    assert _job_env(prefix, {}) == f"{RETAIN}\nstrict\n"


def test_the_shell_prefix_keeps_the_users_tunables():
    assert _job_env(jobenv.shell_prefix(RETAIN), {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == \
        "glibc.malloc.arena_max=2\nstrict\n"


def test_null_leaves_snakemakes_prefix_alone():
    assert jobenv.shell_prefix(None) is None
