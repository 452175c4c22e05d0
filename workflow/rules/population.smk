rule sample_population:
    output:
        population=POPULATION,
        summary=report(
            POPULATION_SUMMARY, caption="../report/population.rst", category="Summary tables"
        ),
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
