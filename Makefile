# `make test` and `make demo` each set everything up from a fresh clone: a virtual environment, torch,
# and this package with its test extras.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build lies on the development machines' disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: setup test lint demo bench clean mutants browser app

# open-clip-torch is installed only for the CLIP BPE merges file it ships (ale_pipeline.tokenizer builds SD's
# tokenizer from it, offline), and without its dependencies: its torchvision would replace this torch.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "open-clip-torch>=2.20"
	# Compile the C++ CPU kernel now, into torch's extension cache, rather than in the first edit's timing;
	# if it cannot be built, the torch backend runs (one warning).
	$(BIN)/python -c "from ale_kernels import _cpp; _cpp.load() or print('C++ CPU kernel not built:', _cpp.failure())"
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two pytest processes: Triton decides at import time whether kernels are compiled or interpreted, so the
# sm_80/sm_90 compile tests and the interpreter tests cannot share one. They run at the same time (the
# interpreter's Python-bound process on one thread beside the two workers, its report printed after the main
# one), and the workers steal each other's queued tests, so neither core idles while the other finishes.
# Every tests/test_triton_interpreter*.py module runs in the interpreter's process.
# Every process runs torch on one thread: three processes on two cores, each with torch's default of a thread per
# core, spend most of their time in OpenMP spin-waits (a quiet run took 10 min with them, 3.3 min without).
INTERPRETER_TESTS := tests/test_triton_interpreter*.py
INTERPRETER_LOG := $(VENV)/interpreter-tests.log
# The app's browser test drives Debian's chromium through its chromedriver (Selenium's own browser downloads cannot
# be fetched offline). Installed here when missing and this is a root Debian/Ubuntu shell; otherwise the test
# fails naming the command that installs them.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $(BROWSER_PACKAGES) for the app's browser test"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES); \
		else \
			echo "the app's browser test needs: sudo apt-get install -y $(BROWSER_PACKAGES)"; \
		fi; }

test: lint browser
	@rm -f $(INTERPRETER_LOG); \
	OMP_NUM_THREADS=1 TRITON_INTERPRET=1 $(PYTEST) $(INTERPRETER_TESTS) > $(INTERPRETER_LOG) 2>&1 & \
	interpreter=$$!; \
	OMP_NUM_THREADS=1 $(PYTEST) -n 2 --dist worksteal --ignore-glob='$(INTERPRETER_TESTS)' --ignore=tests/cuda tests; \
	main=$$?; \
	wait $$interpreter; interpreted=$$?; \
	echo "--- TRITON_INTERPRET=1 $(PYTEST) $(INTERPRETER_TESTS)"; cat $(INTERPRETER_LOG); \
	test $$main -eq 0 && test $$interpreted -eq 0

# The main job: edit the shipped example picture (the default LCM checkpoint if it can be reached, else a
# random SD-shaped model) and write demo_output/ale_demo.png; time the reference and fused backends in
# interleaved repeats (medians, load average, a warning when unreliable; smaller edits on the CPU to stay within
# a few minutes); then the op benchmark's table.
demo: $(STAMP)
	$(BIN)/python -m ale_pipeline.demo --out demo_output
	$(BIN)/python benchmarks/bench_ops.py --quick --no-flex

# The CPU suite (pytest-benchmark: ops, processors, a whole edit), memory against resolution, then one report
# with tables and plots in benchmarks/results/ (beside the committed GPU run's tables).
RESULTS := benchmarks/results
bench: $(STAMP)
	mkdir -p $(RESULTS)
	$(PYTEST) benchmarks/bench_suite.py --benchmark-enable --benchmark-only --benchmark-group-by=group \
		--benchmark-columns=median,iqr,rounds --benchmark-json=$(RESULTS)/cpu_suite.json
	$(BIN)/python benchmarks/bench_processors.py --sizes 256,384,512 --json $(RESULTS)/processors_cpu.json
	$(BIN)/python benchmarks/report.py --cpu-suite $(RESULTS)/cpu_suite.json \
		--processors $(RESULTS)/processors_cpu.json --gpu-dir benchmarks/gpu_runs/2026-11-26-h100 --out $(RESULTS)

# The editing web page on http://127.0.0.1:7860 (this machine only): `make app APP_ARGS="--model DIR --port 8000"`.
APP_ARGS ?=
app: $(STAMP)
	$(BIN)/ale-app $(APP_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis

# Not part of `make test`: plants each bug of tools/mutant_list.py in a scratch copy, runs its test files, and
# prints a table and the score (about 10 minutes; the working tree is never modified).
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py
