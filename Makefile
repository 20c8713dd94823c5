# Two commands on a fresh machine:  `make run`  and  `make test`.
# Each creates the virtual environment (.venv) and installs what it needs on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test install browser lint check-migrations clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,ml]"
	touch $(STAMP)

install: $(STAMP)

# Browser tests drive Debian's Chromium (no browser download by Playwright). Installed when we can
# (root with apt); without it the browser tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null)) ; } || \
	  echo "Chromium not installed: the browser tests will be skipped."

## Start the platform on embedded defaults (SQLite, local storage, no broker) with demo clinics.
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py register_model --shipped
	@echo ""
	@echo "DentalScan is starting at http://$(HOST):$(PORT)/  (log in with a demo account above)"
	@echo ""
	$(PY) manage.py runserver $(HOST):$(PORT)

## Run the whole suite: lint, migration check, tests (PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set).
test: $(STAMP) browser lint check-migrations
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

check-migrations: $(STAMP)
	env -u DATABASE_URL $(PY) manage.py makemigrations --check --dry-run --settings=config.settings.test

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
