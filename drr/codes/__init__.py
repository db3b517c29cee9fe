"""Code maps: a dataset split encoded by a tokenizer, stored as Parquet shards.

    drr.codes.store    write/read the shards, metadata checks, a torch Dataset over them
    drr.codes.encode   `python -m drr.codes.encode`: encode a split with a tokenizer checkpoint
"""

from drr.codes.store import CodeMap, CodeMapWriter, CodesDataset, open_code_map  # noqa: F401
