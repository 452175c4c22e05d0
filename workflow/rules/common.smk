# Helpers shared by the workflow files; no rules are declared here.
#
# The study comes from `--config study=PATH` (default config/config.yaml) or from
# `--configfile PATH`. It is loaded and validated by vtrial itself, so that error
# messages name the real file and key, and so that one study file is never
# deep-merged with another. Execution settings may be overridden with
# `--config shards=N workers=N chunk_size=N scheduler_address=ADDR memory_limit=SIZE
# results=DIR`.

import sys
from pathlib import Path

import vtrial
from vtrial.study.config import load_study
from vtrial.analysis.design import summary_tables
from vtrial.population.design import is_twin
from vtrial.errors import ConfigError
from vtrial.run.stages import (
    PLOT_KINDS,
    needs_twins,
    page_tables,
    report_groups,
    results_sha256,
    shard_name,
)
from vtrial.analysis.success import table_names as success_tables
from vtrial.run.twin_stage import check_twins, twin_threads


def _study_path():
    if isinstance(config.get("study"), str):
        return config["study"]
    if workflow.overwrite_configfiles:
        return str(workflow.overwrite_configfiles[-1])
    return "config/config.yaml"


def _overrides():
    keys = ("shards", "workers", "chunk_size", "scheduler_address", "memory_limit")
    ex = {k: config[k] for k in keys if k in config}
    return {"execution": ex} if ex else {}


STUDY_PATH = _study_path()
OVERRIDES = _overrides()
try:
    STUDY = load_study(STUDY_PATH, overrides=OVERRIDES)
    if STUDY.twins is not None:  # what the estimator needs (vtrial.run.twins.twin_problems)
        check_twins(STUDY)
except ConfigError as err:
    sys.stderr.write(f"vtrial: the study {STUDY_PATH} is not valid, nothing was run.\n{err}\n")
    sys.exit(1)

RESULTS = str(Path(config.get("results", "results")) / STUDY.name)
SHARDS = [shard_name(i) for i in range(int(STUDY.execution["shards"]))]
# threads of a simulate job: its local Dask workers; one when the workers are elsewhere
REMOTE = bool(STUDY.execution.get("scheduler_address") or STUDY.execution.get("cluster"))
WORKERS = 1 if REMOTE else int(STUDY.execution["workers"])
VERSION = vtrial.__version__

POPULATION = f"{RESULTS}/population.parquet"
# covariate distributions per arm and acceptance of the inclusion criteria (+ .csv)
POPULATION_SUMMARY = f"{RESULTS}/summary/population.parquet"
PATIENT_PARTS = expand(f"{RESULTS}/patients/{{shard}}.parquet", shard=SHARDS)
TIMECOURSE_PARTS = expand(f"{RESULTS}/timecourse/{{shard}}.parquet", shard=SHARDS)
BAND_PARTS = expand(f"{RESULTS}/bands/{{shard}}.parquet", shard=SHARDS)
# sampled observations (IPRED and DV) exist only for studies with outputs.observations
OBSERVED = bool(STUDY.observations.outputs)
OBSERVATION_PART = f"{RESULTS}/observations/{{shard}}.parquet"
OBSERVATION_PARTS = expand(OBSERVATION_PART, shard=SHARDS) if OBSERVED else []
# the dose ledger exists only for studies with dose modification or adherence
DOSED = STUDY.has_dose_ledger
DOSES_PART = f"{RESULTS}/doses/{{shard}}.parquet"
DOSES_PARTS = expand(DOSES_PART, shard=SHARDS) if DOSED else []
SUMMARY = {
    name: f"{RESULTS}/summary/{name}.parquet"
    for name in ("exposure", "efficacy", "safety", "bands")
}
# twins of the dataset's subjects (outputs.twins): one table per shard and their summary
TWINS_FIT = STUDY.twins is not None
TWIN_PART = f"{RESULTS}/twins/{{shard}}.parquet"
TWIN_PARTS = expand(TWIN_PART, shard=SHARDS) if TWINS_FIT else []
TWIN_SUMMARY = f"{RESULTS}/summary/twins.parquet"
TWIN_SUMMARIES = [TWIN_SUMMARY] if TWINS_FIT else []
# threads of a twins job: its local Dask workers; one when its shard is small enough to
# be estimated in the job's process (or the workers are elsewhere)
TWIN_WORKERS = twin_threads(STUDY) if TWINS_FIT else 1
# population.dataset.parameters: twins: the population (so every simulate shard) takes
# each subject's random effects from the twins of every shard
TWIN_PARAMETERS = needs_twins(STUDY)
# trial design tables: individual effects (twin crossover), parameter draws (uncertainty)
TWIN = is_twin(STUDY)
DESIGN_SUMMARY = {name: f"{RESULTS}/summary/{name}.parquet" for name in summary_tables(STUDY)}
# success per replicate trial and probability of success (only with `success`)
SUCCESS_SUMMARY = {
    name: f"{RESULTS}/summary/{name}.parquet" for name in success_tables(STUDY.success)
}
# report plots by kind, each kind with its caption in the HTML report
PLOT_GROUPS = {
    kind: [f"{RESULTS}/report/{name}" for name in names]
    for kind, names in report_groups(STUDY).items()
}
PLOTS = [path for paths in PLOT_GROUPS.values() for path in paths]
# HTML pages of the report: every summary table, and the study file with its models
TABLE_PAGES = {name: f"{RESULTS}/report/tables/{name}.html" for name in page_tables(STUDY)}
STUDY_PAGE = f"{RESULTS}/report/study.html"
MANIFEST = f"{RESULTS}/manifest.json"

# Every job re-runs when these change: the study content (with the model files it uses) and
# the vtrial version. Snakemake does not track imported modules, so these go to params.
# The study path and the overrides reach the scripts as *derived* params (functions of
# `input`), which Snakemake leaves out of its rerun triggers: moving the project folder
# or resuming with other workers, chunk size, scheduler or cluster reruns nothing, while
# any change to the results' inputs does (results_sha256 keeps execution.shards only).
STUDY_PARAMS = dict(
    study=lambda wildcards, input: STUDY_PATH,
    overrides=lambda wildcards, input: OVERRIDES,
    results_sha256=results_sha256(STUDY),
    vtrial_version=VERSION,
)

