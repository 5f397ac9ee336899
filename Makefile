# sluice build: a plain Makefile. `make` builds build/sluice; `make check` installs what is
# missing and runs every test (unit, integration, the same under ASan+UBSan, a short fuzz run);
# `make demo` starts PostgreSQL with sample data and sluice in front; `make bench` compares
# sluice with direct PostgreSQL and PgBouncer.
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
EXTRA_CFLAGS ?=
EXTRA_LDFLAGS ?=
CFLAGS  = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g $(OPT) -Isrc -I/usr/include/postgresql -pthread $(EXTRA_CFLAGS)
LDLIBS  = -lpg_query -lcjson -lssl -lcrypto -lcyaml -lyaml -lhs -lsqlite3 -lzstd -lmicrohttpd -lcurl -lcjose -ljansson -lpq -pthread
PYTHON  = /usr/bin/python3

SRC     := $(shell find src -name '*.c' ! -path src/main.c | sort)
OBJ     := $(SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/web_assets.o
WEB     := $(wildcard web/*)
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(wildcard tests/unit/test_*.c))

.PHONY: all deps unit unit-bins integration npm-test-deps asan fuzz mask-corpus check demo bench format format-check clean

all: $(BUILD)/sluice

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# The dashboard (web/) is embedded into the binary.
$(BUILD)/gen/web_assets.c: $(WEB) scripts/embed-web.sh
	@mkdir -p $(dir $@)
	./scripts/embed-web.sh web $@

$(BUILD)/gen/web_assets.o: $(BUILD)/gen/web_assets.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/sluice: $(OBJ) $(BUILD)/src/main.o
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(EXTRA_LDFLAGS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $< $(OBJ) -o $@ $(LDLIBS) -lcmocka $(EXTRA_LDFLAGS)

deps:
	./scripts/install-deps.sh

unit-bins: $(UNIT)

unit: $(UNIT)
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done

# npm packages the tests drive (node-postgres, playwright-core): installed once.
NPM_TEST_DIRS = tests/integration/node tests/integration/browser
npm-test-deps:
	@set -e; for d in $(NPM_TEST_DIRS); do [ -d $$d/node_modules ] || \
	  (cd $$d && npm install --no-audit --no-fund --silent); done

# The integration suite runs on JOBS pytest-xdist workers (one per CPU), a test file per worker
# at a time: each worker starts its own PostgreSQL and sluice. JOBS=1 runs it in one process.
JOBS ?= $(shell nproc)
PYTEST_JOBS = $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)

# The driver suites' direct results (tests/integration/driver_suites.py) are written to
# DRIVER_DIRECT by a run of the integration suite and taken from there by the ASan run
# (DRIVER_REUSE=1): a suite run directly against PostgreSQL does not need a second run.
DRIVER_DIRECT = $(abspath build/driver-direct)
DRIVER_REUSE ?=

integration: $(BUILD)/sluice npm-test-deps
	$(if $(DRIVER_REUSE),,rm -rf $(DRIVER_DIRECT))
	SLUICE_DRIVER_DIRECT=$(DRIVER_DIRECT) SLUICE_DRIVER_DIRECT_REUSE=$(DRIVER_REUSE) \
	  SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTHON) -m pytest -q -x $(PYTEST_JOBS) tests/integration \
	  $(PYTEST_ARGS)

ASAN_VARS = BUILD=build-asan CC=clang OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"

asan:
	$(MAKE) -j$(JOBS) $(ASAN_VARS) all unit-bins
	$(MAKE) $(ASAN_VARS) unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(MAKE) $(ASAN_VARS) DRIVER_REUSE=1 integration

fuzz:
	./tests/fuzz/run.sh

# Masking detectors against a labelled corpus made with @faker-js/faker (seeded): per-detector
# recall and false-positive rate; fails when a detector misses 99% recall or 0.1% FP.
$(BUILD)/tests/mask/corpus_eval: tests/mask/corpus_eval.c $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(OBJ) -o $@ $(LDLIBS) $(EXTRA_LDFLAGS)

mask-corpus: $(BUILD)/tests/mask/corpus_eval
	@[ -d tests/mask/node_modules ] || (cd tests/mask && npm install --no-audit --no-fund --silent)
	node tests/mask/gen_corpus.js $(BUILD)/tests/mask/corpus.tsv
	$(BUILD)/tests/mask/corpus_eval $(BUILD)/tests/mask/corpus.tsv

check:
	$(MAKE) deps
	$(MAKE) -j$(JOBS) all unit-bins
	$(MAKE) unit mask-corpus integration asan fuzz format-check

demo: deps all
	./scripts/demo.sh

bench: deps all
	./bench/run.sh

format:
	clang-format -i $$(find src tests -name '*.[ch]')

format-check:
	@clang-format --dry-run --Werror $$(find src tests -name '*.[ch]') && echo "format: ok"

clean:
	rm -rf build build-asan build-fuzz

-include $(OBJ:.o=.d) $(BUILD)/src/main.d
