"""The autoregressive RQ-Transformer baseline: causality, cached raster-order sampling, official
layout (paper sizes, round trip, strict import), training, and the sampling CLIs with kind ar."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_fixtures import REPO, make_tokenizer_and_codes, tiny_config

from drr.core.config import load_config, override_from_dotted, save_config
from drr.core.errors import DrrError
from drr.sampling.ar import ARSettings, sample_raster
from drr.sampling.decode import sample_seeds
from drr.transformer.ar import ARRQTransformer
from drr.transformer.build import build_transformer, count_parameters
from drr.transformer.model import ContextualRQTransformer, TransformerConfig
from drr.transformer.official import load_official, official_shapes, official_state_dict, save_official

REFERENCE = REPO.parent / "shared" / "reference" / "official-checkpoint-keys"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the 2-core machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(cond_type="class", depth=3, seed=0) -> ARRQTransformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(n_spatial=2, n_depth=2, d_model=32, head_dim=8, code_shape=(3, 3, depth),
                            codebook_size=11, embed_dim=6, cond_type=cond_type, num_classes=5,
                            vocab_size=13, text_length=4, kind="ar")
    return build_transformer(cfg, torch.randn(12, 6)).double().eval()


def random_inputs(model, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    codes = torch.randint(0, c.codebook_size, (b, c.num_positions, c.depth), generator=g)
    cond = torch.randint(0, c.cond_vocab, (b, c.cond_length), generator=g)
    return codes, cond


def full_logits(model, codes, cond):
    c = model.config
    return model(codes, None, cond)["logits"].reshape(len(codes), c.num_positions, c.depth, -1)


def test_kind_selects_the_model_and_contextual_is_the_default():
    assert isinstance(small(), ARRQTransformer)
    cfg = tiny_config()
    assert cfg["transformer"]["model"]["kind"] == "contextual"
    assert isinstance(build_transformer(TransformerConfig.from_experiment(cfg)), ContextualRQTransformer)
    ar = TransformerConfig.from_experiment(tiny_config("transformer.model.kind=ar"))
    assert ar.kind == "ar" and isinstance(build_transformer(ar), ARRQTransformer)
    assert not hasattr(build_transformer(ar), "mask_emb") or build_transformer(ar).mask_emb is None
    with pytest.raises(DrrError, match="transformer.model.kind"):
        TransformerConfig(**{**ar.to_dict(), "kind": "diffusion"})


@pytest.mark.parametrize("cond_type", ["class", "text", "none"])
def test_outputs_at_position_n_depend_only_on_earlier_positions(cond_type):
    model = small(cond_type)
    codes, cond = random_inputs(model)
    base = full_logits(model, codes, cond)
    n_pos, depth = model.config.num_positions, model.config.depth
    for n in range(n_pos):
        for d in range(depth):
            changed = codes.clone()
            changed[:, n, d:] = (changed[:, n, d:] + 1) % model.config.codebook_size
            changed[:, n + 1:] = (changed[:, n + 1:] + 2) % model.config.codebook_size
            out = full_logits(model, changed, cond)
            assert torch.equal(out[:, :n], base[:, :n]), (n, d)          # earlier positions
            assert torch.equal(out[:, n, :d + 1], base[:, n, :d + 1]), (n, d)  # earlier depths
            if n + 1 < n_pos:
                assert (out[:, n + 1:] - base[:, n + 1:]).abs().amax() > 1e-9, (n, d)


def test_condition_reaches_every_position():
    model = small("class")
    codes, cond = random_inputs(model)
    a = full_logits(model, codes, cond)
    b = full_logits(model, codes, (cond + 1) % model.config.num_classes)
    assert ((a - b).abs().amax(dim=(2, 3)) > 1e-9).all()


@pytest.mark.parametrize("cond_type,guidance", [("class", None), ("class", 1.7), ("text", None),
                                                ("text", 2.0), ("none", None)])
def test_cached_sampler_gives_the_logits_of_a_full_forward(cond_type, guidance):
    model = small(cond_type)
    _, cond = random_inputs(model, b=3)
    codes, logits = sample_raster(model, cond, ARSettings(guidance=guidance),
                                  sample_seeds(0, [0, 1, 2]), return_logits=True)
    full = full_logits(model, codes, cond)
    if guidance is not None:
        null = full_logits(model, codes, model.null_condition(cond))
        full = null + guidance * (full - null)
    torch.testing.assert_close(logits, full, rtol=1e-10, atol=1e-10)


def test_cache_prefill_and_one_token_steps_agree():
    model = small("text")
    codes, cond = random_inputs(model)
    h_full, _ = model.context(codes, cond)
    cache, h0 = model.begin(cond, codes[:, :4])  # condition + 4 stacks in one forward
    torch.testing.assert_close(h0, h_full[:, 4])
    h = model.extend(cache, codes[:, 4:7], 4)  # 3 stacks at once
    torch.testing.assert_close(h, h_full[:, 5:8])
    with pytest.raises(ValueError):
        model.extend(cache, codes[:, 8:9], 8)  # position 7 was skipped


def test_samples_do_not_depend_on_batch_size_and_follow_the_seed():
    model = small()
    _, cond = random_inputs(model, b=4)
    settings = ARSettings(temperature=0.9, top_k=[5, 8, 11], top_p=0.95)
    seeds = sample_seeds(3, range(4))
    together = sample_raster(model, cond, settings, seeds)
    alone = torch.cat([sample_raster(model, cond[i:i + 1], settings, seeds[i:i + 1])
                       for i in range(4)])
    assert torch.equal(together, alone)
    other = sample_raster(model, cond, settings, sample_seeds(4, range(4)))
    assert not torch.equal(together, other)


def test_the_sampler_entry_point_samples_an_ar_model_in_raster_order():
    """drr.sampling.sampler dispatches on the model's kind: raster order for 'ar' (no draft), for
    generation and inpainting, with the phase hook called when sampling ends; the settings come
    from sampling.ar."""
    from drr.sampling import sampler
    model = small()
    _, cond = random_inputs(model, b=3)
    settings, seeds, phases = ARSettings(temperature=0.9), sample_seeds(2, range(3)), []
    codes, draft = sampler.sample_codes(model, cond, settings, seeds, on_phase=phases.append)
    assert draft is None and phases == ["ar"]
    assert torch.equal(codes, sample_raster(model, cond, settings, seeds))
    region = torch.zeros(3, 9, dtype=torch.bool)
    region[:, 4:] = True
    init = torch.zeros(3, 9, 3, dtype=torch.long)
    assert torch.equal(sampler.inpaint_codes(model, init, region, cond, settings, seeds),
                       sample_raster(model, cond, settings, seeds, region=region, init_codes=init))
    cfg = tiny_config(*AR, "sampling.ar.top_k=[4, 8]")
    assert sampler.sampling_settings(cfg) == ARSettings(temperature=1.0, top_k=[4, 8])


def test_top_k_1_per_depth_is_greedy_at_that_depth():
    model = small()
    _, cond = random_inputs(model, b=2)
    codes, logits = sample_raster(model, cond, ARSettings(top_k=[1, 11, 1]), sample_seeds(0, [0, 1]),
                                  return_logits=True)
    for d in (0, 2):
        assert torch.equal(codes[..., d], logits[..., d, :].argmax(-1))


def test_ar_inpainting_sees_only_what_precedes_each_position():
    """Figure 1's point: known codes after a masked position cannot influence it."""
    model = small()
    init, cond = random_inputs(model, b=2)
    region = torch.zeros(2, 9, dtype=torch.bool)
    region[:, [2, 5]] = True
    seeds = sample_seeds(0, [0, 1])
    settings = ARSettings()
    out = sample_raster(model, cond, settings, seeds, region=region, init_codes=init)
    assert torch.equal(out[~region], init[~region])
    later = init.clone()
    later[:, 6:] = (later[:, 6:] + 1) % 11            # after every masked position
    again = sample_raster(model, cond, settings, seeds, region=region, init_codes=later)
    assert torch.equal(again[region], out[region])
    between = init.clone()
    between[:, 3] = (between[:, 3] + 1) % 11           # after position 2, before position 5
    again = sample_raster(model, cond, settings, seeds, region=region, init_codes=between)
    assert torch.equal(again[:, 2], out[:, 2])
    before = init.clone()
    before[:, 0] = (before[:, 0] + 1) % 11             # before both: their distributions change
    _, logits_a = sample_raster(model, cond, settings, seeds, region=region, init_codes=init,
                                return_logits=True)
    _, logits_b = sample_raster(model, cond, settings, seeds, region=region, init_codes=before,
                                return_logits=True)
    assert (logits_a[:, 2] - logits_b[:, 2]).abs().amax() > 1e-9


