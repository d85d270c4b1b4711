# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make demo   runs the main job on embedded defaults and shows what it did
#   make test   creates .venv, installs the project with its test extras, runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean system-deps compiled

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,compile]'
	touch $@

# The mesh core and the simulator's engine compiled with mypyc into build/compiled/ (about
# twice as fast; used only while they match the sources). Without a C compiler everything
# runs on the sources. A no-op when up to date.
compiled: $(VENV)/.installed
	@MANET_PURE_PYTHON=1 $(PY) -m mesh.build_compiled --optional

# The quick scenario: 30 vehicles, a disaster zone that cuts lines, routes to gateways, with
# plots in out/demo; then a readable walk through the routing of a few nodes.
demo: compiled
	$(VENV)/bin/sim-radio run sim-radio/scenarios/quick_demo.toml --plot out/demo
	$(PY) -m mesh.demo

# The multi-host tests need nftables for packet loss; as root (as CI runs) install it if absent.
system-deps:
	@if [ "$$(id -u)" = 0 ] && ! command -v nft >/dev/null 2>&1 && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables; fi

# The suite runs on the compiled cores; the mesh and simulator tests again on the sources,
# which is what a device runs.
test: compiled system-deps
	$(PY) -m pytest -q
	MANET_PURE_PYTHON=1 $(PY) -m pytest -q tests/mesh tests/sim

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
