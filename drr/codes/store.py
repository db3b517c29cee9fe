"""Parquet code maps.

Layout of one code map (a folder)::

    part-00000.parquet ...   rows: index (int64), label (int32, -1 if none), caption (string),
                             codes (fixed_size_list<int16>[H*W*D], raster order then depth)
    _SUCCESS                 written last; a folder without it is not a code map

Every shard carries the same file metadata under the key ``drr`` (JSON): code_shape [H, W, D],
codebook_size, tokenizer_sha256 (sha256 of the tokenizer checkpoint file), tokenizer name, dataset,
split, preprocessing, num_rows of the whole map, and the provenance record.

Reading back concatenates the shards' ``codes`` columns into one (N, H, W, D) int16 array with no
per-row Python work (the fixed-size list's flat value buffer is reshaped). What is read is checked
before any work is done with it, each failure one line naming the shard and the field: metadata
that is JSON with a code_shape [H, W, D] and a codebook_size K, integer columns, every code in
0..K-1, and at least one row.

Writing resumes: a rerun keeps the finished shards of ``<folder>.partial/`` that read back whole
and were made for the same map (same metadata, provenance aside); the first one that does not
(damaged by a crash of the machine, or left by a run with another tokenizer or data) is removed
with every shard after it, and made again. Temporaries left by a killed writer are removed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from drr.core.errors import DrrError
from drr.core.files import atomic_path, fsync_path, write_text

META_KEY = b"drr"
SUCCESS = "_SUCCESS"
MAX_CODEBOOK = 1 << 15  # codes are stored as int16: 0..32767
# Metadata that differs from run to run of the same map (a rerun's shards may differ in it).
RUN_FIELDS = ("provenance",)


def _identity(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in RUN_FIELDS}


def _schema(code_len: int, meta: dict) -> pa.Schema:
    return pa.schema(
        [("index", pa.int64()), ("label", pa.int32()), ("caption", pa.string()),
         ("codes", pa.list_(pa.int16(), code_len))],
        metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()},
    )


def partial_folder(folder) -> Path:
    """``<folder>.partial``, where the shards of `folder` are written; DrrError if a link or a file
    is at that name (the shards would be written elsewhere, or nowhere)."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise DrrError(f"{partial}: is not a folder (a link or a file); remove it")
    return partial