def test_settings_errors_name_the_config_key():
    with pytest.raises(DrrError, match=r"^sampling.ar.top_k: 2 values for D = 3"):
        ARSettings(top_k=[4, 5]).depth_filters(3)
    with pytest.raises(DrrError, match=r"^sampling.ar.top_p: 1.5"):
        ARSettings(top_p=1.5).depth_filters(3)
    with pytest.raises(DrrError, match=r"^sampling.ar.temperature"):
        ARSettings(temperature=0).depth_filters(3)
    assert ARSettings(top_k=[7]).depth_filters(2) == [(1.0, 7, None), (1.0, 7, None)]
    cfg = tiny_config("sampling.ar.top_k=[4, 8, 16, 32]", "sampling.ar.top_p=0.9")
    assert ARSettings.from_config(cfg["sampling"]).top_k == [4, 8, 16, 32]


# -- official layout ---------------------------------------------------------------------------

def reference_shapes(name: str) -> dict:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _ = line.split("\t")
        shapes[key] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return shapes


OFFICIAL = [  # drr experiment with the same sizes, official key file, RQ-Transformer paper's count
    ("in256-crq-821m", "in256-rqtransformer-8x8x4-800M.txt", 821e6),
    ("in256-crq-1400m", "in256-rqtransformer-8x8x4-1400M.txt", 1.4e9),
    ("cc3m-crq-654m", "cc3m-rqtransformer-8x8x4-650M.txt", 654e6),
]


