# Every target depends on the venv. Choose what to deploy with DEPLOY=<system> and
# where with ENV=prod|staging|test (default: test, the disposable hosts).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
ENV   ?= test
DEPLOY ?= hello
DEPLOY_FILE := deploys/$(DEPLOY).py
LIMIT ?=
LIMIT_ARGS := $(if $(LIMIT),--limit $(LIMIT))
PYINFRA := DEPLOY_ENV=$(ENV) $(PY) -m pyinfra inventory.py


.PHONY: archon-status ingestor-status ingestor-restore youtube-deploy youtube-start youtube-stop youtube-restart youtube-status music-status setup test test-unit test-e2e hosts-up hosts-down hosts-status demo plan drift apply prod bench clean

setup: $(STAMP)
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

test: setup  ## Unit tests, then end-to-end tests on disposable hosts (the CI command)
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/e2e -v -m e2e --durations=0

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-e2e: setup
	$(PY) -m pytest tests/e2e -v -m e2e --durations=0

hosts-up: setup  ## Disposable hosts + DNS and ACME helpers; writes .hosts/inventory.json
	$(PY) -m tests.harness up --dns --acme --hosts $(or $(HOSTS),hello-1:hello)

hosts-down: setup
	$(PY) -m tests.harness down

hosts-status: setup
	$(PY) -m tests.harness status

demo: setup  ## Bring up a disposable host and deploy to it, then show health
	$(PY) -m tools.demo

plan: setup  ## Pending changes and file diffs, changes nothing
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS) --dry --diff

drift: setup  ## Exit 0 when in sync, 2 when the deploy would change something
	DEPLOY_ENV=$(ENV) $(PY) tools/drift.py $(DEPLOY_FILE) $(LIMIT_ARGS)

apply: setup
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS)

prod: setup  ## Production: shows the changes and asks before applying
	DEPLOY_ENV=prod $(PY) -m pyinfra inventory.py $(DEPLOY_FILE) --diff

music-status: setup  ## The plan's success criteria on the music host(s)
	INFRA_SYSTEMS=music $(PYINFRA) exec -- /opt/music-assistant/bin/music-health-check --status

archon-status: setup  ## The Archon stack's health check on the archon host(s)
	INFRA_SYSTEMS=archon $(PYINFRA) exec -- /opt/archon/bin/archon-health-check --stats

ingestor-status: setup  ## ha-ingestor: the plan's success criteria (health, tables, devices/entities, bucket)
	INFRA_SYSTEMS=ingestor $(PYINFRA) exec -- /opt/ha-ingestor/bin/ingestor-release status /opt/ha-ingestor/release.json

ingestor-restore: setup  ## ha-ingestor: put a backup back (SQLite + InfluxDB): BACKUP=/var/backups/ha-ingestor/ingestor-...
	@test -n "$(BACKUP)" || { echo "BACKUP=/var/backups/ha-ingestor/ingestor-<stamp> is required" >&2; exit 2; }
	INFRA_SYSTEMS=ingestor $(PYINFRA) exec -- /opt/ha-ingestor/bin/ingestor-release restore /opt/ha-ingestor/release.json $(BACKUP)

# YouTube assistant production (ENV=prod: this machine, @local). YT_MODE=pidfile|systemd overrides youtube_mode.
YT_ARGS := $(LIMIT_ARGS) $(if $(YT_MODE),--data youtube_mode=$(YT_MODE))

youtube-deploy: setup  ## YouTube assistant: build, deploy (DB backup + migrations) and start production
	$(PYINFRA) deploys/youtube.py $(YT_ARGS) --data youtube_action=deploy

# -y: run control must execute even when pyinfra predicts no change (status prints).
youtube-start youtube-stop youtube-restart youtube-status: setup  ## YouTube assistant run control
	$(PYINFRA) deploys/youtube.py $(YT_ARGS) -y --data youtube_action=$(@:youtube-%=%)

bench: setup
	$(PY) tools/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
