"""Parquet code maps.

Layout of one code map (a folder)::

    part-00000.parquet ...   rows: index (int64), label (int32, -1 if none), caption (string),
                             codes (fixed_size_list<int16>[H*W*D], raster order then depth)
    _SUCCESS                 written last; a folder without it is not a code map

Every shard carries the same file metadata under the key ``drr`` (JSON): code_shape [H, W, D],
codebook_size, tokenizer_sha256 (sha256 of the tokenizer checkpoint file), tokenizer name, dataset,
split, preprocessing, num_rows of the whole map, and the provenance record.

Reading back concatenates the shards' ``codes`` columns into one (N, H, W, D) int16 array with no
per-row Python work (the fixed-size list's flat value buffer is reshaped).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from drr.core.errors import DrrError

META_KEY = b"drr"
SUCCESS = "_SUCCESS"


def _schema(code_len: int, meta: dict) -> pa.Schema:
    return pa.schema(
        [("index", pa.int64()), ("label", pa.int32()), ("caption", pa.string()),
         ("codes", pa.list_(pa.int16(), code_len))],
        metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()},
    )


class CodeMapWriter:
    """Append batches of codes; one Parquet file per `rows_per_shard` rows.

    Shards are written under ``<folder>.partial/`` (each to a temporary name, then renamed) and the
    folder is renamed to its final name by `finish`, after `_SUCCESS` is written: a killed job leaves
    only the .partial folder, and `completed_rows` lets a rerun skip the shards already there.
    """

    def __init__(self, folder, meta: dict, rows_per_shard: int, row_group_size: int = 16384):
        self.folder = Path(folder)
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        self.partial.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        h, w, d = meta["code_shape"]
        self.code_len = h * w * d
        self.rows_per_shard = rows_per_shard
        self.row_group_size = row_group_size
        self.schema = _schema(self.code_len, meta)
        self._buf: list[pa.RecordBatch] = []
        self._buffered = 0
        self.shard = len(self._done_shards())

    def _done_shards(self) -> list[Path]:
        return sorted(self.partial.glob("part-*.parquet"))

    def completed_rows(self) -> int:
        """Rows already in finished shards (a rerun resumes after them)."""
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._done_shards())

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
        path = self.partial / f"part-{self.shard:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(head, tmp, compression="zstd", compression_level=9,
                       row_group_size=self.row_group_size, use_dictionary=False)
        tmp.rename(path)
        self.shard += 1
        self._buf = rest.to_batches()
        self._buffered = rest.num_rows

    def finish(self) -> Path:
        if self._buffered:
            self._flush(self._buffered)
        (self.partial / SUCCESS).write_text(json.dumps(self.meta, sort_keys=True, indent=1) + "\n")
        if self.folder.exists():
            raise DrrError(f"{self.folder}: already exists; remove it to rebuild the code map")
        self.partial.rename(self.folder)
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
        for p, m in zip(shards, metas):
            if META_KEY not in m:
                raise DrrError(f"{p}: no '{META_KEY.decode()}' metadata; not written by drr")
        self.meta = json.loads(metas[0][META_KEY])
        for p, m in zip(shards[1:], metas[1:]):
            other = json.loads(m[META_KEY])
            for key in ("code_shape", "codebook_size", "tokenizer_sha256", "dataset", "split"):
                if other.get(key) != self.meta.get(key):
                    raise DrrError(f"{p}: metadata '{key}' is {other.get(key)!r}, "
                                   f"but {shards[0].name} has {self.meta.get(key)!r}")
        h, w, d = self.meta["code_shape"]
        tables = [_parquet(p, lambda q: _check_columns(pq.read_table(q, memory_map=True), h * w * d))
                  for p in shards]
        table = pa.concat_tables(tables)
        col = table.column("codes").combine_chunks()
        self.codes = col.values.to_numpy(zero_copy_only=False).reshape(len(col), h, w, d)
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
