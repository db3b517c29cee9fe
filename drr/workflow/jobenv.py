"""GLIBC_TUNABLES for the workflow's jobs (workflow key glibc_tunables): keep freed memory, or not.

On a CPU, PyTorch frees and allocates the activations of every forward pass. glibc's malloc serves
a block of more than 32 MiB with its own mmap and unmaps it when freed, so the next forward pass
faults the same memory in again, page by page, and the kernel zeroes every page. The Inception
network at batch 100 (activations of hundreds of MiB at 299x299) spent about 30% of its time in
the kernel that way on this project's 2-core machine: 4.4 images/s; with the tunables below 6.6
(and 4.3-4.5 against 6.3-6.5 with two jobs side by side). `python benchmarks/metrics_bench.py`
prints the rate with its user and system seconds and page faults; run it with and without
GLIBC_TUNABLES to compare.

The tunables only choose where memory comes from (the heap, never unmapped below
`trim_threshold`): every computed number is the same bit for bit. glibc 2.26 or later reads them
when a process starts; other C libraries and older glibc ignore them.

The cost is memory, and it is why the workflow's default is null (off). A freed block is never
returned to the kernel, and the heap fragments: the tiny suite's tokenizer report peaked at
10.2 GB of resident memory instead of 4.7 GB (and ran 178 s instead of 248 s). Beside other jobs
on a 24 GiB machine, that got a job killed by the kernel's out-of-memory killer. Opt in where the
memory is there: set `glibc_tunables` to `RETAIN_FREED` (below) in configs/workflow.yaml.
"""

from __future__ import annotations

import re
import shlex

from drr.core.errors import DrrError

VAR = "GLIBC_TUNABLES"
# Keep freed memory in the heap: no mmap'd blocks, never trim the heap's top (below 16 GiB).
RETAIN_FREED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
# name=value pairs joined by ':' (glibc's syntax); digits only, so nothing in it is ever code
_PATTERN = re.compile(r"^glibc\.[a-z_]+\.[a-z_]+=[0-9]+(:glibc\.[a-z_]+\.[a-z_]+=[0-9]+)*$")


def job_environment(tunables: str | None, environ, where: str = "configs/workflow.yaml") -> dict[str, str]:
    """The variables to add to the jobs' environment for the workflow key ``glibc_tunables``.

    None: nothing. A GLIBC_TUNABLES already in `environ` (the user's own) is kept as it is, so
    nothing is added either. A value that is not glibc's ``name=number[:name=number...]`` is a
    DrrError naming the file and the key.
    """
    if tunables is None:
        return {}
    if not isinstance(tunables, str) or not _PATTERN.match(tunables):
        raise DrrError(f"{where}: glibc_tunables must be null or glibc's name=number[:name=number...] "
                       f"(for example glibc.malloc.mmap_max=0), not {tunables!r}")
    if environ.get(VAR):
        return {}
    return {VAR: tunables}


def shell_prefix(tunables: str | None, where: str = "configs/workflow.yaml") -> str | None:
    """The shell prefix of every job (Snakemake's ``shell.prefix``) for ``glibc_tunables``, or None
    for None (Snakemake's own prefix stays). The export keeps a GLIBC_TUNABLES the user exported;
    the prefix ends in Snakemake's default strict mode, which it replaces, and holds no braces
    (Snakemake formats a prefix)."""
    if tunables is None:
        return None
    value = shlex.quote(job_environment(tunables, {}, where)[VAR])
    return f'[ -n "${VAR}" ] || export {VAR}={value}; set -euo pipefail; '
