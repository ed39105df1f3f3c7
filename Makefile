# Front door. `make run` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-integration lint deploy-check image bench clean

# First install: about two minutes; pip prints each package as it goes (progress, not silence).
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (install Python 3.11, or make PYTHON=/path/to/python3.11)"; exit 1; }
	@echo "[make] installing into $(VENV) (first time: about 2 minutes; later only when pyproject.toml changes)"
	@test -x $(BIN)/python || { echo "[make] creating the virtualenv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[make] upgrading pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "[make] installing routines and its dependencies"
	@{ PYTHONUNBUFFERED=1 $(BIN)/python -m pip install --progress-bar off -e '.[dev]'; echo $$? > $(VENV)/.pip-status; } \
		| grep -E --line-buffered '^(Collecting|Installing collected|Successfully installed)' | cut -c1-100; \
		test "$$(cat $(VENV)/.pip-status)" = 0 || { echo "[make] pip install failed (see above); fix it and run make again"; exit 1; }
	@touch $(STAMP)
	@echo "[make] installed"

install: $(STAMP)

run: $(STAMP)
	$(BIN)/routines dev

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests deploy bench clients/python

DEPLOY_VENV := .venv-deploy
$(DEPLOY_VENV)/.installed: deploy/requirements.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements.txt
	touch $@

# Offline: yamllint, kustomize render, schema validation, security scan (own venv: checkov pins a lot).
deploy-check: $(DEPLOY_VENV)/.installed
	$(DEPLOY_VENV)/bin/python -m deploy.check

# The container image (needs a Docker daemon with BuildKit). IMAGE is the repository to push to:
# set it to yours, and the same name in the overlay's `images:` (docs/operations.md).
IMAGE ?= ghcr.io/your-org/routines
TAG   ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image needs docker (with a running daemon)"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker daemon answers (start it, or build on a machine with one)"; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t $(IMAGE):$(TAG) .
	@echo "built $(IMAGE):$(TAG); push it with: docker push $(IMAGE):$(TAG)"

# SOAK_MINUTES=0 skips the soak (default 10 minutes).
SOAK_MINUTES ?= 10
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1) || echo "wrk unavailable: the ingest benchmarks will be skipped"
	@command -v valgrind >/dev/null 2>&1 || apt-get install -y valgrind >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y valgrind >/dev/null 2>&1) || echo "valgrind unavailable: the edge instruction counts will be skipped"
	$(BIN)/python -m bench.run --soak-minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) build *.egg-info
