# Two commands set everything up on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
# test processes (pytest-xdist): two keep both cores of a 2-core machine busy while one test waits on a browser or
# a cluster; TEST_WORKERS=0 runs the suite in this process
TEST_WORKERS ?= 2

.PHONY: serve test install lint chromium sample-data clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# every extra (a worker needs none of them); constraints.txt pins torch to the CPU wheel on local disk
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dashboard,hpc,test,io]"
	# the discriminator pass's C++ block, built once here (about 30 s) rather than in the first training
	$(BIN)/python -m qcf_studio.engine.accel.native
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/qcf-studio serve --spec sample_data/closure-1d.yaml

chromium:
	@test -x $(CHROMIUM) || bash .ci/install-chromium

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

sample-data: $(STAMP)
	$(BIN)/python sample_data/make_sample_data.py

clean:
	rm -rf $(VENV) runs .pytest_cache
