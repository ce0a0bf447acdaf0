# Every target depends on the venv. Choose what to deploy with DEPLOY=<system> and
# where with ENV=prod|staging|test (default: test, the disposable hosts).
# Each target's `##` comment is its line in `make help`.
SHELL  := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
ENV    ?= test
DEPLOY ?= hello
DEPLOY_FILE := deploys/$(DEPLOY).py
LIMIT  ?=
LIMIT_ARGS := $(if $(LIMIT),--limit $(LIMIT))
PYINFRA := DEPLOY_ENV=$(ENV) $(PY) -m pyinfra inventory.py
# Installs missing system packages (apt-get as root or through sudo), else names the command.
BOOTSTRAP = @command -v $(PYTHON) >/dev/null || { echo "python3 is not installed: as root run" \
	"apt-get update && apt-get install -y python3 python3-venv" >&2; exit 1; }; $(PYTHON) tools/bootstrap.py
DEMO   ?= music
DEMO_FLAGS ?=
# e2e test modules run on this many workers, each with its own cluster (1: one process, in order)
E2E_WORKERS ?= 2
E2E_XDIST = $(if $(filter-out 0 1,$(E2E_WORKERS)),-n $(E2E_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: help bootstrap history knobs archon-status archon-restore ingestor-status ingestor-restore youtube-deploy youtube-start youtube-stop youtube-restart youtube-status music-status setup test test-unit test-e2e hosts-up hosts-down hosts-status demo plan drift apply prod bench clean

help:  ## This list (generated from the Makefile's `##` comments)
	@grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | \
	  sed -E 's/^([^:]+):[^#]*## (.*)$$/\1\t\2/' | \
	  while IFS=$$'\t' read -r targets text; do for t in $$targets; do printf '  %-18s %s\n' "$$t" "$$text"; done; done

bootstrap:  ## Install what demo and test need when missing: Docker engine, debootstrap, python3-venv, nginx
	$(BOOTSTRAP) venv hosts unit

setup: $(STAMP)  ## Make the venv (.venv) with pyinfra and the test tools (python3-venv installed if missing)
$(STAMP): pyproject.toml
	$(BOOTSTRAP) venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

test: setup  ## Unit tests, then end-to-end tests on disposable hosts (the CI command; installs Docker if missing)
	$(BOOTSTRAP) hosts unit
	$(PY) -m pytest tests/unit -q
	$(PY) -m pytest tests/e2e -v -m e2e --durations=0 $(E2E_XDIST)

test-unit: setup  ## Unit tests only (about 20 s, no Docker needed)
	$(PY) -m pytest tests/unit -q

test-e2e: setup  ## End-to-end tests only (K=<expr> selects tests)
	$(BOOTSTRAP) hosts
	$(PY) -m pytest tests/e2e -v -m e2e --durations=0 $(E2E_XDIST) $(if $(K),-k '$(K)')

hosts-up: setup  ## Disposable hosts + DNS and ACME helpers; writes .hosts/inventory.json (HOSTS="name:group ...")
	$(BOOTSTRAP) hosts
	$(PY) -m tests.harness up --dns --acme --hosts $(or $(HOSTS),hello-1:hello)

hosts-down: setup  ## Remove the disposable hosts of hosts-up and of the demo (by id; images stay cached)
	$(PY) -m tests.harness down

hosts-status: setup  ## The disposable hosts that are up, with their SSH ports and addresses
	$(PY) -m tests.harness status

demo: setup  ## Disposable host + the DEMO=<system> deploy (default music), then its URLs; again: 0 changes
	$(BOOTSTRAP) hosts
	$(PY) -m tools.demo $(DEMO) $(DEMO_FLAGS)

plan: setup  ## Pending changes and file diffs, changes nothing
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS) --dry --diff

drift: setup  ## Exit 0 when in sync, 2 when the deploy would change something
	DEPLOY_ENV=$(ENV) $(PY) tools/drift.py $(DEPLOY_FILE) $(LIMIT_ARGS)

apply: setup  ## Apply DEPLOY=<system> to ENV (default: the disposable test hosts)
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS)

prod: setup  ## Production: shows the changes and asks before applying
	DEPLOY_ENV=prod $(PY) -m pyinfra inventory.py $(DEPLOY_FILE) --diff

music-status: setup  ## The plan's success criteria on the music host(s)
	INFRA_SYSTEMS=music $(PYINFRA) exec -- /opt/music-assistant/bin/music-health-check --status

archon-status: setup  ## The Archon stack's health check on the archon host(s)
	INFRA_SYSTEMS=archon $(PYINFRA) exec -- /opt/archon/bin/archon-health-check --stats

archon-restore: setup  ## The Archon database from a backup on the host: make archon-restore BACKUP=/root/backups/archon-<stamp> [LIMIT=host]
	@[[ "$(BACKUP)" =~ ^/[A-Za-z0-9_./-]+$$ ]] || { echo "usage: make archon-restore BACKUP=<absolute backup dir on the host> [ENV=prod] [LIMIT=host]" >&2; exit 2; }
	INFRA_SYSTEMS=archon $(PYINFRA) exec $(LIMIT_ARGS) -- /opt/archon/bin/archon-migrate restore $(BACKUP)

