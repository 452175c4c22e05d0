rule twins:
    output:
        twins=TWIN_PART,
    params:
        **STUDY_PARAMS,
    threads: TWIN_WORKERS
    resources:
        mem_mb=lambda wc, threads: 2048 * threads,
        runtime=60,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/twins/{{shard}}.log",
    message:
        "Estimating the twins of shard {wildcards.shard} (MAP) on Dask ({threads} worker(s))"
    script:
        "../scripts/twins.py"


rule twins_summary:
    input:
        twins=TWIN_PARTS,
    output:
        summary=TWIN_SUMMARY,
    params:
        **STUDY_PARAMS,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/twins_summary.log",
    message:
        "Summarising the twins of every shard (eta-shrinkage over the whole cohort)"
    script:
        "../scripts/twins_summary.py"