@pytest.mark.parametrize("experiment,keys,paper", OFFICIAL)
def test_paper_size_ar_models_have_the_official_keys_shapes_and_parameter_counts(experiment, keys,
                                                                                  paper):
    cfg = load_config(REPO / f"configs/experiments/{experiment}.yaml",
                      override_from_dotted(["transformer.model.kind=ar"]))
    config = TransformerConfig.from_experiment(cfg)
    assert official_shapes(config) == reference_shapes(keys)  # meta device: nothing allocated
    n = count_parameters(config)  # the official count plus the null condition row (d_model)
    official = sum(math.prod(s) for s in reference_shapes(keys).values())
    print(f"{experiment} as AR: {n / 1e6:.1f}M parameters (official file {official / 1e6:.1f}M, "
          f"paper {paper / 1e6:.0f}M)")
    assert n == official + config.d_model
    assert abs(n / paper - 1) < 0.02


def test_official_layout_written_from_a_random_model_loads_back(tmp_path):
    model = small("text").float()
    path = tmp_path / "official.pt"
    save_official(model, path)
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert "code_emb" not in sd and sd["cond_emb.weight"].shape[0] == model.config.cond_vocab
    loaded = load_official(path, model.config, model.code_emb)
    assert loaded.has_null_condition is False
    for key, value in official_state_dict(model).items():
        assert torch.equal(official_state_dict(loaded)[key], value), key
    assert torch.equal(loaded.code_emb, model.code_emb)
    assert not loaded.cond_emb.weight[-1].any()  # the null row: absent in the official layout
    codes, cond = random_inputs(model)
    torch.testing.assert_close(full_logits(loaded, codes, cond), full_logits(model, codes, cond))
    with pytest.raises(DrrError, match="sampling.ar.guidance_scale"):
        sample_raster(loaded, cond, ARSettings(guidance=1.5), sample_seeds(0, [0, 1]))


def _edited(tmp_path, model, edit) -> Path:
    sd = {k: v.clone() for k, v in official_state_dict(model).items()}
    edit(sd)
    path = tmp_path / "edited.pt"
    torch.save({"state_dict": sd}, path)
    return path


