#!/usr/bin/env bash
# run.sh: builds every libFuzzer target tests/fuzz/fuzz_*.c and runs each for FUZZ_SECONDS
# (default: FUZZ_TOTAL_SECONDS, 45, shared among the targets, at least 5 s each; 15 s each for
# three), FUZZ_JOBS targets at a time. Exits non-zero when a target fails to build or any run
# finds a crash, sanitizer report, leak or invariant failure; the reproducer is left in
# build-fuzz/artifacts/. Targets run with stdin from /dev/null (fuzz_config may be pointed at
# /dev/stdin by its input and must not wait on a terminal).
#
# The src objects (all of src/**/*.c but src/main.c) are compiled once with coverage and
# sanitizers and put in an archive, so each target links only the objects it uses. A src
# file that does not compile (work in progress elsewhere) is skipped with a warning; a
# target that needs it then fails to link.
#
# Seeds come from tests/fuzz/corpus/<target>/ (committed, read-only here); new inputs go to
# build-fuzz/corpus/<target>/. tests/fuzz/<target>.dict is used when present.
#
# Environment: FUZZ_SECONDS, FUZZ_TOTAL_SECONDS, FUZZ_TARGETS (space-separated names, default
# all), FUZZ_CC (default clang), FUZZ_LDLIBS, FUZZ_ARGS (extra libFuzzer flags), FUZZ_JOBS
# (compile jobs, and targets run at a time; default: the CPUs).
set -euo pipefail

cd "$(dirname "$0")/../.."
FUZZ_TOTAL_SECONDS=${FUZZ_TOTAL_SECONDS:-45}
CC=${FUZZ_CC:-clang}
LDLIBS=${FUZZ_LDLIBS:--lpg_query -lcjson -lssl -lcrypto -lcyaml -lyaml -lhs -lsqlite3 -lzstd -lmicrohttpd -lcurl -lcjose -ljansson -lpq -pthread}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 4)}
OUT=build-fuzz
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Isrc -I/usr/include/postgresql -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
SAN_LIB="-fsanitize=fuzzer-no-link,address,undefined"
SAN_BIN="-fsanitize=fuzzer,address,undefined"

if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (libFuzzer needs clang)" >&2
    exit 2
fi

# ---- src objects -> build-fuzz/libsluice.a ----
mkdir -p "$OUT/obj"
compile_one() { # src.c -> OUT/obj/src.o, rebuilt when it or a header it includes changed
    local src=$1 obj=$OUT/obj/${1%.c}.o dep=$OUT/obj/${1%.c}.d
    mkdir -p "$(dirname "$obj")"
    if [[ -f $obj && -f $dep ]]; then
        local stale=0 f
        for f in $(sed -e 's/^[^:]*://' -e 's/\\$//' -e '/^[[:space:]]*$/d' "$dep" | tr -s ' \n' '\n' | grep -v ':$'); do
            [[ -e $f && $f -nt $obj ]] && { stale=1; break; }
            [[ -e $f ]] || { stale=1; break; }
        done
        ((stale)) || return 0
    fi
    # shellcheck disable=SC2086 # CFLAGS and SAN_LIB are lists of flags
    if ! $CC $CFLAGS $SAN_LIB -MMD -MF "$dep" -c "$src" -o "$obj" 2>"$obj.log"; then
        echo "fuzz: warning: $src does not compile, skipped:" >&2
        sed 's/^/    /' "$obj.log" | head -n 20 >&2
        rm -f "$obj"
        return 0
    fi
    rm -f "$obj.log"
}
export -f compile_one
export CC CFLAGS SAN_LIB OUT

mapfile -t SRCS < <(find src -name '*.c' ! -path src/main.c | sort)
printf '%s\n' "${SRCS[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile_one "$@"' _ {}

OBJS=()
for s in "${SRCS[@]}"; do
    o=$OUT/obj/${s%.c}.o
    [[ -f $o ]] && OBJS+=("$o")
done
# Objects of src files that were deleted since must not linger in the archive.
rm -f "$OUT/libsluice.a"
ar rcs "$OUT/libsluice.a" "${OBJS[@]}"

# ---- targets ----
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    TARGETS=()
    for f in tests/fuzz/fuzz_*.c; do
        [[ -e $f ]] && TARGETS+=("$(basename "${f%.c}")")
    done
fi
if ((${#TARGETS[@]} == 0)); then
    echo "fuzz: no targets in tests/fuzz/fuzz_*.c" >&2
    exit 1
fi
if [[ -z ${FUZZ_SECONDS:-} ]]; then
    FUZZ_SECONDS=$((FUZZ_TOTAL_SECONDS / ${#TARGETS[@]}))
    ((FUZZ_SECONDS >= 5)) || FUZZ_SECONDS=5
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# One target: build it and run it for FUZZ_SECONDS; its report goes to OUT/t.report, and
# OUT/t.failed says why it failed. Targets run JOBS at a time (each its own core).
fuzz_one() {
    local t=$1 rep=$OUT/$1.report
    rm -f "$OUT/$t.failed"
    {
        echo "== fuzz: building $t"
        # shellcheck disable=SC2086 # flag lists
        if ! $CC $CFLAGS $SAN_BIN "tests/fuzz/$t.c" "$OUT/libsluice.a" -o "$OUT/$t" $LDLIBS 2>&1; then
            echo "fuzz: $t: build failed"
            echo "$t (build)" >"$OUT/$t.failed"
            return 0
        fi
        mkdir -p "$OUT/corpus/$t" "$OUT/artifacts"
        local corpora=("$OUT/corpus/$t")
        [[ -d tests/fuzz/corpus/$t ]] && corpora+=("tests/fuzz/corpus/$t")
        local args=(-max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-")
        [[ -f tests/fuzz/$t.dict ]] && args+=(-dict="tests/fuzz/$t.dict")
        echo "== fuzz: running $t for ${FUZZ_SECONDS}s"
        # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
        if ! "$OUT/$t" "${args[@]}" ${FUZZ_ARGS:-} "${corpora[@]}" </dev/null >"$OUT/$t.log" 2>&1; then
            echo "fuzz: $t FAILED; last lines of $OUT/$t.log:"
            tail -n 60 "$OUT/$t.log"
            echo "$t" >"$OUT/$t.failed"
            return 0
        fi
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+.*DONE' "$OUT/$t.log" | sed 's/^/    /' || true
        echo "== fuzz: $t ok"
    } >"$rep"
}
export -f fuzz_one
export SAN_BIN LDLIBS FUZZ_SECONDS

printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'fuzz_one "$@"' _ {}
failed=()
for t in "${TARGETS[@]}"; do
    cat "$OUT/$t.report"
    [[ -f $OUT/$t.failed ]] && failed+=("$(cat "$OUT/$t.failed")")
done

if ((${#failed[@]})); then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#TARGETS[@]} target(s) ok"
