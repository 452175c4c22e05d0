# vtrial: `make run` and `make test` work as the first command on a fresh machine:
# each creates (or reuses) the virtual environment .venv and installs vtrial with
# the pinned versions of constraints.txt (random streams and numerics are only
# guaranteed for the same versions).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vtrial-installed
RUN_STAMP := $(VENV)/.vtrial-run-installed
CORES ?= 2
STUDY ?= config/config.yaml
SNAKEMAKE_ARGS ?=

.PHONY: help setup run test test-workflow lint bench report report-check clean

help:
	@echo "make run    - set up and run the default study end to end (local Dask cluster)"
	@echo "make test   - set up and run the test suite"
	@echo "make lint   - ruff check, ruff format --check, snakemake --lint, mypy src, layer contracts"
	@echo "make test-workflow - the end-to-end runs: workflows, benchmark harness (CI runs them too)"
	@echo "make bench  - benchmark harness"
	@echo "make report - Snakemake HTML report of the default study"
	@echo "make report-check - render that report in headless Chromium, screenshot every view"
	@echo "variables: CORES=$(CORES) STUDY=$(STUDY) SNAKEMAKE_ARGS='...'"

# `make run` installs the runtime only (vtrial, its dependencies, Snakemake); `make test`,
# `lint` and `bench` add the test and development tools on top
$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[workflow]"
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/snakemake --cores $(CORES) --config study=$(STUDY) --rerun-incomplete $(SNAKEMAKE_ARGS)
	@$(BIN)/vtrial describe \
		$$($(BIN)/python -c "from vtrial.study.config import load_study; print('results/' + load_study('$(STUDY)').name)")

# two test processes (one per core): most of a cold run is compiling each test model's
# kernel once (numba), which parallelises; a test file's tests stay in one process
test: setup
	$(BIN)/pytest -n $(CORES) --dist loadfile -m "not workflow"

# the end-to-end runs (tests marked `workflow`: Snakemake workflows, the benchmark
# harness); CI runs them after `make test`
test-workflow: setup
	$(BIN)/pytest -n $(CORES) --dist loadfile -m workflow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint --config study=$(STUDY)
	$(BIN)/mypy src
	$(BIN)/lint-imports

# Peers are optional: each is installed if it can be (numbalsoda builds with a Fortran
# compiler, e.g. `apt-get install gfortran`); the harness reports missing ones as unavailable.
# dataset_reader.py: the dataset reader, a dataset simulated as recorded, then a dataset
# study of 1,000, 25,000 and 100,000 subjects through Snakemake (about 2 min 40 s).
# twins_speed.py: MAP per patient against a hand-written scipy peer, side by side;
# posterior_speed.py: one patient's SIR posterior.
bench: setup
	-$(BIN)/python -m pip install --quiet -c constraints.txt psutil libroadrunner
	-$(BIN)/python -m pip install --quiet -c constraints.txt numbalsoda
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/dataset_reader.py
	$(BIN)/python benchmarks/twins_speed.py
	$(BIN)/python benchmarks/posterior_speed.py

# the report of the results `make run` made (it does not run the study again)
report: $(RUN_STAMP)
	$(BIN)/snakemake --cores $(CORES) --config study=$(STUDY) --report \
		$$($(BIN)/python -c "from vtrial.study.config import load_study; print('results/' + load_study('$(STUDY)').name + '/report.html')")

# renders the HTML report in headless Chromium (needs `chromium` and `chromedriver`, e.g.
# `apt-get install chromium chromium-driver`): every plot and table shown, screenshots in
# results/<study>/report-screenshots/
report-check: setup report
	$(BIN)/python -m tests.workflow.reportcheck \
		$$($(BIN)/python -c "from vtrial.study.config import load_study; print('results/' + load_study('$(STUDY)').name)")

clean:
	rm -rf results .snakemake
