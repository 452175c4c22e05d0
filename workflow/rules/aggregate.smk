rule aggregate:
    input:
        patients=PATIENT_PARTS,
        bands=BAND_PARTS,
        **({"population": POPULATION} if TWIN else {}),
    output:
        exposure=report(
            SUMMARY["exposure"], caption="../report/exposure.rst", category="Summary tables"
        ),
        efficacy=report(
            SUMMARY["efficacy"], caption="../report/efficacy.rst", category="Summary tables"
        ),
        safety=report(
            SUMMARY["safety"], caption="../report/safety.rst", category="Summary tables"
        ),
        bands=report(SUMMARY["bands"], caption="../report/bands.rst", category="Summary tables"),
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
