"""The metric columns, one registry for tables, figures and claims: for each metric the metrics row's
fields (drr.metrics.score: point estimate, bootstrap replicates, the reason it is n/a), how it is
named and printed, and which direction is better."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str                 # the name configs use (configs/studies.yaml, configs/claims.yaml)
    field: str               # the row field of the point estimate (speed: the speed file's s/sample)
    boot: str | None         # the row field of its bootstrap replicates; None: speed (its own file)
    note: str | None         # the row field that says why it is n/a
    label: str               # its name in prose (claims)
    header: str              # its column header in tables
    fmt: str                 # format spec of a value
    better: str              # lower | higher

    @property
    def arrow(self) -> str:
        return "↓" if self.better == "lower" else "↑"


COLUMNS = {c.key: c for c in (
    Column("fid", "fid", "boot_fid", "fid_note", "FID", "FID", ".2f", "lower"),
    Column("is", "is_mean", "boot_is", "is_note", "IS", "IS", ".1f", "higher"),
    Column("precision", "precision", "boot_precision", "pr_note", "precision", "P", ".2f", "higher"),
    Column("recall", "recall", "boot_recall", "pr_note", "recall", "R", ".2f", "higher"),
    Column("kid", "kid_mean", "boot_kid", "kid_note", "KID", "KID", ".4f", "lower"),
    Column("clip", "clip_score", "boot_clip", "clip_note", "CLIP score", "CLIP-s", ".3f", "higher"),
    Column("s_per_sample", "s_per_sample", None, None, "s/sample", "s/sample", ".3f", "lower"),
)}

# The columns a table of configs/studies.yaml may show (KID is computed and used by claims only).
TABLE_COLUMNS = ("fid", "is", "precision", "recall", "clip", "s_per_sample")
