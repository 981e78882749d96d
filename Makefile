# perfsdk developer commands. See docs/development.md.
#
#   make venv    .venv with perfsdk (editable, compiled extension built), test tools, plugins
#   make test    ruff, mypy, pytest against the compiled extension, pytest against the Python twin
#   make demo    run examples/run_demo.py (an HTTP service under perfsdk run, load, what the agent saw)
#   make bench   run each benchmarks/*.py
#   make wheel   sdist + wheel into dist/, then check the wheel installs and imports without Cython
#   make clean   remove build products (keeps .venv); `make distclean` removes .venv too

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; anything that changes what gets built is a prerequisite,
# so editing the metadata, setup.py or the extension's sources reinstalls (and recompiles).
STAMP := $(VENV)/.perfsdk-installed
BUILD_INPUTS := pyproject.toml setup.py MANIFEST.in \
	$(wildcard ext/*.pyx ext/*.pxd ext/*.pxi ext/*.h plugins/*/pyproject.toml plugins/*/setup.py)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
# Only the folders that exist: git keeps no empty folder, so a fresh clone may lack some.
LINT_PATHS := $(wildcard perfsdk plugins tests benchmarks examples)
BENCHMARKS := $(filter-out benchmarks/_% benchmarks/conftest.py,$(wildcard benchmarks/*.py))

.PHONY: venv system-deps test demo bench wheel clean distclean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# PERFSDK_NO_EXTENSIONS is dropped from the environment here: the development install always
# builds the extension (the first pytest run of `make test` requires it).
$(STAMP): $(BIN)/python $(BUILD_INPUTS)
	$(BIN)/python -m pip install --upgrade pip
	env -u PERFSDK_NO_EXTENSIONS $(BIN)/python -m pip install -e '.[test]'
	@if ! ls perfsdk/_speedups*.so >/dev/null 2>&1; then \
		echo "editable install left no perfsdk/_speedups*.so; building it in place"; \
		$(BIN)/python -m pip install 'setuptools>=77' 'Cython>=3.0' wheel; \
		env -u PERFSDK_NO_EXTENSIONS $(BIN)/python setup.py build_ext --inplace; \
	fi
	$(if $(PLUGIN_DIRS),$(BIN)/python -m pip install $(addprefix -e ,$(PLUGIN_DIRS)))
	touch $@

# Real servers the tests talk to (Debian packages). Installed once; needs root and apt-get.
SYSTEM_PACKAGES := prometheus
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "warning: missing$$missing and cannot apt-get install (not root?); tests needing them will skip" >&2; \
		fi; \
	fi

test: venv system-deps
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy perfsdk
	@echo "== pytest: compiled extension (PERFSDK_EXPECT_COMPILED=1)"
	env -u PERFSDK_NO_EXTENSIONS PERFSDK_EXPECT_COMPILED=1 $(BIN)/pytest
	@echo "== pytest: Python twin (PERFSDK_NO_EXTENSIONS=1)"
	env -u PERFSDK_EXPECT_COMPILED PERFSDK_NO_EXTENSIONS=1 $(BIN)/pytest

demo: venv
	$(BIN)/python examples/run_demo.py

bench: venv
	@$(if $(BENCHMARKS),,echo "no benchmarks/*.py to run")
	@for f in $(BENCHMARKS); do \
		echo "== $$f"; \
		$(BIN)/python "$$f"; \
	done

# The wheel is built from the sdist in an isolated environment (so MANIFEST.in and the declared
# build requirements are exercised), then installed into a throwaway venv that has no Cython.
wheel: venv
	rm -rf dist
	env -u PERFSDK_NO_EXTENSIONS $(BIN)/python -m build --outdir dist .
	@whl=$$(ls dist/perfsdk-*.whl); \
	if ! $(BIN)/python -m zipfile -l "$$whl" | grep -q 'perfsdk/_speedups[^/]*\.so'; then \
		echo "$$whl holds no compiled perfsdk/_speedups*.so" >&2; exit 1; \
	fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet "$$PWD/$$whl"; \
	if "$$tmp/venv/bin/python" -c 'import Cython' 2>/dev/null; then \
		echo "Cython got installed alongside the wheel" >&2; exit 1; \
	fi; \
	cd "$$tmp" && env -u PERFSDK_NO_EXTENSIONS "$$tmp/venv/bin/python" -c \
		'import perfsdk._speedups as m; print("wheel OK:", m.__file__)'

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf plugins/*/build plugins/*/*.egg-info
	rm -f perfsdk/_speedups*.so ext/*.c ext/*.html $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
