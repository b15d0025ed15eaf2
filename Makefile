# netvlad_ros: one entry point for users, developers and CI.
#   make demo   the end-to-end demo on built-in defaults (creates .venv first)
#   make test   lint (ruff, ruff format, mypy) + the whole test suite (creates .venv first);
#               .ci/run runs this
# The venv is rebuilt when requirements.txt, setup.py or package.xml change.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.netvlad_ros-installed

.PHONY: venv demo test lint format bench colcon clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

demo: venv
	$(BIN)/netvlad-ros demo

test: lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check netvlad_ros test benchmarks launch
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format netvlad_ros test benchmarks launch
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python benchmarks/bench_descriptors.py

colcon: venv
	. $(BIN)/activate && colcon build --symlink-install

clean:
	rm -rf build install log .pytest_cache
