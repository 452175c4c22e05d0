rule report:
    input:
        **SUMMARY,
        **SUCCESS_SUMMARY,
        **DESIGN_SUMMARY,
        population=POPULATION_SUMMARY,
        patients=PATIENT_PARTS,
        **({"twins": TWIN_SUMMARY} if TWINS_FIT else {}),
    output:
        **{
            kind: report(
                paths,
                caption=f"../report/plot_{kind}.rst",
                category="Plots",
                subcategory=PLOT_KINDS[kind],
            )
            for kind, paths in PLOT_GROUPS.items()
        },
        **{
            f"table_{name}": report(
                path,
                caption=f"../report/{name}.rst",
                category="Summary tables",
            )
            for name, path in TABLE_PAGES.items()
        },
        study=report(STUDY_PAGE, caption="../report/study.rst", category="Study"),
    params:
        **STUDY_PARAMS,
        outdir=lambda wildcards, output: str(Path(output.study).parent),
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/report.log",
    message:
        "Plotting the study report"
    script:
        "../scripts/report.py"


rule manifest:
    input:
        POPULATION,
        POPULATION_SUMMARY,
        PATIENT_PARTS,
        TIMECOURSE_PARTS,
        BAND_PARTS,
        OBSERVATION_PARTS,
        DOSES_PARTS,
        TWIN_PARTS,
        TWIN_SUMMARIES,
        list(SUMMARY.values()),
        list(DESIGN_SUMMARY.values()),
        list(SUCCESS_SUMMARY.values()),
        PLOTS,
        list(TABLE_PAGES.values()),
        STUDY_PAGE,
    output:
        MANIFEST,
    params:
        **STUDY_PARAMS,
    conda:
        "../envs/vtrial.yaml"
    log:
        f"{RESULTS}/logs/manifest.log",
    message:
        "Writing the manifest (row counts and content hashes of every output)"
    script:
        "../scripts/manifest.py"
