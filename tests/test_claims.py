"""drr.reports.claims: verdicts with known answers on synthetic replicates, the claims report from its
spec (drr.workflow.report_spec) and fixture metrics rows and speed files, bad claims files, and the
`claims` rule's dry-run plan."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from drr.core.errors import DrrError
from drr.metrics.score import ROW_FIELDS, read_rows, write_rows
from drr.reports import claims as C
from drr.reports.results import read_spec
from drr.workflow import claims as W
from drr.workflow import report_spec as RS
from drr.workflow.plan import Plan
from drr.workflow.studies import Studies, read_yaml

from workflow_fixtures import copy_workflow, planned_jobs

REPO = Path(__file__).resolve().parents[1]
B = 400


def noise(seed, scale=1.0, b=B):
    return scale * np.random.default_rng(seed).normal(size=b)


# --- verdicts on synthetic replicates --------------------------------------------------------------

def test_a_clear_effect_is_reproduced_none_is_inconclusive_a_reversed_one_is_not():
    shared = noise(1)
    draft = C.Estimate(30.0, 30.0 + shared + noise(2, 0.2), "k")
    clear = C.Estimate(20.0, 20.0 + shared + noise(3, 0.2), "k")          # 10 lower: the paper's way
    same = C.Estimate(30.0, 30.0 + shared + noise(4, 0.2), "k")
    worse = C.Estimate(40.0, 40.0 + shared + noise(5, 0.2), "k")
    out = {}
    for name, a in (("clear", clear), ("same", same), ("worse", worse)):
        d, reps, how = C.difference(a, draft)
        out[name] = C.oriented(name, d, reps, -1, how)                 # lower FID is better: sign −1
        assert how == "paired"
    assert out["clear"].value == pytest.approx(10.0) and out["clear"].lo > 9 and out["clear"].hi < 11
    assert out["clear"].verdict == C.REPRODUCED
    assert out["same"].lo < 0 < out["same"].hi and out["same"].verdict == C.INCONCLUSIVE
    assert out["worse"].value == pytest.approx(-10.0) and out["worse"].verdict == C.NOT_REPRODUCED


def test_pairing_uses_the_shared_noise_and_unpaired_keys_do_not():
    shared = noise(1, 3.0)                     # both sets share a large component (same samples)
    a = C.Estimate(10.0, 10.0 + shared + noise(2, 0.2), "k")
    b = C.Estimate(11.0, 11.0 + shared + noise(3, 0.2), "k")
    d, reps, how = C.difference(a, b)
    paired = C.oriented("p", d, reps, -1, how)
    assert how == "paired" and paired.verdict == C.REPRODUCED          # a 1-point gain, clearly seen
    b_other = C.Estimate(11.0, 11.0 + noise(9, 3.0), "other-key")     # resampled independently
    d, reps, how = C.difference(a, b_other)
    unpaired = C.oriented("u", d, reps, -1, how)
    assert how.startswith("unpaired") and unpaired.verdict == C.INCONCLUSIVE
    assert unpaired.hi - unpaired.lo > 5 * (paired.hi - paired.lo)
    # different B: the first min(B_a, B_b) replicates of each
    short = C.Estimate(11.0, b_other.reps[:100], "other-key")
    assert len(C.difference(a, short)[1]) == 100


def test_intersection_union_needs_every_comparison_and_fails_on_any():
    R, N, I = C.REPRODUCED, C.NOT_REPRODUCED, C.INCONCLUSIVE
    assert C.combine([R, R, R]) == R
    assert C.combine([R, R, N]) == N            # one failing comparison: not reproduced
    assert C.combine([R, I, R]) == I
    assert C.combine([N, I]) == N
    assert C.combine([R, None]) is None          # a missing result: no verdict
    assert C.verdict(0.1, 2.0) == R and C.verdict(-2.0, -0.1) == N and C.verdict(-0.1, 0.1) == I


def test_trend_slope_and_end_point_of_a_known_line():
    t = np.array([4, 8, 16, 32, 64])
    x = np.log2(t)
    shared = noise(1)
    points = [C.Estimate(40 - 2 * xi, 40 - 2 * xi + shared + noise(10 + i, 0.3), "k")
              for i, xi in enumerate(x)]
    assert C.slopes(x, [p.value for p in points]) == pytest.approx(-2.0)
    slope, end = C.trend_effects(x, points, -1, "FID")                # FID falls: the paper's way
    assert slope.value == pytest.approx(2.0) and slope.how == "paired"
    assert 1.5 < slope.lo < 2 < slope.hi < 2.5 and slope.verdict == C.REPRODUCED
    assert end.value == pytest.approx(8.0) and end.verdict == C.REPRODUCED
    # the paper says it worsens: the same data reverse the verdicts
    assert [e.verdict for e in C.trend_effects(x, points, +1, "FID")] == [C.NOT_REPRODUCED] * 2
    flat = [C.Estimate(30.0, 30.0 + shared + noise(20 + i, 0.3), "k") for i in range(5)]
    assert C.combine([e.verdict for e in C.trend_effects(x, flat, -1, "FID")]) == C.INCONCLUSIVE


def batches(s_per_sample, rel=0.01, seed=0, n=3):
    """Per-batch s/sample of n timed batches around a value (1% spread)."""
    return s_per_sample * (1 + rel * np.random.default_rng(seed).normal(size=n))


def test_per_seed_needs_every_seed_and_prints_the_mean_the_hull_and_the_spread():
    def effect(value, half):
        return C.Effect("e", value, value - half, value + half)
    both = C.over_seeds("fid", [effect(3.0, 1.0), effect(5.0, 1.0)])
    assert both.verdict == C.REPRODUCED and both.value == 4.0 and (both.lo, both.hi) == (2.0, 6.0)
    assert "seed spread 2, half-widths 1, 1: the training runs differ more than the sample sets resolve" in both.how
    assert C.over_seeds("fid", [effect(3.0, 1.0), effect(-3.0, 1.0)]).verdict == C.INCONCLUSIVE   # seeds disagree
    assert C.over_seeds("fid", [effect(3.0, 1.0), effect(0.5, 1.0)]).verdict == C.INCONCLUSIVE    # one contains 0
    assert C.over_seeds("fid", [effect(-3.0, 1.0), effect(-2.0, 1.5)]).verdict == C.NOT_REPRODUCED
    close = C.over_seeds("fid", [effect(3.0, 1.0), effect(3.5, 1.0)])
    assert "differ more" not in close.how
    missing = C.over_seeds("fid", [effect(3.0, 1.0), C.Effect("e", na="x.parquet is missing")])
    assert missing.verdict is None and missing.na == "x.parquet is missing"
    one = C.over_seeds("fid", [C.Effect("seed 0", 3.0, 2.0, 4.0, "paired", shown="a vs b")])
    assert (one.label, one.value, one.lo, one.hi, one.shown, one.seeds) == ("fid", 3.0, 2.0, 4.0, "a vs b", [])
    assert one.how == "paired; one training seed, no seed spread" and one.verdict == C.REPRODUCED


def test_per_batch_times_come_from_the_speed_files_batch_seconds():
    rec = {"batch_size": 100, "batch_seconds": {"draft": [1.0, 2.0], "revise": [3.0, 4.0], "decode": [0.0, 1.0]}}
    assert C.per_batch_seconds(rec, "x.json").tolist() == [0.04, 0.07]
    ar = {"batch_size": 10, "batch_seconds": {"ar": [1.0], "decode": [1.0]}}
    assert C.per_batch_seconds(ar, "x.json").tolist() == [0.2]
    with pytest.raises(C.Missing, match="x.json: no per-batch times"):
        C.per_batch_seconds({"s_per_sample": 0.1}, "x.json")


# --- the report from fixture files -----------------------------------------------------------------

DEFAULTS = {"t_draft": 64, "M": 2, "t_revise": 2, "guidance": "revise", "strategy": "random"}


def fixture_values(values: dict, experiment: str) -> dict:
    """Known effects: draft FID 40 − 2 log2 T_draft (28 at the default 64), revised FID 20 and flat
    in T_draft and T_revise; Top-C 5 worse and Top-C-50% 5 better than random after revision;
    precision rises and recall falls with M; the AR model is worse on FID and precision."""
    v = {**DEFAULTS, **values}
    draft = 40 - 2 * math.log2(v["t_draft"])
    revised = 20.0 + {"random": 0.0, "top-c": 5.0, "top-c-50": -5.0}[v["strategy"]]
    precision = 0.5 + 0.05 * v["M"]
    if "-ar" in experiment:                              # both AR seeds
        revised, precision = revised + 10, precision - 0.1
    return {"draft": {"fid": draft, "precision": 0.5, "recall": 0.6},
            "revised": {"fid": revised, "precision": precision, "recall": 0.6 - 0.05 * v["M"]}}


def metrics_row(experiment, variant, phase, n, point: dict, seed: int) -> dict:
    row = {name: None for name, _, _ in ROW_FIELDS}
    key = f"key-n{n}"                                   # same N and classes: the same index matrix
    shared = noise(n)                                   # what paired rows share
    row.update(experiment=experiment, variant=variant, phase=phase, n_samples=n, pr_k=3,
               boot_key=key, boot_replicates=B, interval_level=0.95, interval_method="test")
    for i, (m, value) in enumerate(point.items()):
        scale = 1.0 if m == "fid" else 0.005
        row[m] = value
        row[f"boot_{m}"] = (value + scale * (shared + noise(seed * 10 + i, 0.3))).tolist()
    return row


def small_plan(root):
    wf = read_yaml(root / "configs/workflow.yaml")
    wf["suite"] = "small"
    return Plan(root, wf)


def model_report(experiment: str, steps: int, end: float, drop: float, chain: float) -> dict:
    """A transformer report (drr.transformer.report) with a held-out curve falling by `drop` over
    the last quarter of training to `end`, and a chain-rule NLL."""
    points = [steps // 4, steps // 2, 3 * steps // 4, steps]
    curve = [[s, end + drop * (steps - s) / (steps - points[2])] for s in points]
    return {"experiment": experiment, "trained_steps": steps, "heldout_curve": curve,
            "chain_rule_nll": {"order": "raster" if experiment.startswith("small-ar") else "random",
                               "maps": 256, "orders": 4, "nats_per_map": chain, "se_over_maps": 1.5,
                               "order_spread": 2.0}}


def selection_record(experiment: str, name: str, key: str, values: list, scores: list) -> dict:
    best = scores.index(min(scores))
    return {"selection": name, "experiment": experiment, "key": key, "rule": f"lowest {name} score",
            "candidates": [{"value_of_key": v, "value": sc, "run": f"{name}-{v}"} for v, sc in zip(values, scores)],
            "chosen": values[best], "at_edge": best in (0, len(values) - 1)}


def write_json_file(root, name, data):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return name


@pytest.fixture(scope="module")
def suite_files(tmp_path_factory):
    """The claims' spec (given["spec"]) and every file the claims read on suite small (paths
    relative to root, as the rule gives them), except the seed-0 AR model's metrics row; speed
    measured on a CPU."""
    root = tmp_path_factory.mktemp("claims")
    shutil.copytree(REPO / "configs", root / "configs")
    plan = small_plan(root)
    studies = Studies(root)
    inputs = W.claims_inputs(plan)
    spec = root / RS.spec_file("claims")
    RS.main(["--suite", "small", "--report", "claims", "--out", str(spec), "--root", str(root)])
    spec_data = read_spec(spec, ("claims",))
    run_of = {f: (r["experiment"], r["variant"]) for r in spec_data["runs"]
              for f in (r["metrics"], r["speed"], r["flops"]) if f}
    given = {"metrics": [], "speed": [], "flops": [], "models": [], "selections": [], "spec": str(spec)}
    for i, f in enumerate(inputs["metrics"]):
        exp, var = run_of[f]
        if (exp, var) == ("small-ar", "default"):
            continue                                     # left out: its claims read n/a
        ablation = studies.is_ablation(var)
        n = 1000 if ablation else 5000
        values = fixture_values(studies.ablation_values(var) if ablation else {}, exp)
        phases = ["revised", "draft"] if ablation else ["revised"]
        path = root / f
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rows([metrics_row(exp, var, p, n, values[p], 100 * i + j) for j, p in enumerate(phases)], path)
        given["metrics"].append(f)
    for i, f in enumerate(inputs["speed"]):
        exp, var = run_of[f]
        t = 64 if exp.startswith("small-ar") else {**DEFAULTS, **studies.ablation_values(var)}["t_draft"]
        per = batches(0.01 + 0.001 * t, seed=i)           # AR: as slow as T_draft 64
        rec = {"s_per_sample": float(per.mean()), "batch_size": 100, "timed_batches": 3,
               "timing": "time.perf_counter", "device": "cpu (x86_64, 1 threads)",
               "batch_seconds": {"draft": (per * 40).tolist(), "revise": (per * 50).tolist(),
                                 "decode": (per * 10).tolist()}}
        given["speed"].append(write_json_file(root, f, rec))
    for f in inputs["flops"]:
        exp, var = run_of[f]
        rec = ({"flops_per_sample": 0.745e9, "flops_per_sample_by_phase": {"ar": 0.745e9}}
               if exp.startswith("small-ar") else
               {"flops_per_sample": 3.56e9, "flops_per_sample_by_phase": {"draft": 1.45e9, "revise": 2.11e9}})
        given["flops"].append(write_json_file(root, f, rec))
    reports = {"small": (5625, 3.10, 0.05, 150.0), "small-seed1": (5625, 3.12, 0.06, 151.0),
               "small-ar": (1875, 2.20, 0.02, 140.0), "small-ar-seed1": (1875, 2.21, 0.02, 141.0)}
    for exp, f in spec_data["models"].items():
        given["models"].append(write_json_file(root, f, model_report(exp, *reports[exp])))
    for sel in spec_data["selections"]:
        values, key = ([3e-4, 1e-3, 3e-3], "transformer.train.lr") if sel["name"] == "lr" else \
            ([1.0, 1.4, 1.8, 2.0], "sampling.guidance_scale")
        scores = [3.2, 3.1, 3.15] if sel["name"] == "lr" else [60.0, 52.0, 51.0, 53.0]
        given["selections"].append(write_json_file(root, sel["record"], selection_record(
            sel["experiment"], sel["name"], key, values, scores)))
    return root, given, inputs


def build(root, given, **files):
    """The claims report of the fixture's spec from these files (default: those given)."""
    spec = read_spec(given["spec"], ("claims",))
    use = {k: files.get(k, given[k]) for k in ("metrics", "speed", "flops", "models", "selections")}
    return C.build(spec, use["metrics"], use["speed"], root, flops=use["flops"], models=use["models"],
                   selections=use["selections"])


