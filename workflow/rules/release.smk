# Official releases (kakaobrain/rq-vae-transformer tarballs) that the import rules read: fetched
# once per release folder, from the files in place, the tarball, a mirror or the URL, then checked
# (drr/workflow/release.py). A local rule: compute nodes may have no internet, and the fetch is I/O.


rule fetch_release:
    output:
        "{release_dir}/{release}/release.json",
    log:
        "{release_dir}/{release}.fetch.log",
    wildcard_constraints:
        release_dir=one_of(PLAN.release_dirs),
        release=one_of(PLAN.release_names),
    params:
        py=PY,
        config=lambda w: PLAN.config_value(PLAN.release_experiment[f"{w.release_dir}/{w.release}"]),
    shell:
        "{params.py:q} -m drr.workflow.release --config {params.config:q} --out {output:q} > {log:q} 2>&1"


localrules:
    fetch_release,