class CodeMapWriter:
    """Append batches of codes; one Parquet file per `rows_per_shard` rows.

    Shards are written under ``<folder>.partial/`` (each to a temporary name, then renamed) and the
    folder is renamed to its final name by `finish`, after `_SUCCESS` is written: a killed job leaves
    only the .partial folder, and `completed_rows` lets a rerun skip the shards already there (the
    ones that read back whole and belong to this map; see the module docstring).
    """

    def __init__(self, folder, meta: dict, rows_per_shard: int, row_group_size: int = 16384):
        self.folder = Path(folder)
        self.partial = partial_folder(self.folder)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        h, w, d = meta["code_shape"]
        self.code_len = h * w * d
        self.rows_per_shard = rows_per_shard
        self.row_group_size = row_group_size
        self.schema = _schema(self.code_len, meta)
        self._buf: list[pa.RecordBatch] = []
        self._buffered = 0
        self._rows = self._resume()
        self.shard = len(self._rows)

    def _resume(self) -> list[int]:
        """Rows of each finished shard that is kept; removes temporaries, a stale _SUCCESS, and
        from the first shard that is damaged or not of this map on, every shard."""
        for stale in self.partial.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        (self.partial / SUCCESS).unlink(missing_ok=True)
        rows = []
        shards = sorted(self.partial.glob("part-*.parquet"))
        for i, p in enumerate(shards):
            why, n = ((f"it should be part-{i:05d}.parquet", 0) if p.name != f"part-{i:05d}.parquet"
                      else self._check_shard(p))
            if why is not None:
                for q in shards[i:]:
                    q.unlink()
                print(f"{p}: {why}; removed with the {len(shards) - i - 1} shard(s) after it, "
                      f"to be made again", file=sys.stderr, flush=True)
                break
            rows.append(n)
        return rows

    def _check_shard(self, p: Path) -> tuple[str | None, int]:
        """(why a finished shard cannot be kept or None, its rows): it must be a regular file that
        reads back whole, with this map's columns and metadata (provenance aside) and rows."""
        if p.is_symlink() or not p.is_file():
            return "not a regular file", 0
        try:
            table = pq.read_table(p)
            _check_columns(table, self.code_len)
        except (pa.ArrowException, OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"damaged ({first[:120]})", 0
        if not table.schema.remove_metadata().equals(self.schema.remove_metadata()):
            return "its columns are not this map's", 0
        try:
            theirs = json.loads((table.schema.metadata or {}).get(META_KEY, b""))
        except (ValueError, UnicodeDecodeError):
            return f"its '{META_KEY.decode()}' metadata is not JSON", 0
        mine = json.loads(self.schema.metadata[META_KEY])
        if not isinstance(theirs, dict) or _identity(theirs) != _identity(mine):
            return "made for another code map (its metadata differs)", 0
        if len(table) == 0:
            return "it holds no rows", 0
        return None, len(table)

    def completed_rows(self) -> int:
        """Rows already in finished shards (a rerun resumes after them)."""
        return sum(self._rows)

    def write(self, index: np.ndarray, codes: np.ndarray, label: np.ndarray | None = None,
              caption: list[str] | None = None) -> None:
        """codes: (B, H, W, D) integers < codebook_size."""
        n = len(index)
        codes = np.ascontiguousarray(codes, dtype=np.int16).reshape(n, self.code_len)
        label = np.full(n, -1, np.int32) if label is None else np.asarray(label, np.int32)
        caption = [""] * n if caption is None else list(caption)
        flat = pa.array(codes.reshape(-1), pa.int16())
        batch = pa.RecordBatch.from_arrays(
            [pa.array(np.asarray(index, np.int64)), pa.array(label), pa.array(caption, pa.string()),
             pa.FixedSizeListArray.from_arrays(flat, self.code_len)], schema=self.schema)
        self._buf.append(batch)
        self._buffered += n
        while self._buffered >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._buf, schema=self.schema)
        head, rest = table.slice(0, rows), table.slice(rows)
        with atomic_path(self.partial / f"part-{self.shard:05d}.parquet") as tmp:
            pq.write_table(head, tmp, compression="zstd", compression_level=9,
                           row_group_size=self.row_group_size, use_dictionary=False)
        self.shard += 1
        self._rows.append(rows)
        self._buf = rest.to_batches()
        self._buffered = rest.num_rows

    def finish(self) -> Path:
        if self._buffered:
            self._flush(self._buffered)
        write_text(self.partial / SUCCESS, json.dumps(self.meta, sort_keys=True, indent=1) + "\n")
        if os.path.lexists(self.folder):
            raise DrrError(f"{self.folder}: already exists; remove it to rebuild the code map")
        self.partial.rename(self.folder)
        fsync_path(self.folder.parent)  # the rename reaches the disk before the job reports success
        return self.folder


COLUMNS = ("codes", "index", "label", "caption")


def _parquet(path: Path, read):
    """`read(path)`, with a damaged or truncated Parquet file as a DrrError naming it."""
    try:
        return read(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrrError(f"{path}: not a readable Parquet shard ({first[:160]})") from None


def _check_columns(table: pa.Table, codes_per_row: int) -> pa.Table:
    """`table` if it has drr's columns and every row holds `codes_per_row` codes (else ValueError)."""
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"column '{missing[0]}' is missing")
    lengths = pc.list_value_length(table.column("codes"))
    if len(table) and (pc.min(lengths).as_py() != codes_per_row
                       or pc.max(lengths).as_py() != codes_per_row):
        raise ValueError(f"column 'codes' does not hold {codes_per_row} codes in every row")
    return table