def verdicts(md: str) -> dict:
    out, name = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            name = line[3:]
        elif line.startswith("**Verdict: "):
            out[name] = line[len("**Verdict: "):].rstrip("*").split(" (")[0]
    return out


def test_the_claims_inputs_are_the_cells_of_the_reports_they_name(suite_files):
    _, given, inputs = suite_files
    spec = read_spec(given["spec"], ("claims",))  # the spec names the same files, run by run
    assert sorted(r["metrics"] for r in spec["runs"] if r["metrics"]) == sorted(inputs["metrics"])
    assert sorted(r["speed"] for r in spec["runs"] if r["speed"]) == sorted(inputs["speed"])
    trend = next(e for e in spec["claims"] if e["name"] == "draft_fid_improves_with_t_draft")
    assert [c["x"] for c in trend["cells"]] == [4, 8, 16, 32, 64]      # typed values, in order
    # 19 ablation cells; the default runs of both models for both seeds; the plain rows of both models
    assert len(inputs["metrics"]) == 25
    assert {f"results/metrics/{e}/default.parquet" for e in ("small", "small-seed1", "small-ar", "small-ar-seed1")} \
        | {"results/metrics/small/plain.parquet", "results/metrics/small-ar/plain.parquet"} <= set(inputs["metrics"])
    assert "results/metrics/small-ar/default.parquet" in inputs["metrics"]
    assert "results/metrics/small/t_draft=8+strategy=top-c-50.parquet" in inputs["metrics"]
    assert "results/metrics/small/strategy=top-c-50.parquet" in inputs["metrics"]   # at the base T_draft 64
    # s/sample only where the paper's speed claim is tested (no time against T_draft), and its FLOPs
    assert sorted(inputs["speed"]) == ["results/speed/small-ar/default.json", "results/speed/small/t_draft=8.json"]
    assert sorted(inputs["flops"]) == ["results/flops/small-ar/default.json", "results/flops/small/t_draft=8.json"]
    assert inputs["models"] == [f"results/transformers/{e}/report.json"
                                for e in ("small", "small-ar", "small-seed1", "small-ar-seed1")]
    assert sorted(inputs["selections"]) == sorted(f"results/select/{e}/{n}.json" for e in ("small", "small-ar")
                                                  for n in ("lr", "guidance"))
    table1 = next(e for e in spec["claims"] if e["name"] == "contextual_beats_ar_fid_precision")
    assert [(p["a"]["experiment"], p["b"]["experiment"]) for p in table1["comparisons"][0]["seeds"]] == [
        ("small", "small-ar"), ("small-seed1", "small-ar-seed1")]
    assert table1["beside"][0]["a"]["variant"] == "plain" and "seeds" not in table1["beside"][0]
    assert spec["spread"] == [["small", "default"], ["small-seed1", "default"]]
    # the tables and figures of the reports the claims name are built with them
    assert sorted(inputs["reports"]) == sorted(
        f"reports/{f}" for f in ("fig4a.png", "fig4b.png", "fig4c.png", "table1.md", "table3.md",
                                 "table4.md", "tableA3.md"))


