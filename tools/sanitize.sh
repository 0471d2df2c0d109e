#!/usr/bin/env bash
# tools/sanitize.sh -- run the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of fastoptim._kernels.
#
# The build happens in a throwaway copy of this tree (never in place: the checkout's own
# extension stays the normal optimized build that everyone else imports). The copy keeps the
# shipped flags (-O3 -ffp-contract=off ..., so the same vectorized loops are checked) and adds
# the sanitizers through FASTOPTIM_EXTRA_CFLAGS, which setup.py appends to every compile and
# link. Python itself is not instrumented, so libasan is preloaded into the interpreter, and
# leak detection is off (CPython keeps memory alive at exit by design).
#
# Usage:   tools/sanitize.sh [pytest arguments]     default: the whole tests/ directory
#   e.g.   tools/sanitize.sh tests/test_fast_vs_reference.py tests/test_fuzz.py -x
# Environment:
#   FASTOPTIM_SANITIZE_DIR     where to put the copy (default: a new mktemp -d, kept afterwards
#                              so a failure can be rerun by hand; the script prints the path)
#   FASTOPTIM_SANITIZE_CFLAGS  the sanitizer flags (default below)
# Exit status: pytest's (a sanitizer report aborts the interpreter: non-zero).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${FASTOPTIM_SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastoptim-sanitize.XXXXXX")}"
mkdir -p "$work"
echo "sanitize: copying $src to $work"
# everything but VCS data, build products and caches (the .c from Cython is regenerated)
tar -C "$src" -cf - \
    --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.so' --exclude='*.o' \
    --exclude=./src/fastoptim/_kernels.c --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=.benchmarks . \
    | tar -C "$work" -xf -

cd "$work"
# a reused directory may hold an earlier build that setuptools would call up to date
rm -rf build src/fastoptim/_kernels.c src/fastoptim/_kernels*.so
export FASTOPTIM_EXTRA_CFLAGS="${FASTOPTIM_SANITIZE_CFLAGS:--fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g}"
echo "sanitize: building with FASTOPTIM_EXTRA_CFLAGS=$FASTOPTIM_EXTRA_CFLAGS (log: $work/build.log)"
if ! python setup.py build_ext --inplace --force >build.log 2>&1; then
    tail -40 build.log
    exit 1
fi

so="$(ls "$work"/src/fastoptim/_kernels*.so)"
if ! ldd "$so" | grep -q libasan; then
    echo "sanitize: $so is not linked against libasan; the build did not take the flags" >&2
    exit 1
fi
libasan="$(${CC:-gcc} -print-file-name=libasan.so)"
libstdcxx="$(${CC:-gcc} -print-file-name=libstdc++.so)"
[ -e "$libasan" ] || { echo "sanitize: libasan.so not found (gcc -print-file-name)" >&2; exit 1; }

# libasan first (it must come before everything it intercepts), then libstdc++: ASan looks up
# the real __cxa_throw when it starts, and in a C program like python it finds none unless
# libstdc++ is already loaded -- the first C++ exception (torch raises some in the tests)
# would then abort with "CHECK failed: ... real___cxa_throw".
export LD_PRELOAD="$libasan${libstdcxx:+:$libstdcxx}${LD_PRELOAD:+:$LD_PRELOAD}"
# detect_leaks=0: CPython does not free everything at exit. allocator_may_return_null=1:
# tests that provoke MemoryError get NULL from malloc, as without ASan, not an ASan abort.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"

# the copy, not the checkout's editable install, must be what gets imported
python - "$work" <<'PY'
import sys
import fastoptim._kernels as k
assert k.__file__.startswith(sys.argv[1]), f"imported {k.__file__}, not the sanitized copy"
print("sanitize: testing", k.__file__, k.build_info())
PY

[ "$#" -gt 0 ] || set -- tests
echo "sanitize: python -m pytest $*"
python -m pytest -p no:cacheprovider "$@"
