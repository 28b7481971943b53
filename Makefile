# The project's one entry point for people and CI: `make demo` and `make test` (see README).
# Every install step lives here, so a fresh clone on a fresh machine needs nothing else.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv is rebuilt when the dependencies change; the stamp records the last install.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: help venv postgres control-plane verdicts linters lint typecheck test test-fast reliability demo demo-node-loss demo-down bench bench-quick clean

help:
	@echo "make demo        the operator on a local control plane + PostgreSQL, simulated nodes"
	@echo "make test        lint, type check and every test (real PostgreSQL and kube-apiserver)"
	@echo "make test-fast   only the tests that need neither (pure logic)"
	@echo "make demo-node-loss  a node goes silent, its replicas move, it comes back"
	@echo "make demo-down   stop what 'make demo' started"
	@echo "make bench       benchmarks (an hour or more): bench/results/latest.json, BENCHMARKS.md"
	@echo "make bench-quick every scenario small, one run each: a check, not figures to report"
	@echo "make reliability the full fault suite (about 15 min): figures in RELIABILITY.md"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: Python 3.11+ needed (PYTHON=$(PYTHON))" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

postgres:
	@scripts/ensure-postgres

# Builds kube-apiserver, kubectl and etcd once into ~/.cache (about 6 min the first time).
control-plane: venv
	$(BIN)/fogctl sandbox build

# The tests' verdict tool (tools/verdicts: kstatus and Flux's CEL health checks), built once into
# the same cache (about a minute the first time; the tests would build it too, inside a test).
verdicts: venv
	$(BIN)/python -m controller.sandbox.verdicts

# kube-score (tools/kube-score), which the tests run on the rendered deploy/; built once, ~20 s.
linters: venv
	$(BIN)/python -m controller.sandbox.linters

lint: venv
	$(BIN)/ruff check controller tests migrations bench
	$(BIN)/ruff format --check controller tests migrations bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

test: lint typecheck postgres control-plane verdicts linters
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest tests/unit

demo: venv postgres control-plane
	scripts/demo

# The full fault suite and generated bad input (RELIABILITY.md); `make test` runs a short one.
RELIABILITY_RESULTS := bench/results/reliability.jsonl
reliability: venv postgres control-plane
	rm -f $(RELIABILITY_RESULTS)
	FOG_FAULTS=full FOG_FAULTS_RESULTS=$(RELIABILITY_RESULTS) HYPOTHESIS_PROFILE=ci \
	FOG_MANIFEST_EXAMPLES=1000 \
		$(BIN)/pytest tests/faults tests/kube/test_generated_manifests.py \
		tests/cli/test_bad_input.py tests/cli/test_generated_command_lines.py \
		tests/db/test_reports.py \
		--junitxml=bench/results/reliability.xml -p no:cacheprovider
	$(BIN)/python tests/faults/report.py --results $(RELIABILITY_RESULTS) \
		--junit bench/results/reliability.xml

# Benchmarks report figures (bench/results/*.json, BENCHMARKS.md); they assert nothing.
bench: venv postgres control-plane
	$(BIN)/python bench/fogbench.py --markdown BENCHMARKS.md

bench-quick: venv postgres control-plane
	$(BIN)/python bench/fogbench.py --quick --out bench/results/quick.json

demo-node-loss: venv postgres control-plane
	scripts/demo-node-loss

demo-down: venv
	scripts/demo-down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
