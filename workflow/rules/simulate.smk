rule simulate:
    input:
        population=POPULATION,
    output:
        patients=f"{RESULTS}/patients/{{shard}}.parquet",
        timecourse=f"{RESULTS}/timecourse/{{shard}}.parquet",
        bands=f"{RESULTS}/bands/{{shard}}.parquet",
        **({"observations": OBSERVATION_PART} if OBSERVED else {}),
        **({"doses": DOSES_PART} if DOSED else {}),
    params:
        **STUDY_PARAMS,
    threads: WORKERS
    resources:
        mem_mb=lambda wc, threads: 2048 * threads,
        runtime=60,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/simulate/{{shard}}.log",
    message:
        "Simulating shard {wildcards.shard} on Dask ({threads} worker(s))"
    script:
        "../scripts/simulate.py"
