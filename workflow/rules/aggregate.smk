rule aggregate:
    input:
        patients=PATIENT_PARTS,
        bands=BAND_PARTS,
        **({"population": POPULATION} if TWIN else {}),
    output:
        **SUMMARY,
        **DESIGN_SUMMARY,
        **SUCCESS_SUMMARY,
    params:
        **STUDY_PARAMS,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/aggregate.log",
    message:
        "Aggregating exposure, efficacy, safety and percentile bands by arm"
    script:
        "../scripts/aggregate.py"