def test_the_report_computes_the_known_verdicts(suite_files, tmp_path):
    root, given, _ = suite_files
    out = tmp_path / "claims.md"
    C.main(["--spec", given["spec"], "--root", str(root), "--out", str(out),
            *(a for k in ("metrics", "speed", "flops", "models", "selections") for a in (f"--{k}", *given[k]))])
    md = out.read_text()
    v = verdicts(md)
    assert len(v) == len(read_yaml(root / "configs/claims.yaml")["claims"]) == 15
    assert "time_linear_in_t_draft" not in md                          # a test of the code, not a claim
    assert v["revise_beats_draft_every_t_draft"] == "reproduced"
    assert v["revise_beats_draft_every_strategy"] == "reproduced"
    assert v["draft_fid_improves_with_t_draft"] == "reproduced"
    assert v["revised_fid_improves_with_t_draft"] == "inconclusive"     # flat in the fixtures
    assert v["fid_worsens_with_t_revise"] == "inconclusive"
    assert v["precision_rises_with_m"] == "reproduced" and v["recall_falls_with_m"] == "reproduced"
    # Top-C worse, Top-C-50% better than random: one failing comparison fails the claim
    assert v["random_beats_top_c_after_revision_t_draft_64"] == "not reproduced"
    # FID better, recall equal (inconclusive); the precision gap is shown but not required
    assert v["random_beats_top_c_all_metrics_t_draft_8"] == "inconclusive"
    assert "inconclusive (reported, not required) |" in md
    # speed timed on a CPU: no verdict, both samplers' FLOPs per sample instead
    assert v["contextual_faster_than_ar"] == "n/a"
    assert ("**Verdict: n/a (not counted), because timed on cpu (x86_64, 1 threads), not a GPU: the paper's "
            "ordering is GPU latency at batch 100") in md
    assert "- small/t_draft=8: 3.56 GFLOPs per sample (draft 1.45, revise 2.11)" in md
    assert "paired | no verdict (not timed on a GPU) |" in md or "replicates) | no verdict (not timed on a GPU) |" in md
    assert "- small/t_draft=8 does 4.78 times the work of small-ar/default per sample" in md
    # the seed-0 AR model's metrics row was not given: its claims read n/a, with the reason
    assert v["ar_has_higher_recall"] == "n/a" and v["contextual_beats_ar_fid_precision"] == "n/a"
    assert "n/a, because results/metrics/small-ar/default.parquet was not given (--metrics)" in md
    counted = [k for k in v if k not in ("ar_has_higher_recall", "contextual_faster_than_ar",
                                         "contextual_beats_ar_fid_precision")]
    counts = {k: [v[c] for c in counted].count(k) for k in ("reproduced", "not reproduced", "inconclusive")}
    assert (f"**Summary: {len(counted)} claims with a verdict: {counts['reproduced']} reproduced, "
            f"{counts['not reproduced']} not reproduced, {counts['inconclusive']} inconclusive.**") in md
    assert ("Not counted: `contextual_faster_than_ar` (n/a on this run's device), `contextual_beats_ar_fid_precision` "
            "(n/a: a result is missing), `ar_has_higher_recall` (n/a: a result is missing).") in md
    # paired differences of rows with the same boot_key; the paper's words, source and settings
    assert "| 20 vs 28 | +8 [" in md and ", paired |" in md      # base: revised vs draft FID
    assert '> "In the draft phase, FID is improved as T_draft increases from 4 to 64." (§4.4, Figure 4(a))' in md
    assert "Setting: small, draft FID at T_draft 4, 8, 16, 32, 64" in md and "Paper: 821M, draft FID at T_draft 4 to 64" in md
    assert "Shown in: [fig4a.png](fig4a.png)" in md and "Shown in: [table3.md](table3.md)" in md
    # the choices the runs were made with, and every model's training
    assert "| `small` | `transformer.train.lr` | lowest lr score | 0.0003: 3.2, 0.001: 3.1, 0.003: 3.15 | **0.001** |" in md
    assert "| **1.8** |" in md
    assert ("- `small`: held-out NLL 3.1000 nats per code at step 5625 of 5625, +0.0500 over the last quarter "
            "(step 4218 to 5625; positive: still falling); chain-rule NLL 150.0 ± 1.5 nats per map") in md


