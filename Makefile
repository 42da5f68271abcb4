# The README's commands. `make demo` and `make test` install what they need first (once; again when the
# build inputs change), so both work on a fresh machine with Python 3.10+, pip and a C++ compiler.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
export MAX_JOBS ?= 2

STAMP := build/.installed
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc kernels -type f -not -name '*.pyc' 2>/dev/null)

.PHONY: install demo test test-cpu test-triton test-bench bench lint clean

# torch and the build backend (setuptools, wheel) must be present before the extension builds: no build isolation,
# as for every torch extension.
$(STAMP): $(BUILD_INPUTS)
	$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PIP) install "torch>=2.11" "torchvision>=0.26"
	$(PYTHON) -c "import setuptools, wheel" 2>/dev/null || $(PIP) install "setuptools>=64" wheel
	$(PIP) install --no-build-isolation -e ".[test]"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m fastconv demo

# Three pytest processes: Triton's interpreter mode must be chosen before its kernels are imported, so the
# Triton tests run on their own; the benchmarks run once each as a smoke test (timings are not judged here).
test: test-cpu test-triton test-bench

test-cpu: $(STAMP)
	$(PYTHON) -m pytest tests -m "not triton"

test-triton: $(STAMP)
	TRITON_INTERPRET=1 $(PYTHON) -m pytest tests -m triton; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no Triton tests collected"; exit 0; fi; exit $$rc

test-bench: $(STAMP)
	$(PYTHON) -m pytest bench --benchmark-disable --bench-quick -q

bench: $(STAMP)
	$(PYTHON) -m fastconv bench

lint:
	$(PYTHON) -m ruff check .

clean:
	rm -rf build fastconv/_C*.so *.egg-info .pytest_cache .benchmarks
