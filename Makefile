# The two commands a newcomer needs: `make dev` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest bench example venv clean

$(STAMP): requirements.txt runner_container/requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Until the local stack lands (issue 4), `make dev` shows the offline loop on the example.
DEMO := .dev/demo
dev: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/extctl init com.example.demo --dir $(DEMO)/demo
	$(BIN)/extctl build $(DEMO)/demo
	$(BIN)/extctl keygen --out $(DEMO)/keys --name demo
	$(BIN)/extctl pack $(DEMO)/demo -o $(DEMO)/bundle.tar.zst
	$(BIN)/extctl sign $(DEMO)/bundle.tar.zst --key $(DEMO)/keys/demo.key
	$(BIN)/extctl verify $(DEMO)/bundle.tar.zst --trust-bundle $(DEMO)/keys/demo.pub

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

example: $(STAMP)
	$(BIN)/extctl build examples/hello

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis artifacts