def test_a_claim_not_reproduced_shows_the_evidence_on_its_cause(suite_files):
    root, given, _ = suite_files
    md = build(root, given)
    section = md.split("## random_beats_top_c_after_revision_t_draft_64")[1].split("\n## ")[0]
    assert "Evidence (the claim is not reproduced):" in section
    assert "- Training: `small-ar`: held-out NLL 2.2000 nats per code at step 1875 of 1875" in section
    assert "chain-rule NLL 140.0 ± 1.5 nats per map (raster order, 256 maps)" in section
    assert ("- Seeds: FID (revised) at the default settings, one per training seed: small/default 20, "
            "small-seed1/default 20; spread 0") in section
    assert "- Resolution: FID (lower is better): small/strategy=top-c-50 (revised) vs" not in section  # a is random
    assert "small/base (revised) vs small/strategy=top-c-50 (revised): half-width" in section
    assert "the paper's effect 3.39" in section
    # a reproduced or inconclusive claim has none
    other = md.split("## draft_fid_improves_with_t_draft")[1].split("\n## ")[0]
    assert "Evidence" not in other


def test_on_a_gpu_the_speed_claim_has_a_verdict(suite_files, tmp_path):
    root, given, _ = suite_files
    shutil.copytree(root / "results", tmp_path / "results")
    for f in given["speed"]:
        rec = json.loads((tmp_path / f).read_text())
        rec.update(timing="torch.cuda.Event", device="NVIDIA H100 80GB HBM3")
        (tmp_path / f).write_text(json.dumps(rec))
    md = build(tmp_path, given)
    assert verdicts(md)["contextual_faster_than_ar"] == "reproduced"          # AR as slow as T_draft 64
    assert "GFLOPs per sample" in md.split("## contextual_faster_than_ar")[1]   # shown beside it


