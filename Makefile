# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
# Each creates .venv from nothing when it is missing (or when pyproject.toml changed), then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint venv clean screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q "torch>=2.5" "setuptools>=68" wheel
	# sam2 lists torch as a build requirement: build it against the torch above (pip's isolated build would
	# fetch a second one) and without its optional CUDA extension (SAM2_BUILD_CUDA=0; see docs/medsam2.md).
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --disable-pip-version-check -q --no-build-isolation "sam2>=1.1"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/segunc demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: lint
	$(BIN)/python -m pytest

# the user guide's screenshots (docs/images/widget_*.png), each dock driven on the phantom; needs xvfb-run without a display
screenshots: $(STAMP)
	$(if $(DISPLAY),,xvfb-run -a -s "-screen 0 1600x1000x24") $(BIN)/python docs/make_screenshots.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis demo_data
