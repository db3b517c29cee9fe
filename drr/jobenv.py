"""The environment the workflow's jobs start with: glibc's malloc keeps freed memory for reuse.

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
when a process starts; other C libraries and older glibc ignore them. A process may then keep its
peak heap until it exits, which every job here does soon after its peak.
"""

from __future__ import annotations

import re

from drr.errors import DrrError

VAR = "GLIBC_TUNABLES"
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