def test_rows_with_other_keys_are_differenced_unpaired_and_said_so(suite_files, tmp_path):
    root, given, _ = suite_files
    ar = tmp_path / "results/metrics/small-ar/default.parquet"
    ar.parent.mkdir(parents=True)
    row = metrics_row("small-ar", "default", "revised", 5000, fixture_values({}, "small-ar")["revised"], 7)
    row["boot_key"] = "another-key"
    write_rows([row], ar)
    md = build(root, given, metrics=[*given["metrics"], str(ar)])  # found by its rows' columns
    section = md.split("## contextual_beats_ar_fid_precision")[1].split("\n## ")[0]
    assert "unpaired (independent replicates)" in section       # seed 0: another key
    assert ", paired |" in section                                # seed 1: the same key
    # FID 20 vs 30 and precision 0.6 vs 0.5 for both seeds: reproduced per seed
    assert verdicts(md)["contextual_beats_ar_fid_precision"] == "reproduced"
    assert "| one seed: FID (lower is better): small-seed1/default (revised) vs small-ar-seed1/default (revised) |" in section
    assert ("small/default (revised) vs small-ar/default (revised), each of the 2 training seeds against the same "
            "seed |  | +10 [") in section and "2 seeds, mean and hull; seed spread" in section
    # the method-only rows beside it, not counted; AR recall reported apart, with its verdict
    assert "Reported beside the verdict, not counted:" in section and "small/plain (revised) vs small-ar/plain" in section
    assert verdicts(md)["ar_has_higher_recall"] == "inconclusive"   # recall equal in the fixtures
    assert "`ar_has_higher_recall` (reported apart: inconclusive)" in md
    assert read_rows(ar)[0]["boot_key"] == "another-key"


