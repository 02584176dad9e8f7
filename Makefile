# The two commands a newcomer needs: `make dev` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := sdk/js/node_modules/.installed

.PHONY: dev test lint typecheck pytest bench load example venv clean infra-check deploy

$(STAMP): requirements.txt requirements-cli.txt runner_container/requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.2.1  # chalice 1.34 requires pip<26.3
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP) $(JS_STAMP)

# The JavaScript component toolchain (componentize-js, esbuild), pinned by sdk/js/package-lock.json.
$(JS_STAMP): sdk/js/package.json sdk/js/package-lock.json
	cd sdk/js && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

# The whole platform on this machine, in the foreground (Ctrl-C stops it).
dev: $(STAMP)
	$(BIN)/extctl dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(JS_STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

test: lint typecheck infra-check pytest

# Package the AWS stack offline (chalice package --merge-template infra/template.yaml), cfn-lint it and
# check its policies and settings against the code. No AWS credentials; PyPI once, for the Lambda wheels.
infra-check: $(STAMP)
	$(BIN)/pytest -q tests/infra

# Deploy to AWS: make deploy STAGE=dev (needs AWS credentials, Docker and infra/parameters/$(STAGE).json;
# infra/README.md). Add DRY_RUN=1 to print the commands instead.
deploy: $(STAMP)
	$(BIN)/python -m infra.deploy --stage "$(STAGE)" $(if $(DRY_RUN),--dry-run)

bench: $(STAMP)
	$(BIN)/python -m bench

# The gateway under Locust on the local stack (not part of make test): concurrency 4, 16, 64 for
# LOAD_SECONDS each, then LOAD_CALLS calls with the serving process's RSS before and after; prints JSON.
load: $(STAMP)
	$(BIN)/python -m bench.load

example: $(STAMP)
	$(BIN)/extctl build examples/hello

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis artifacts
