# rowflow — set-up, build, demo, tests, benchmarks. `make demo` and `make test` are all a fresh Debian
# machine needs: they install the two system libraries when missing (with sudo when not root).
SHELL := /bin/bash
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := libopenblas-dev libzstd-dev zstd pkgconf
BIN := .build/release/rowflow
# Release builds link the Swift runtime and Foundation statically: a process starts faster (no relocation of a
# dozen shared Swift libraries, twice, since the binary re-executes itself to pin OpenBLAS to one thread; figures
# in docs/toolchain.md), and the binary is larger. Every release build uses the same flags, or SwiftPM would
# rebuild all of it on each switch.
RELEASE := -c release --static-swift-stdlib

.PHONY: deps build debug demo test test-numbers test-kernels test-python test-spark install uninstall bench fuzz record-fixtures clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build $(RELEASE) --product rowflow

debug: deps
	$(SWIFT) build

demo: build
	@rm -rf /tmp/rowflow-demo
	@echo "== rowflow run Pipelines/quickstart.yaml on Fixtures/quickstart/input.csv.zst (5000 rows, zstd CSV, target last)"
	$(BIN) run Pipelines/quickstart.yaml --input Fixtures/quickstart/input.csv.zst --out /tmp/rowflow-demo
	@echo
	$(BIN) inspect /tmp/rowflow-demo
	@echo
	@echo "The data were generated with these coefficients (rowflow gen regression --seed 42 --noise 0.5):"
	@grep '"beta"' Fixtures/quickstart/truth.json
	@echo "Outputs are plain .npy files: python3 -c \"import numpy; print(numpy.load('/tmp/rowflow-demo/ridge/solution.npy'))\""
	@$(BIN) report /tmp/rowflow-demo
	@echo "A report page (one HTML file, inline SVG, opens offline): /tmp/rowflow-demo/report.html"

# Builds the debug binary the end-to-end tests drive, then runs every test. OpenBLAS single-threaded, as the
# binary runs it: tests run in parallel and share one BLAS thread pool, and a thread count changing under a
# test would change the last bits that its byte-identity checks compare.
test: debug
	OPENBLAS_NUM_THREADS=1 $(SWIFT) test
	@$(MAKE) --no-print-directory test-numbers
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory test-spark

# NumberParser against glibc's strtod (correctly rounded) on 10⁷ generated strings: random doubles, exact and
# near halfway points, 19–60 digits, subnormals, extreme exponents, signs and exponent spellings. Release build:
# the debug suite runs 5·10⁴ of them. NUMCHECK_COUNT / NUMCHECK_SEED pick others.
NUMCHECK_COUNT ?= 10000000
NUMCHECK_SEED ?= 1
test-numbers: deps
	$(SWIFT) build $(RELEASE) --product rowflow-numcheck
	.build/release/rowflow-numcheck $(NUMCHECK_COUNT) $(NUMCHECK_SEED)

# The whole Swift suite once per BLAS kernel this CPU can run (OPENBLAS_CORETYPE forced; the fixture replays
# already cover the kernels in `make test`): tests must not depend on one kernel's rounding.
test-kernels: debug
	@flags=$$(grep -m1 '^flags' /proc/cpuinfo); kernels="Prescott"; \
	case "$$flags" in *avx2*fma*|*fma*avx2*) kernels="$$kernels Haswell";; esac; \
	case "$$flags" in *avx512f*) case "$$flags" in *avx512bw*) kernels="$$kernels SkylakeX";; esac;; esac; \
	status=0; for k in $$kernels; do echo "== OPENBLAS_CORETYPE=$$k (log: .build/test-$$k.log)"; \
	  OPENBLAS_CORETYPE=$$k OPENBLAS_NUM_THREADS=1 $(SWIFT) test --skip-build > .build/test-$$k.log 2>&1 || status=1; \
	  grep -E "✘.*(recorded an issue|failed after)|Test run with" .build/test-$$k.log | tail -20; done; exit $$status