def test_bad_claims_files_are_one_line_errors_naming_file_and_key(tmp_path):
    studies = Studies(REPO)
    good = read_yaml(REPO / "configs/claims.yaml")
    cases = [
        (lambda c: c["claims"]["draft_fid_improves_with_t_draft"].update(report="fig9"),
         r"claims.yaml: claims.draft_fid_improves_with_t_draft.report: unknown report 'fig9'"),
        (lambda c: c["claims"]["recall_falls_with_m"].pop("source"),
         r"claims.yaml: claims.recall_falls_with_m: missing field 'source'"),
        (lambda c: c["claims"]["guidance_in_revise_only_lowest_fid"]["comparisons"][0].pop("b"),
         r"claims.guidance_in_revise_only_lowest_fid.comparisons\[0\]: missing field 'b'"),
        (lambda c: c["claims"]["fid_worsens_with_t_revise"].update(parameter="T"),
         r"claims.fid_worsens_with_t_revise.parameter: unknown parameter 'T'"),
    ]
    import copy

    import yaml
    for edit, message in cases:
        data = copy.deepcopy(good)
        edit(data)
        path = tmp_path / "claims.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(DrrError, match=message) as e:
            W.load_claims(path, studies)
        assert "\n" not in str(e.value)


def test_inputs_that_are_no_run_of_the_spec_are_one_line_errors(suite_files, tmp_path):
    root, given, _ = suite_files
    stray = tmp_path / "results/metrics/small/t_draft=5.parquet"
    stray.parent.mkdir(parents=True)
    write_rows([metrics_row("small", "t_draft=5", "revised", 1000, {"fid": 1.0}, 3)], stray)
    with pytest.raises(DrrError, match=r"t_draft=5.parquet: fields 'experiment', 'variant': a row of "
                                       r"small/t_draft=5, which is not a run of the claims spec") as e:
        build(root, given, metrics=[*given["metrics"], str(stray)])
    assert "\n" not in str(e.value)
    with pytest.raises(DrrError, match=r"--speed results/x.json: not the speed file of a run of the claims spec"):
        build(root, given, speed=[*given["speed"], "results/x.json"])


