import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

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
