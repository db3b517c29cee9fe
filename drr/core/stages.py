"""Stage keys: the part of a resolved experiment config that can change the result of each stage.

One definition, used everywhere a result is compared with the config that asks for it:
`stage_config(cfg, stage)` keeps the keys of `STAGES[stage]` less the `NEUTRAL` keys (and less the
`ADDED_KEYS` at the value results were made with before they existed); its hash
(`stage_hash`) is the rerun parameter of every rule of the workflow (drr.workflow.plan, the rule
files); `first_difference` is the training resume check (drr.core.training); the shard identity of
drr.sampling.generate is the `samples` stage; the reference file name is the `reference` stage.

Inputs (files a rule reads: checkpoints, code maps, samples) are tracked by Snakemake itself, so a
stage's config lists only what the stage reads from the config beyond its input files: the
transformer stage leaves out how the tokenizer was trained (its checkpoint is an input), and the
metrics stage leaves out how the samples were made (samples.npz is an input). A job may import this
module: it depends on nothing above drr.core.
"""

from __future__ import annotations

import copy

from drr.core.config import config_hash, first_differing, flatten

# Keys that cannot change any result, each with the code that shows why.
NEUTRAL = {
    "data.root": "where the files live (the data is checked by content: code-map metadata, reference key)",
    "data.cache_dir": "where downloads are kept",
    "data.download": "whether a missing dataset may be downloaded (checked against sha256 sums)",
    "tokenizer.train.checkpoint_every": "how often state is saved; a resumed run continues bit for bit",
    "tokenizer.train.checkpoint_minutes": "how often (wall time) state is saved; a resumed run continues "
                                          "bit for bit",
    "tokenizer.train.log_every": "how often metrics are logged",
    "tokenizer.train.num_workers": "loader processes; data order is batch_indices(seed, step), no augmentation",
    "tokenizer.encode.batch_size": "the encoder is per-image (GroupNorm, eval mode)",
    "transformer.train.checkpoint_every": "how often state is saved",
    "transformer.train.checkpoint_minutes": "how often (wall time) state is saved",
    "transformer.train.log_every": "how often metrics are logged",
    "transformer.train.compile": "torch.compile runs the same model",
    "transformer.train.eval_every": "held-out NLL during training: no gradients, its own mask generator, "
                                    "no random stream of the training steps touched (tests/test_transformer_train.py); "
                                    "setting it on a finished model still retrains it once, since the held-out "
                                    "code maps become an input of the training job (the weights come out the same)",
    "transformer.train.eval_maps": "how many held-out maps those evaluations score",
    "transformer.train.snapshot_every": "copies of the weights kept during training; no random stream "
                                        "or weight changes (tests/test_transformer_train.py)",
    "transformer.launch": "where and how long training runs (SLURM settings, submitit)",
    "tokenizer.launch": "where and how long tokenizer training runs (as transformer.launch)",
    "generation.batch_size": "samples decoded together; sample i depends on (seed, i) only "
                             "(tests/test_generate.py: the same samples at batch 1, 3, 8); the speed "
                             "measurement has its own generation.speed_batch_size",
    "generation.grid_samples": "samples in the PNG grid (merge stage only: the `merge` stage keeps it)",
    "generation.speed_batches": "how many batches the speed measurement averages over",
    "metrics.batch_size": "Inception is per-image; the feature cache key (drr.metrics.score) omits it",
}