def test_a_cell_selector_matching_no_cell_names_the_claim(suite_files, tmp_path):
    root, given, _ = suite_files
    import yaml
    data = read_yaml(root / "configs/claims.yaml")
    data["claims"]["contextual_faster_than_ar"]["comparisons"][0]["a"] = {"cell": {"t_draft": 9}}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DrrError, match=r"claims.contextual_faster_than_ar: cell t_draft=9 matches 0 cells "
                                       r"of report table4"):
        RS.claims_spec(small_plan(root), path)  # when the plan writes the spec, before any report


def test_dry_run_of_the_claims_target_plans_its_cells(tmp_path):
    cwd = copy_workflow(tmp_path)
    counts = planned_jobs(cwd, "reports/claims.md", "--config", "suite=small")
    assert counts["claims"] == 1
    # 19 cells, 4 default runs (two seeds of each model, Table 1), 2 plain rows and 2 x 4 guidance
    # validation sets; timed: Table 4's three cells and its two AR seeds (the speed claim's among them)
    assert counts["compute_metrics"] == 33 and counts["sampling_speed"] == 5
    assert counts["train_transformer"] == 4
    assert counts["sweep_transformer"] == 6 and counts["select_setting"] == 4   # lr and guidance of both models
    assert counts["report_transformer"] == 4 and counts["sampling_flops"] == 2
    # the tables and figures of the claims' reports, from the same files: no other cell or model
    assert counts["report_table"] == 4 and counts["report_figure"] == 3


def test_rule_all_has_the_claims_on_suite_small_only(tmp_path):
    cwd = copy_workflow(tmp_path)
    assert planned_jobs(cwd, "--config", "suite=small").get("claims") == 1
    assert "claims" not in planned_jobs(cwd, "--config", "suite=tiny")


def test_editing_the_claims_file_changes_the_rules_hash(suite_files):
    root, _, _ = suite_files
    wf = read_yaml(root / "configs/workflow.yaml")
    wf["suite"] = "small"
    plan = Plan(root, wf)
    path = root / "configs/claims.yaml"
    before, text = W.claims_hash(plan), path.read_text()
    spec_before = RS.spec_hash(plan, "claims")  # the rerun parameter of the claims' spec job
    try:
        path.write_text(text.replace("better: lower", "better: higher", 1))
        assert W.claims_hash(plan) != before and RS.spec_hash(plan, "claims") != spec_before
    finally:
        path.write_text(text)
    assert W.claims_hash(plan) == before and RS.spec_hash(plan, "claims") == spec_before


def test_unreadable_inputs_are_one_line_errors_naming_the_file(suite_files, tmp_path):
    root, given, _ = suite_files
    bad = tmp_path / "results/metrics/small/base.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_text("not parquet")
    metrics = [f for f in given["metrics"] if not f.endswith("small/base.parquet")] + [str(bad)]
    with pytest.raises(DrrError, match=r"base.parquet: not a metrics file") as e:
        build(root, given, metrics=metrics)
    assert "\n" not in str(e.value)
    # a speed file is the run's whose file the spec names so: a copy of the results with one broken
    shutil.copytree(root / "results", tmp_path / "copy/results")
    (tmp_path / "copy/results/speed/small/t_draft=8.json").write_text("{")
    with pytest.raises(DrrError, match=r"t_draft=8.json: not a speed file"):
        build(tmp_path / "copy", given)
    # so is every other file of the evidence, found by the path the spec names it by
    for kind, path, message in [("flops", "results/flops/small-ar/default.json", "not a FLOPs count"),
                                ("models", "results/transformers/small/report.json", "not a transformer report"),
                                ("selections", "results/select/small/lr.json", "not a selection record")]:
        shutil.rmtree(tmp_path / "copy")
        shutil.copytree(root / "results", tmp_path / "copy/results")
        (tmp_path / "copy" / path).write_text("[1, 2")
        with pytest.raises(DrrError, match=f"{path}: {message}") as e:
            build(tmp_path / "copy", given)
        assert "\n" not in str(e.value)
    with pytest.raises(DrrError, match=r"--flops results/x.json: not a FLOPs count \(drr.sampling.flops\) named by"):
        build(root, given, flops=[*given["flops"], "results/x.json"])


def test_a_missing_evidence_file_reads_n_a_with_the_reason(suite_files):
    root, given, _ = suite_files
    md = build(root, given, models=[f for f in given["models"] if "small-ar/" not in f], flops=[])
    assert "- `small-ar`: n/a, because results/transformers/small-ar/report.json was not given (--models)" in md
    assert "- small/t_draft=8: n/a, because results/flops/small/t_draft=8.json was not given (--flops)" in md


