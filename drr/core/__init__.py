"""The bottom layer: what every stage may import (none of it imports a stage).

    errors       DrrError and the one-line error convention (exit status 2)
    config       YAML configs: strict reading, merging, schema validation, hashing
    files        atomic file writes (temporary name, then rename) and file hashes
    provenance   the provenance record stored with every result
    stages       the part of a config each stage's result depends on (the rules' rerun hashes)
    columns      the metric columns: row fields, labels, formats, direction
    releases     where an official release's files live, and its record
    progress     progress lines with time left
    checkpoint   checkpoint files: atomic save, safe load
    lock         output locks of concurrent jobs, Snakemake session locks
    device       where a job computes (config key `device`: a GPU or a clear stop) and its autocast
    distributed  torch.distributed set-up for multi-GPU jobs
    training     the training loop's shared helpers: resume state, logs, signals
    launch       submitit launch of training jobs on SLURM
    cli          the shared command-line parser and config resolution of every entry point
"""