# stage -> dotted config keys (subtrees) the stage's result depends on; `-key` removes a subtree.
STAGES = {
    "tokenizer": ["seed", "data", "-data.eval_split", "tokenizer.name", "tokenizer.checkpoint",
                  "tokenizer.model", "tokenizer.loss", "tokenizer.train"],
    "codes": ["data", "-data.train_split", "-data.eval_split", "tokenizer.name", "tokenizer.encode"],
    "tokenizer_report": ["data", "-data.train_split", "tokenizer.name", "tokenizer.report",
                         "metrics.fid_network"],
    "text_tokenizer": ["transformer.model.cond.vocab_size"],  # the caption BPE (rule train_text_tokenizer)
    "transformer": ["seed", "data.name", "data.resolution", "data.max_images", "data.train_split",
                    "tokenizer.name", "tokenizer.model", "transformer.checkpoint",
                    "transformer.model", "transformer.train"],
    "transformer_report": ["seed", "data.eval_split", "transformer.model", "transformer.train.precision",
                           "transformer.report"],
    "samples": ["seed", "tokenizer.name", "tokenizer.model", "transformer.checkpoint",
                "transformer.model", "sampling", "generation", "-generation.speed_batch_size",
                "-generation.ablation_samples"],
    "merge": ["seed", "tokenizer.name", "tokenizer.model", "transformer.model", "sampling", "generation",
              "-generation.speed_batch_size", "-generation.ablation_samples", "generation.grid_samples"],
    "speed": ["seed", "tokenizer.model", "transformer.model", "sampling", "generation.speed_batch_size",
              "generation.conditions"],
    "reference": ["data", "-data.train_split", "-data.eval_split", "metrics.reference_split",
                  "metrics.reference_images", "metrics.pr_reference_size", "metrics.fid_network"],
    "metrics": ["data.name", "data.resolution", "metrics"],
    "pictures": ["seed", "tokenizer.model", "transformer.model", "sampling", "data.eval_split"],
}


# Keys added to configs/base.yaml after results had been made, each with the value that made those
# results: at that value a stage config leaves the key out, so the stage hashes, and with them the
# finished runs made before the key existed, stay as they were; any other value is hashed. Sampling
# ran in fp32 before `sampling.precision` existed (a bf16 run hashes apart from an fp32 one); fp32
# sampling on a CPU is the same bit for bit, on a GPU it now has TF32 matmuls (float rounding, as
# another GPU model would change it). Every run started at sample 0 before `generation.first_index`
# existed.
# A tokenizer step ran each process's share in one pass before `tokenizer.train.micro_batch_size`
# existed (null); micro-batches change VQGAN's adaptive weight (per micro-batch) when the
# discriminator is on, and the rounding otherwise.
ADDED_KEYS = {"sampling.precision": "fp32", "tokenizer.train.micro_batch_size": None,
              "generation.first_index": 0}


# Keys an imported tokenizer (tokenizer.checkpoint set) never reads: experiments importing the same
# file share one tokenizer (one import, one set of code maps) whatever these say.
IMPORT_UNUSED = ("tokenizer.train", "tokenizer.loss")


# Shard files of a sample set: the one place their names are formatted.
SHARD_NAME = "shard-{:05d}.npz"


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _put(out: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        out = out.setdefault(part, {})
    out[parts[-1]] = copy.deepcopy(value)


def _drop(out: dict, dotted: str) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        out = out.get(part)
        if not isinstance(out, dict):
            return
    out.pop(parts[-1], None)


def stage_config(cfg: dict, stage: str) -> dict:
    """The part of a resolved config that can change the result of `stage` (see STAGES, NEUTRAL)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    keys = STAGES[stage]
    out: dict = {}
    for key in keys:
        if not key.startswith("-"):
            found, value = _get(cfg, key)
            if found:
                _put(out, key, value)
    for key in keys:
        if key.startswith("-"):
            _drop(out, key[1:])
    for key in NEUTRAL:
        if key not in keys:  # a stage that lists a neutral key by name keeps it (merge: grid_samples)
            _drop(out, key)
    for key, value in ADDED_KEYS.items():
        if _get(out, key) == (True, value):
            _drop(out, key)
    if stage == "tokenizer" and _get(cfg, "tokenizer.checkpoint")[1]:
        for key in IMPORT_UNUSED:  # an imported tokenizer is the file's weights, not a training run
            _drop(out, key)
    return out


def stage_hash(cfg: dict, stage: str) -> str:
    return config_hash(stage_config(cfg, stage))


def first_difference(old: dict, new: dict, stage: str) -> str | None:
    """'key X (this run: Y)' for the first key of `stage` in which two configs differ, or None."""
    diff = first_differing(flatten(stage_config(old, stage)), flatten(stage_config(new, stage)))
    return None if diff is None else f"{diff[0]} {diff[1]!r} (this run: {diff[2]!r})"