def test_strict_import_names_the_missing_extra_or_misshaped_key(tmp_path):
    model = small("class").float()
    cases = {
        "missing": (lambda sd: sd.pop("head_transformer.blocks.1.attn.key.bias"),
                    "key 'head_transformer.blocks.1.attn.key.bias' is missing"),
        "extra": (lambda sd: sd.__setitem__("body_transformer.blocks.2.ln1.weight", torch.ones(32)),
                  "key 'body_transformer.blocks.2.ln1.weight' is unexpected"),
        "shape": (lambda sd: sd.__setitem__("cond_emb.weight", torch.zeros(6, 32)),
                  "key 'cond_emb.weight' has shape (6, 32), expected (5, 32)"),
        "drr key": (lambda sd: sd.__setitem__("code_emb", torch.zeros(11, 6)),
                    "key 'code_emb' is unexpected"),
    }
    for name, (edit, message) in cases.items():
        path = _edited(tmp_path, model, edit)
        with pytest.raises(DrrError) as e:
            load_official(path, model.config, model.code_emb)
        text = str(e.value)
        assert "\n" not in text and str(path) in text and message in text, (name, text)
    with pytest.raises(DrrError, match="'state_dict' entry"):
        torch.save({"model": {}}, tmp_path / "bad.pt")
        load_official(tmp_path / "bad.pt", model.config, model.code_emb)
    contextual = TransformerConfig(**{**model.config.to_dict(), "kind": "contextual"})
    with pytest.raises(DrrError, match="transformer.model.kind"):
        load_official(tmp_path / "edited.pt", contextual, model.code_emb)


# -- training and the sampling CLIs --------------------------------------------------------------

