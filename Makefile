# Two commands on a fresh machine:  `make run`  and  `make test`.
# Each creates the virtual environment (.venv) and installs what it needs on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test install lock tools audit bench test-faults lint check-migrations deploy-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ml]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

## Pin every package (transitive ones too) after a change to pyproject.toml: resolved afresh in a
## throw-away environment (no old pins, nothing installed by hand), then frozen.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e ".[dev,ml]"
	{ sed -n '1,2p' constraints.txt; $(LOCK_VENV)/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

# System tools of the test suite, from Debian's packages (installed when we can: root with apt):
# Chromium for the browser tests (Playwright drives it; no browser download), docker-compose to
# validate docker/compose.yaml, the DICOM test bed: Orthanc (the PACS), dcmtk (storescu, the
# X-ray software) and dicom3tools (dciodvfy, checks the structured reports we send), and Podman and
# debootstrap for the deploy check. Without them those tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
# and what `make deploy-check` needs to build the images and run the compose stack with Podman
DEPLOY_TOOLS = podman runc debootstrap golang-github-containernetworking-plugin-dnsname
APT_INSTALL = apt-get install -y -q --no-install-recommends
TOOL_PACKAGES = chromium docker-compose orthanc dcmtk dicom3tools
tools:
	@if ! test -x $(CHROMIUM) || ! command -v docker-compose >/dev/null || ! command -v Orthanc >/dev/null \
	    || ! command -v storescu >/dev/null || ! command -v dciodvfy >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive $(APT_INSTALL) $(TOOL_PACKAGES) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(APT_INSTALL) $(TOOL_PACKAGES) >/dev/null; } || \
	    echo "Could not install $(TOOL_PACKAGES): their tests will be skipped."; \
	  else echo "chromium/docker-compose/orthanc/dcmtk/dicom3tools missing and not root: their tests will be skipped."; fi; \
	fi
	@if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null \
	    || ! test -x /usr/lib/cni/dnsname; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    $(APT_INSTALL) $(DEPLOY_TOOLS) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && $(APT_INSTALL) $(DEPLOY_TOOLS) >/dev/null; } || \
	    echo "Could not install podman/runc/debootstrap: the deploy check will be skipped."; \
	  else echo "podman/runc/debootstrap missing and not root: the deploy check will be skipped."; fi; \
	fi

## Start the platform on embedded defaults (SQLite, local storage, no broker) with demo clinics.
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py register_model --shipped
	$(PY) manage.py seed_demo --samples
	@echo ""
	@echo "DentalScan is starting at http://$(HOST):$(PORT)/ (log in with a demo account above); it says when it is ready."
	@echo ""
	$(PY) manage.py runserver $(HOST):$(PORT)

## Run the whole suite: lint, migration check, tests (PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set), then
## the deploy check: the images built and docker/compose.yaml run for real with Podman (skipped, with the reason,
## where Podman cannot run; DEPLOY_CHECK=0 leaves it out). It needs about 7 GB of images; a fresh machine builds
## them first (about 13 minutes here), a machine that ran it before reuses its cache (~/.cache/dentalscan-deploy and
## Podman's store).
DEPLOY_CHECK ?= 1
test: $(STAMP) tools lint check-migrations
	$(PY) -m pytest
	@if [ "$(DEPLOY_CHECK)" = 1 ]; then $(PY) docker/deploy_check.py --skip-if-unavailable; \
	else echo "deploy check left out (DEPLOY_CHECK=0)"; fi

## Known-vulnerability audit of every installed package (needs PyPI's JSON API or OSV on the network).
audit: $(STAMP)
	$(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off

## Benchmarks (each prints its table and writes bench/results/*.json) and the fault tests alone.
bench: $(STAMP)
	$(PY) bench/bench_throughput.py
	$(PY) bench/bench_xray_inference.py
	$(PY) bench/bench_end_to_end.py
	$(PY) bench/bench_batching.py
	$(PY) bench/bench_api_load.py
	$(PY) bench/bench_dicom.py
	$(PY) bench/bench_review_page.py

test-faults: $(STAMP)
	$(PY) -m pytest -m faults tests/faults

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

check-migrations: $(STAMP)
	env -u DATABASE_URL $(PY) manage.py makemigrations --check --dry-run --settings=config.settings.test

## Build the images and run docker/compose.yaml for real with Podman (podman-compose from PyPI): migrations, a
## smoke journey through the REST API, a worker killed mid-analysis, two workers; prints timings and image sizes.
## Needs podman, runc, debootstrap (Debian); caches the base and the tool under ~/.cache/dentalscan-deploy.
deploy-check: $(STAMP)
	$(PY) docker/deploy_check.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
