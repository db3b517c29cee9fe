"""Import/export of the official RQ-VAE checkpoint layout (drr.tokenizer.official)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drr.core.errors import DrrError
from drr.tokenizer import RQVAE, RQVAEConfig, load_official, save_official

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE_KEYS = SHARED / "reference" / "official-checkpoint-keys" / "in256-rqvae-8x8x4.txt"

TINY = dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[16], z_channels=16,
            embed_dim=16, codebook_size=32, code_shape=[8, 8, 4])


def tiny_config(**overrides) -> RQVAEConfig:
    return RQVAEConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> RQVAE:
    torch.manual_seed(seed)
    return RQVAE(tiny_config(**overrides)).eval()


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write(path: Path, state_dict: dict) -> Path:
    torch.save({"state_dict": state_dict}, path)
    return path


# --------------------------------------------------------------------------------------------------
# The paper-size layout
# --------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not REFERENCE_KEYS.exists(), reason=f"{REFERENCE_KEYS} not found (needs ../shared)")
def test_official_config_has_exactly_the_reference_keys_and_shapes():
    rows = [line.split("\t") for line in REFERENCE_KEYS.read_text().splitlines() if line.strip()]
    reference = {name: shape for name, shape, _dtype in rows}
    with torch.device("meta"):  # 100M parameters, no memory
        model = RQVAE(RQVAEConfig.official("in256-rqvae-8x8x4"))
    ours = {name: str(tuple(t.shape)) for name, t in model.state_dict().items()}
    assert sorted(set(reference) - set(ours)) == [], "keys of the official checkpoint missing here"
    assert sorted(set(ours) - set(reference)) == [], "keys here that the official checkpoint lacks"
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}, "shape mismatches"
    assert list(ours) == list(reference)  # same order, too
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())


def test_official_config_values():
    cfg = RQVAEConfig.official()
    assert (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.attn_resolutions) == (128, [1, 1, 2, 2, 4, 4], 2, [8])
    assert (cfg.z_channels, cfg.embed_dim, cfg.codebook_size, cfg.code_shape) == (256, 256, 16384, [8, 8, 4])
    assert cfg.shared_codebook and cfg.restart_unused_codes and cfg.decay == 0.99 and cfg.dropout == 0.0
    assert cfg.resolution == 256 and cfg.depth == 4
    with pytest.raises(DrrError, match="unknown official RQ-VAE"):
        RQVAEConfig.official("in512")


# --------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_save_then_load_gives_identical_codes(tmp_path, shared):
    model = tiny_model(shared_codebook=shared)
    model.train()
    model(images(4, seed=3))  # one EMA step, so the codebook is not the initial one
    model.eval()
    path = tmp_path / "rqvae.pt"
    save_official(model, path)
    assert not [p for p in tmp_path.iterdir() if p.name != "rqvae.pt"], "no temporary left behind"

    loaded = load_official(path, tiny_config(shared_codebook=shared))
    assert not loaded.training
    ref, got = model.state_dict(), loaded.state_dict()
    assert list(ref) == list(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x = images(3)
    assert torch.equal(model.encode(x), loaded.encode(x))
    codes = model.encode(x)
    assert torch.equal(model.decode_codes(codes), loaded.decode_codes(codes))

    books = loaded.quantizer.codebooks
    if shared:  # still one tensor after loading
        assert all(b is books[0] for b in books)
        assert len({got[f"quantizer.codebooks.{d}.weight"].data_ptr() for d in range(4)}) == 1
    else:
        assert len({id(b) for b in books}) == 4
    assert all(p.requires_grad for p in loaded.parameters())
    assert not any(t.is_meta for t in loaded.state_dict().values())


def test_load_converts_half_precision_files(tmp_path):
    model = tiny_model()
    sd = {k: v.half() for k, v in model.state_dict().items()}
    loaded = load_official(write(tmp_path / "half.pt", sd), tiny_config())
    assert all(t.dtype == torch.float32 for t in loaded.state_dict().values())


# --------------------------------------------------------------------------------------------------
# Rejections: each names the file and the key
# --------------------------------------------------------------------------------------------------

def test_missing_key_is_rejected(tmp_path):
    sd = tiny_model().state_dict()
    del sd["decoder.up.1.upsample.conv.weight"]
    path = write(tmp_path / "missing.pt", sd)
    with pytest.raises(DrrError) as e:
        load_official(path, tiny_config())
    msg = str(e.value)
    assert "missing.pt" in msg and "'decoder.up.1.upsample.conv.weight'" in msg and "missing" in msg
    assert "\n" not in msg


def test_unexpected_key_is_rejected(tmp_path):
    sd = tiny_model().state_dict()
    sd["encoder.down.0.attn.0.q.weight"] = torch.zeros(32, 32, 1, 1)
    path = write(tmp_path / "extra.pt", sd)
    with pytest.raises(DrrError, match=r"extra\.pt: key 'encoder\.down\.0\.attn\.0\.q\.weight' is unexpected"):
        load_official(path, tiny_config())


def test_wrong_shape_is_rejected(tmp_path):
    sd = tiny_model().state_dict()
    sd["encoder.conv_in.weight"] = torch.zeros(64, 3, 3, 3)
    path = write(tmp_path / "ckpt.pt", sd)
    with pytest.raises(DrrError) as e:
        load_official(path, tiny_config())
    assert str(e.value) == (f"{path}: key 'encoder.conv_in.weight' has shape (64, 3, 3, 3), "
                            f"expected (32, 3, 3, 3)")


def test_a_checkpoint_of_another_config_lists_three_keys_and_a_count(tmp_path):
    sd = tiny_model(codebook_size=64).state_dict()  # 4 depths x 3 codebook tensors differ
    path = write(tmp_path / "k64.pt", sd)
    with pytest.raises(DrrError) as e:
        load_official(path, tiny_config())
    msg = str(e.value)
    assert msg.count("has shape") == 3 and "12 mismatched keys in all" in msg
    assert "'quantizer.codebooks.0.weight' has shape (65, 16), expected (33, 16)" in msg


def test_shared_codebook_entries_that_differ_are_rejected(tmp_path):
    sd = tiny_model().state_dict()
    sd["quantizer.codebooks.2.embed_ema"] = sd["quantizer.codebooks.2.embed_ema"].clone() + 1.0
    path = write(tmp_path / "unshared.pt", sd)
    with pytest.raises(DrrError, match=r"unshared\.pt: key 'quantizer\.codebooks\.2\.embed_ema' differs"):
        load_official(path, tiny_config())
    # the same file is fine for a model with one codebook per depth
    loaded = load_official(path, tiny_config(shared_codebook=False))
    assert torch.equal(loaded.quantizer.codebooks[2].embed_ema, sd["quantizer.codebooks.2.embed_ema"])


def test_files_that_are_not_checkpoints_are_rejected(tmp_path):
    with pytest.raises(DrrError, match="not found"):
        load_official(tmp_path / "nope.pt", tiny_config())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DrrError, match=r"junk\.pt: not a readable torch checkpoint"):
        load_official(tmp_path / "junk.pt", tiny_config())
    torch.save(tiny_model().state_dict(), tmp_path / "bare.pt")  # no {'state_dict': ...} wrapper
    with pytest.raises(DrrError, match=r"bare\.pt: expected a dict with a 'state_dict' entry"):
        load_official(tmp_path / "bare.pt", tiny_config())