def _read_meta(path: Path, metadata: dict) -> dict:
    """A shard's ``drr`` metadata, checked: a JSON object with code_shape [H, W, D] (positive
    integers) and codebook_size K (1..MAX_CODEBOOK); DrrError naming the shard and the field."""
    key = META_KEY.decode()
    if META_KEY not in metadata:
        raise DrrError(f"{path}: no '{key}' metadata; not written by drr")
    try:
        meta = json.loads(metadata[META_KEY])
    except (ValueError, UnicodeDecodeError):
        raise DrrError(f"{path}: metadata '{key}' is not JSON; not written by drr") from None
    if not isinstance(meta, dict):
        raise DrrError(f"{path}: metadata '{key}' is not a JSON object; not written by drr")

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0
    shape = meta.get("code_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(count(v) for v in shape)):
        raise DrrError(f"{path}: metadata 'code_shape' is {shape!r}, expected [H, W, D] "
                       f"(positive integers)")
    k = meta.get("codebook_size")
    if not (count(k) and k <= MAX_CODEBOOK):
        raise DrrError(f"{path}: metadata 'codebook_size' is {k!r}, expected an integer "
                       f"1..{MAX_CODEBOOK} (codes are stored as int16)")
    return meta


def _check_values(path: Path, table: pa.Table, k: int) -> pa.Table:
    """`table` if its index and label columns are integers and its codes integers in 0..K-1
    without nulls; DrrError naming the shard and the column otherwise. A code map of floats would
    be truncated to integers, and a code outside the codebook would index past the embeddings."""
    for name in ("index", "label"):
        if not pa.types.is_integer(table.schema.field(name).type):
            raise DrrError(f"{path}: column '{name}' holds {table.schema.field(name).type} values, "
                           f"not integers")
    if not pa.types.is_string(table.schema.field("caption").type) \
            and not pa.types.is_large_string(table.schema.field("caption").type):
        raise DrrError(f"{path}: column 'caption' holds {table.schema.field('caption').type} "
                       f"values, not strings")
    ctype = table.schema.field("codes").type
    if not (pa.types.is_list(ctype) or pa.types.is_fixed_size_list(ctype)
            or pa.types.is_large_list(ctype)):
        raise DrrError(f"{path}: column 'codes' holds {ctype} values, not lists of codes")
    if not pa.types.is_integer(ctype.value_type):
        raise DrrError(f"{path}: column 'codes' holds {ctype.value_type} codes, not integers "
                       f"(they would be truncated)")
    codes = table.column("codes")
    values = pc.list_flatten(codes)
    if codes.null_count or values.null_count:
        raise DrrError(f"{path}: column 'codes' has missing (null) codes")
    if len(values):
        lo, hi = pc.min_max(values).values()
        if lo.as_py() < 0 or hi.as_py() >= k:
            raise DrrError(f"{path}: column 'codes' spans [{lo.as_py()}, {hi.as_py()}], outside "
                           f"the codebook's 0..{k - 1} (metadata 'codebook_size' {k})")
    return table


class CodeMap:
    """A finished code map, loaded into memory: `codes` (N, H, W, D) int16, `labels`, `captions`."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not (self.folder / SUCCESS).exists():
            raise DrrError(f"{self.folder}: not a finished code map (no {SUCCESS})")
        shards = sorted(self.folder.glob("part-*.parquet"))
        if not shards:
            raise DrrError(f"{self.folder}: no part-*.parquet shards")
        metas = [_parquet(p, lambda q: pq.read_schema(q).metadata or {}) for p in shards]
        metas = [_read_meta(p, m) for p, m in zip(shards, metas)]
        self.meta = metas[0]
        for p, other in zip(shards[1:], metas[1:]):
            for key in ("code_shape", "codebook_size", "tokenizer_sha256", "dataset", "split"):
                if other.get(key) != self.meta.get(key):
                    raise DrrError(f"{p}: metadata '{key}' is {other.get(key)!r}, "
                                   f"but {shards[0].name} has {self.meta.get(key)!r}")
        h, w, d = self.meta["code_shape"]
        k = self.meta["codebook_size"]
        tables = [_check_values(p, _parquet(p, lambda q: _check_columns(
            pq.read_table(q, memory_map=True), h * w * d)), k) for p in shards]
        try:
            table = pa.concat_tables(tables)
        except pa.ArrowException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DrrError(f"{self.folder}: the shards' columns differ in type "
                           f"({first[:160]})") from None
        if len(table) == 0:
            raise DrrError(f"{self.folder}: holds no rows; encode the split again")
        col = table.column("codes").combine_chunks()
        flat = col.flatten().cast(pa.int16())  # in range (checked): int16 whatever was stored
        self.codes = flat.to_numpy(zero_copy_only=False).reshape(len(col), h, w, d)
        self.index = table.column("index").to_numpy()
        self.labels = table.column("label").to_numpy()
        self._captions = table.column("caption")
        if self.meta.get("num_rows") is not None and self.meta["num_rows"] != len(self.codes):
            raise DrrError(f"{self.folder}: metadata 'num_rows' is {self.meta['num_rows']}, "
                           f"shards hold {len(self.codes)} rows")

    @property
    def captions(self) -> list[str]:
        return self._captions.to_pylist()

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["code_shape"])

    def __len__(self) -> int:
        return len(self.codes)

    def check(self, tokenizer_sha256: str | None = None, code_shape=None, codebook_size=None):
        """Refuse a code map built with another tokenizer (or shape/codebook) than expected."""
        def refuse(key, want):
            raise DrrError(f"{self.folder}: metadata '{key}' is {self.meta.get(key)!r}, the model "
                           f"is configured for {want!r}; rebuild the code map with that tokenizer")
        if tokenizer_sha256 is not None and self.meta.get("tokenizer_sha256") != tokenizer_sha256:
            refuse("tokenizer_sha256", tokenizer_sha256)
        if code_shape is not None and list(self.meta["code_shape"]) != list(code_shape):
            refuse("code_shape", list(code_shape))
        if codebook_size is not None and self.meta["codebook_size"] != codebook_size:
            refuse("codebook_size", codebook_size)
        return self


def count_rows(folder) -> int:
    """Rows of a finished code map, from its shards' Parquet footers (no codes read)."""
    folder = Path(folder)
    if not (folder / SUCCESS).exists():
        raise DrrError(f"{folder}: not a finished code map (no {SUCCESS})")
    shards = sorted(folder.glob("part-*.parquet"))
    if not shards:
        raise DrrError(f"{folder}: no part-*.parquet shards")
    return sum(_parquet(p, pq.read_metadata).num_rows for p in shards)


def open_code_map(folder, **expect) -> CodeMap:
    """Load a code map and check it against the expected tokenizer sha256 / shape / codebook."""
    return CodeMap(folder).check(**expect)


class CodesDataset(torch.utils.data.Dataset):
    """A torch Dataset over a code map: items {'codes': (H, W, D) int64, 'label', 'index'}.

    For training, `batch(indices)` returns a whole batch by fancy indexing, without per-row Python.
    """

    def __init__(self, code_map: CodeMap):
        self.map = code_map

    def __len__(self) -> int:
        return len(self.map)

    def __getitem__(self, i: int) -> dict:
        return {"codes": torch.from_numpy(self.map.codes[i].astype(np.int64)),
                "label": int(self.map.labels[i]), "index": int(self.map.index[i])}

    def batch(self, indices) -> dict:
        indices = np.asarray(indices)
        return {"codes": torch.from_numpy(self.map.codes[indices].astype(np.int64)),
                "label": torch.from_numpy(self.map.labels[indices].astype(np.int64)),
                "index": torch.from_numpy(self.map.index[indices])}