# Integrations/python (the `rowflow` package) drives ROWFLOW_BIN, by default the debug binary `debug` just built.
# Both suites run when their Python packages (and, for Spark, java) are there; .ci/run installs them
# (pip install -r Integrations/python/requirements.txt); under CI=true their absence is an error.
PYTHON ?= python3
PY_ROWFLOW_BIN ?= $(CURDIR)/.build/debug/rowflow
SPARK_ROWFLOW_BIN ?= $(PY_ROWFLOW_BIN)
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider
test-python:
	@if $(PYTHON) -c "import numpy, yaml, pandas, polars, pyarrow, pytest" 2>/dev/null; then \
	  cd Integrations/python && ROWFLOW_BIN=$(PY_ROWFLOW_BIN) OPENBLAS_NUM_THREADS=1 $(PYTEST) tests --ignore=tests/spark; \
	elif [ "$$CI" = true ]; then echo "Python tests need: pip install -r Integrations/python/requirements.txt" >&2; exit 1; \
	else echo "skipping the Python package tests: no numpy/pyyaml/pandas/polars/pyarrow/pytest (pip install -r Integrations/python/requirements.txt)"; fi

# The Spark driver (rowflow.spark) on local[2,4].
test-spark:
	@if $(PYTHON) -c "import pyspark, pyarrow, pandas, numpy, yaml, pytest" 2>/dev/null && command -v java >/dev/null; then \
	  cd Integrations/python && ROWFLOW_BIN=$(SPARK_ROWFLOW_BIN) OPENBLAS_NUM_THREADS=1 $(PYTEST) tests/spark; \
	elif [ "$$CI" = true ]; then echo "Spark tests need java and: pip install -r Integrations/python/requirements.txt" >&2; exit 1; \
	else echo "skipping the Spark tests: no pyspark/java (apt-get install openjdk-17-jre-headless; pip install -r Integrations/python/requirements.txt)"; fi

# The release binary to $(PREFIX)/bin and the Python package (import rowflow; the rowflow-spark command) into
# $(PYTHON)'s environment. PIP_FLAGS e.g. --user, or --break-system-packages on a PEP 668 system Python.
PREFIX ?= /usr/local
PIP_FLAGS ?=
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/rowflow
	$(PYTHON) -m pip install -q $(PIP_FLAGS) ./Integrations/python
	@echo "installed $(DESTDIR)$(PREFIX)/bin/rowflow and the Python package rowflow ($(PYTHON))"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/rowflow
	-$(PYTHON) -m pip uninstall -y -q $(PIP_FLAGS) rowflow

bench: build
	$(MAKE) -C Benchmarks run

# libFuzzer on every decoder (FuzzHarness.targets), FUZZ_SECONDS each; corpora grow in .build-fuzz/corpus,
# crashes land in .build-fuzz/crashes/<target>/ — copy each into Fixtures/fuzz/<target>/ as a regression.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := text npy libsvm zstd manifest checkpoint state
fuzz: deps
	cd Tests/Fuzz && $(SWIFT) build -c release --scratch-path ../../.build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
	@for t in $(FUZZ_TARGETS); do 	  mkdir -p .build-fuzz/corpus/$$t .build-fuzz/crashes/$$t; cp -n Fixtures/fuzz/$$t/* .build-fuzz/corpus/$$t/ 2>/dev/null; 	  ASAN_OPTIONS=detect_leaks=0 ROWFLOW_FUZZ_TARGET=$$t .build-fuzz/release/rowflow-fuzz -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -detect_leaks=0 	    -artifact_prefix=.build-fuzz/crashes/$$t/ .build-fuzz/corpus/$$t > .build-fuzz/$$t.log 2>&1; 	  echo "$$t: exit $$?, $$(grep -o 'Done [0-9]* runs in [0-9]* second' .build-fuzz/$$t.log | tail -1), corpus $$(ls .build-fuzz/corpus/$$t | wc -l), crashes $$(ls .build-fuzz/crashes/$$t | wc -l)"; 	done

# Re-records Fixtures/*/expected from the current build: only on purpose, and review the diff.
record-fixtures: debug
	@for p in Pipelines/*.yaml; do n=$$(basename $$p .yaml); in=$$(ls Fixtures/$$n/input.* | head -1); \
	  rm -rf Fixtures/$$n/expected; .build/debug/rowflow run $$p --input $$in --out Fixtures/$$n/expected --progress never || exit 1; \
	  rm -rf Fixtures/$$n/expected/run.json Fixtures/$$n/expected/*/state.bin Fixtures/$$n/expected/checkpoints Fixtures/$$n/expected/rowstore Fixtures/$$n/expected/.rowflow.lock; done; git status --short Fixtures

clean:
	rm -rf .build
