import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SLURM_SCRIPTS = REPO / "tests" / "slurm"

# Tests run on CPU with few threads: the machine has 2 cores and the suite must stay fast.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (small real datasets); the test is skipped when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the small real datasets for this test are not available")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the 2-core machine is shared, and two spinning OpenMP threads on a busy
    core make every forward 100x slower. Modules ask for it with pytest.mark.usefixtures."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The private SLURM cluster (tests/slurm/start.sh) of tests/test_slurm.py and tests/test_rehearsal.py.
@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The private cluster, started once per session and stopped at its end."""
    folder = tmp_path_factory.mktemp("slurm-cluster")
    t0 = time.monotonic()
    run = subprocess.run([str(SLURM_SCRIPTS / "start.sh"), str(folder)], capture_output=True,
                         text=True, timeout=900)
    if run.returncode == 77:
        pytest.skip(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, f"tests/slurm/start.sh failed:\n{run.stderr[-4000:]}"
    print(f"\nSLURM cluster up in {time.monotonic() - t0:.1f} s ({folder})")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = str(folder / "etc" / "slurm.conf")
    os.environ["PATH"] = f"{folder / 'bin'}:{os.environ['PATH']}"
    try:
        yield folder
    finally:
        subprocess.run([str(SLURM_SCRIPTS / "stop.sh"), str(folder)], timeout=300)
        shutil.rmtree(folder / "mysql", ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