ingestor-status: setup  ## ha-ingestor: the plan's success criteria (health, tables, devices/entities, bucket)
	INFRA_SYSTEMS=ingestor $(PYINFRA) exec -- /opt/ha-ingestor/bin/ingestor-release status /opt/ha-ingestor/release.json

ingestor-restore: setup  ## ha-ingestor: put a backup back (SQLite, env files, InfluxDB): BACKUP=/var/backups/ha-ingestor/ingestor-...
	@[[ "$(BACKUP)" =~ ^/[A-Za-z0-9_./-]+$$ ]] || { echo "usage: make ingestor-restore BACKUP=/var/backups/ha-ingestor/ingestor-<stamp> [ENV=prod] [LIMIT=host]" >&2; exit 2; }
	INFRA_SYSTEMS=ingestor $(PYINFRA) exec $(LIMIT_ARGS) -- /opt/ha-ingestor/bin/ingestor-release restore /opt/ha-ingestor/release.json $(BACKUP)

# YouTube assistant production (ENV=prod: this machine, @local). YT_MODE=pidfile|systemd overrides youtube_mode.
YT_ARGS := $(LIMIT_ARGS) $(if $(YT_MODE),--data youtube_mode=$(YT_MODE))

youtube-deploy: setup  ## YouTube assistant: build, deploy (DB backup + migrations) and start production
	$(PYINFRA) deploys/youtube.py $(YT_ARGS) --data youtube_action=deploy

# -y: run control must execute even when pyinfra predicts no change (status prints).
youtube-start youtube-stop youtube-restart youtube-status: setup  ## YouTube assistant run control
	$(PYINFRA) deploys/youtube.py $(YT_ARGS) -y --data youtube_action=$(@:youtube-%=%)

history: setup  ## Recorded deploy runs on the system's hosts: who, when, commit, result (DEPLOY=x)
	DEPLOY_ENV=$(ENV) $(PY) tools/history.py $(DEPLOY)

knobs: setup  ## Every knob: type, default, the group file declaring it, its comment (GROUP=name)
	$(PY) -m deploys.settings $(GROUP)

bench: setup  ## Converge/no-op times, remote commands, memory, fan-out of every deploy vs targets (ONLY=hello,music RUNS=5)
	$(BOOTSTRAP) hosts
	$(PY) tools/bench.py $(if $(ONLY),--only $(ONLY)) $(if $(RUNS),--runs $(RUNS))

clean:  ## Remove the demo's hosts and state, the venv and caches (test-host images stay cached)
	if [ -x $(PY) ]; then $(PY) -m tests.harness down --dir .hosts/demo; fi
	rm -rf $(VENV) .pytest_cache .hosts/demo

# Releases (deploys/parts/releases.py; ingestor and hivesync record theirs on the host in its
# layout): list them, or go back to the previous one (TO=<id or prefix> for another kept one),
# code and data.
.PHONY: releases rollback
RELEASE_DEPLOYS := youtube music ingestor hivesync archon
RELEASES_ONLY = @[[ " $(RELEASE_DEPLOYS) " == *" $(DEPLOY) "* ]] || { echo "DEPLOY=$(DEPLOY) has no releases part yet (only: $(RELEASE_DEPLOYS))" >&2; exit 2; }

releases: setup  ## Kept releases of DEPLOY, the live one marked (commit, when, who)
	$(RELEASES_ONLY)
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS) -y --data release_action=releases

rollback: setup  ## DEPLOY back to the previous release (TO=<id>), with the database of that release
	$(RELEASES_ONLY)
	@[[ -z "$(TO)" || "$(TO)" =~ ^[A-Za-z0-9._-]+$$ ]] || { echo "TO=$(TO): a release id (letters, digits, . _ -)" >&2; exit 2; }
	$(PYINFRA) $(DEPLOY_FILE) $(LIMIT_ARGS) -y --data release_action=rollback $(if $(TO),--data 'release_to="$(TO)"')

.PHONY: hivesync-status
hivesync-status: setup  ## HiveSync server: the deployed commit and image, the images kept for rollback, containers, health
	INFRA_SYSTEMS=hivesync $(PYINFRA) exec --limit linode -- /opt/hivesync/bin/hivesync-status

# HiveSync on this machine, as you: HS_TARGET=docker (the plan's N.2.2, default: the whole stack in
# Docker) or HS_TARGET=dev (N.2.1: backend in a venv, postgres/redis in Docker, `wrangler dev`).
# ENV=prod runs on @local (or LIMIT=<host>).
HS_LOCAL_ARGS := --limit $(or $(LIMIT),@local) --data hivesync_role=local_$(or $(HS_TARGET),docker)
.PHONY: hivesync-local-up hivesync-local-start hivesync-local-stop hivesync-local-status
hivesync-local-up: setup  ## HiveSync on this machine (HS_TARGET=docker|dev): build/venv, postgres, redis, health
	$(PYINFRA) deploys/hivesync.py $(HS_LOCAL_ARGS) --data hivesync_local_action=deploy

# -y: run control must execute even when pyinfra predicts no change (status prints).
hivesync-local-start hivesync-local-stop hivesync-local-status: setup  ## HiveSync on this machine: run control (HS_TARGET=docker|dev; data kept)
	$(PYINFRA) deploys/hivesync.py $(HS_LOCAL_ARGS) -y --data hivesync_local_action=$(@:hivesync-local-%=%)
