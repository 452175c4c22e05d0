rule sample_population:
    input:
        **({"twins": TWIN_PARTS} if TWIN_PARAMETERS else {}),
    output:
        population=POPULATION,
        summary=POPULATION_SUMMARY,
    params:
        **STUDY_PARAMS,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/sample_population.log",
    message:
        f"Sampling {STUDY.n_patients} virtual patients ({STUDY.replicates} replicate(s)) of {STUDY.name}"
    script:
        "../scripts/sample_population.py"