AR = ("transformer.model.kind=ar",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tokenizer, code map and an AR transformer trained for 40 steps on the tiny fixture."""
    from drr.transformer.train import train
    folder = tmp_path_factory.mktemp("ar")
    cfg = tiny_config(*AR, "transformer.train.steps=40", "transformer.train.checkpoint_every=1000")
    tok, codes = make_tokenizer_and_codes(folder, cfg)
    model = train(cfg, tok, codes, folder / "run" / "transformer.pt")
    config = folder / "config.yaml"
    save_config(cfg, config)
    return {"folder": folder, "cfg": cfg, "tok": tok, "codes": codes, "model": model,
            "config": config}


def test_training_next_code_nll_decreases(trained):
    from drr.transformer.io import load_transformer
    log = [json.loads(line) for line in
           (trained["model"].parent / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-5:]])
    assert log[0]["masked_fraction"] == 1.0  # every position scored
    assert last < first - 0.3, (first, last)
    model, ckpt, _ = load_transformer(trained["model"])
    assert isinstance(model, ARRQTransformer) and ckpt["model_config"]["kind"] == "ar"
    assert model.has_null_condition and ckpt["null_condition"] is True


def test_evaluate_nll_scores_every_code(trained):
    from drr.codes.store import CodeMap
    from drr.transformer.io import load_transformer
    from drr.transformer.train import evaluate_nll
    model, _, _ = load_transformer(trained["model"])
    codes = torch.from_numpy(CodeMap(trained["codes"]).codes[:8].astype(np.int64)).reshape(8, 16, 2)
    cond = torch.zeros(8, 1, dtype=torch.long)
    out = model(codes, None, cond)
    manual = torch.nn.functional.cross_entropy(out["logits"].flatten(0, 1), out["targets"].flatten())
    assert evaluate_nll(model, codes, cond) == pytest.approx(manual.item(), rel=1e-5)


def test_generate_speed_and_inpaint_run_with_kind_ar(trained, tmp_path):
    from drr.sampling import generate as gen_mod
    from drr.sampling import inpaint as inpaint_mod
    from drr.sampling import speed as speed_mod

    outs = {}
    for bs in (2, 4):
        cfg = tiny_config(*AR, "generation.num_samples=4", f"generation.batch_size={bs}",
                          "generation.shard_size=4", "generation.grid_samples=4",
                          "sampling.ar.top_k=[16, 32]", "sampling.ar.guidance_scale=1.5")
        outs[bs] = gen_mod.generate(cfg, trained["tok"], trained["model"], tmp_path / f"b{bs}")
    with np.load(outs[2]) as a, np.load(outs[4]) as b:
        assert a["arr_0"].shape == (4, 16, 16, 3) and "drafts" not in a.files
        assert np.array_equal(a["codes"], b["codes"]) and np.array_equal(a["arr_0"], b["arr_0"])
    rec = json.loads((tmp_path / "b2" / "samples.json").read_text())
    assert rec["decode_settings"]["top_k"] == [16, 32] and rec["decode_settings"]["guidance"] == 1.5
    with pytest.raises(DrrError, match="^generation.save_drafts"):
        gen_mod.generate(tiny_config(*AR, "generation.save_drafts=true"), trained["tok"],
                         trained["model"], tmp_path / "drafts")

    speed_json = tmp_path / "speed.json"
    speed_mod.main(["--config", str(trained["config"]), "--set", "generation.speed_batch_size=2",
                    "--set", "generation.speed_batches=1", "--tokenizer", str(trained["tok"]),
                    "--transformer", str(trained["model"]), "--json", str(speed_json)])
    sp = json.loads(speed_json.read_text())
    assert sp["model_kind"] == "ar" and sp["s_per_sample_ar"] > 0 and sp["s_per_sample_decode"] > 0
    assert sp["s_per_sample_draft"] is None and sp["s_per_sample_revise"] is None
    assert sp["s_per_sample"] == pytest.approx(sp["s_per_sample_ar"] + sp["s_per_sample_decode"])
    assert sp["precision"] == "fp32" and {p: len(t) for p, t in sp["batch_seconds"].items()} == {
        "ar": 1, "decode": 1}

    png = tmp_path / "inpaint.png"
    rec = inpaint_mod.run(trained["cfg"], trained["tok"], trained["model"], trained["codes"], png,
                          [0, 1], samples=2, masks=["bottom", "center"])
    assert png.exists() and rec["model_kind"] == "ar" and len(rec["lines"]) == 4

    contextual = tiny_config()  # the checkpoint is an AR model: a contextual config is refused
    with pytest.raises(DrrError, match="model_config 'kind' is 'ar'"):
        gen_mod.generate(contextual, trained["tok"], trained["model"], tmp_path / "wrong")


def test_import_cli_makes_a_drr_checkpoint_that_samples_without_guidance(trained, tmp_path):
    from drr.sampling import generate as gen_mod
    from drr.transformer.import_official import main as import_main
    from drr.transformer.io import load_transformer

    trained_model, _, _ = load_transformer(trained["model"])
    official = tmp_path / "official.pt"
    save_official(trained_model, official)
    out = tmp_path / "imported" / "checkpoint.pt"
    import_main(["--config", str(trained["config"]), "--set", f"transformer.checkpoint={official}",
                 "--tokenizer", str(trained["tok"]), "--out", str(out)])
    model, ckpt, _ = load_transformer(out)
    assert ckpt["null_condition"] is False and model.has_null_condition is False
    assert ckpt["provenance"]["imported_from"] == str(official.resolve())
    for key, value in official_state_dict(trained_model).items():
        assert torch.equal(official_state_dict(model)[key], value), key
    cfg = tiny_config(*AR, "generation.num_samples=2", "generation.batch_size=2",
                      "generation.grid_samples=2")
    gen_mod.generate(cfg, trained["tok"], out, tmp_path / "samples")
    with pytest.raises(DrrError, match="sampling.ar.guidance_scale"):
        gen_mod.generate(tiny_config(*AR, "generation.num_samples=2", "sampling.ar.guidance_scale=2"),
                         trained["tok"], out, tmp_path / "guided")
    with pytest.raises(SystemExit) as e:  # a contextual config: one-line error, exit status 2
        import_main(["--config", str(trained["config"]), "--set", "transformer.model.kind=contextual",
                     "--set", f"transformer.checkpoint={official}", "--tokenizer",
                     str(trained["tok"]), "--out", str(tmp_path / "x.pt")])
    assert e.value.code == 2


def test_training_cli_refuses_a_config_that_imports_the_transformer(tmp_path, capsys):
    from drr.transformer import train as train_mod
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--config", str(REPO / "configs/experiments/tiny.yaml"),
                        "--set", "transformer.model.kind=ar",
                        "--set", "transformer.checkpoint=official.pt",
                        "--tokenizer", "t.pt", "--codes", "c", "--out", str(tmp_path / "o.pt")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'transformer.checkpoint'" in err[0] and "import_official" in err[0]
