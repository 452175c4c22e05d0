# vtrial: in-silico drug trials on virtual populations.
#
#   snakemake --cores 2                                  # the default study (config/config.yaml)
#   snakemake --cores 2 --config study=config/studies/cytotoxic_q3w_rules.yaml
#   snakemake --cores 2 --config shards=8 workers=2      # execution overrides
#
# The study file is validated (schema, then semantics) before any job runs; every
# problem is reported at once. All logic lives in the `vtrial` package; the rules
# below only declare files and call one vtrial function each (workflow/scripts).

from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    shard=r"part-\d{5}",


rule all:
    input:
        MANIFEST,
    default_target: True


include: "workflow/rules/population.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/twins.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
