# One front door for the project's chores. `make` alone lists them.
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help setup tools demo test test-fast lint format typecheck bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## create .venv, install the project and fetch the Kafka jars
	@scripts/bootstrap

tools: ## build the pinned helm and MinIO (tests/helm, tests/test_registry_s3.py) into .cache/bin; needs Go
	@scripts/ensure-helm >/dev/null
	@scripts/ensure-minio >/dev/null

demo: setup ## the main job: local Kafka, simulated workload through the whole stack, summary
	@$(BIN)/fraudstream demo

test: setup tools ## the whole test suite, real broker and MinIO included, plus lint and type checks
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/pytest

test-fast: setup ## unit tests only (no broker)
	@$(BIN)/pytest -m "not kafka and not slow"

lint: setup ## ruff lint
	@$(BIN)/ruff check .

format: setup ## ruff format in place
	@$(BIN)/ruff format . && $(BIN)/ruff check --fix .

typecheck: setup ## mypy on the packages
	@$(BIN)/mypy

bench: setup ## the benchmark report (short profile)
	@$(BIN)/fraudstream bench --profile short

clean: ## stop the local broker and remove build litter
	-@$(BIN)/fraudstream kafka down
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