# --- FLOPs per sample (drr.sampling.flops): the cost the speed claim shows on a CPU ---------------

def test_flops_per_sample_count_the_samplers_forwards(tmp_path):
    """On a tiny model: the count per sample does not depend on how many samples are counted; the
    draft phase grows linearly in T_draft (one spatial forward a step); guidance doubles the rows of
    a guided phase; the CLI writes the record."""
    import torch

    from drr.core.config import save_config
    from drr.sampling import flops as F
    from drr.transformer.train import train
    from transformer_fixtures import make_tokenizer_and_codes, tiny_config

    torch.set_num_threads(1)
    cfg = tiny_config("transformer.train.steps=1")
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg)
    model = train(cfg, tok, codes, tmp_path / "ctx/t.pt")

    def count(*settings, samples=2):
        return F.count(tiny_config("transformer.train.steps=1", *settings), tok, model, samples)

    one, three = count(samples=1), count(samples=3)
    assert one["flops_per_sample"] == three["flops_per_sample"] > 0
    draft = {t: count(f"sampling.t_draft={t}")["flops_per_sample_by_phase"]["draft"] for t in (2, 4, 8)}
    assert draft[8] - draft[4] == 2 * (draft[4] - draft[2]) > 0
    guided = count("sampling.guidance_in=revise")["flops_per_sample_by_phase"]["revise"]
    plain = count("sampling.guidance_in=none")["flops_per_sample_by_phase"]["revise"]
    assert guided == 2 * plain
    ar_cfg = tiny_config("transformer.train.steps=1", "transformer.model.kind=ar")
    ar_model = train(ar_cfg, tok, codes, tmp_path / "ar/t.pt")
    ar = {s: F.count(tiny_config("transformer.train.steps=1", "transformer.model.kind=ar",
                                 f"sampling.ar.guidance_scale={s}"), tok, ar_model)["flops_per_sample"]
          for s in ("null", "1.5")}
    assert ar["1.5"] == 2 * ar["null"]
    config = tmp_path / "c.yaml"
    save_config(cfg, config)
    F.main(["--config", str(config), "--tokenizer", str(tok), "--transformer", str(model),
            "--json", str(tmp_path / "f.json")])
    rec = json.loads((tmp_path / "f.json").read_text())
    assert rec["flops_per_sample"] == count()["flops_per_sample"] and rec["counted_with"] == F.COUNTER
    assert set(rec["flops_per_sample_by_phase"]) == {"draft", "revise"}


def test_a_suite_without_plain_runs_keeps_the_table_1_claim_and_says_why_beside_is_n_a(tmp_path):
    """The paper suite has one seed of each model and no named runs: the Table 1 claim compares seed
    0 as before, and the comparisons beside it read n/a with the reason."""
    root = copy_workflow(tmp_path)
    wf = read_yaml(root / "configs/workflow.yaml")
    wf["suite"] = "tiny"
    spec = RS.claims_spec(Plan(root, wf))
    entry = next(e for e in spec["claims"] if e["name"] == "contextual_beats_ar_fid_precision")
    assert [(p["a"]["experiment"], p["b"]["experiment"]) for p in entry["comparisons"][0]["seeds"]] == [("tiny", "tiny-ar")]
    assert entry["beside"][0]["na"] == "suite tiny has no run 'plain' of tiny (configs/workflow.yaml `runs`)"
    assert spec["spread"] == [] and spec["selections"] == [] and set(spec["models"]) == {"tiny", "tiny-ar"}
    assert not any(r["variant"] == "plain" for r in spec["runs"])


def test_a_run_that_takes_the_other_seeds_away_compares_seed_0_alone(tmp_path):
    """`--config 'suites={small: {experiments: [small, small-ar], seeds: {small: [], small-ar: []}}}'`
    (the schema allows an empty list) leaves the small suite one training seed: Table 1's claim
    compares seed 0 alone, and no seed spread is planned."""
    root = copy_workflow(tmp_path)
    wf = read_yaml(root / "configs/workflow.yaml")
    wf["suite"] = "small"
    wf["suites"]["small"].update(experiments=["small", "small-ar"], seeds={"small": [], "small-ar": []})
    spec = RS.claims_spec(Plan(root, wf))
    entry = next(e for e in spec["claims"] if e["name"] == "contextual_beats_ar_fid_precision")
    assert [(p["a"]["experiment"], p["b"]["experiment"]) for p in entry["comparisons"][0]["seeds"]] == [
        ("small", "small-ar")]
    assert spec["spread"] == [] and set(spec["models"]) == {"small", "small-ar"}
