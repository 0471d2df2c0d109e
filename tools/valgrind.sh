#!/usr/bin/env bash
# tools/valgrind.sh -- run tests under valgrind memcheck against the extension already built in
# this tree (nothing is rebuilt: the normal -O3 build is what gets checked).
#
# Usage:   tools/valgrind.sh [pytest arguments]   default: tests/test_fast_vs_reference.py
# Slow: ~30x native; the default (the kernel tests, four dtypes) takes over an hour on 2 cores:
# pick files or -k for a shorter run (tests/test_threads.py: 2 minutes).
#
# PYTHONMALLOC=malloc makes CPython allocate through malloc, so memcheck sees every Python
# object. The suppressions below silence what is not ours: uninitialised-value reports raised
# inside libpython itself (CPython 3.11 reports them even for `python -c pass`), and glibc's
# string functions reading whole words or vectors past a string's end (strncmp in the dynamic
# loader, the AVX2 wmemcmp behind str comparisons). Nothing in fastoptim._kernels or NumPy is
# suppressed. Exit status 99 means memcheck found errors. FASTOPTIM_UNDER_VALGRIND=1 lets the
# tests skip what valgrind's one-thread-at-a-time scheduling makes meaningless (a timing test
# of the GIL in tests/test_threads.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# the interpreter itself, not a wrapper script (pyenv shims are bash scripts)
python_exe="$(python -c 'import sys; print(sys.executable)')"
supp="$(mktemp "${TMPDIR:-/tmp}/fastoptim-valgrind.XXXXXX.supp")"
trap 'rm -f "$supp"' EXIT
cat >"$supp" <<'SUPP'
{
   cpython-internal-cond
   Memcheck:Cond
   obj:*/libpython3*.so*
}
{
   cpython-internal-value8
   Memcheck:Value8
   obj:*/libpython3*.so*
}
{
   ld.so-strncmp-reads-whole-words
   Memcheck:Addr8
   fun:strncmp
   fun:is_dst
}
{
   glibc-avx2-string-functions-read-whole-vectors
   Memcheck:Addr32
   fun:__*_avx2*
}
SUPP

[ "$#" -gt 0 ] || set -- tests/test_fast_vs_reference.py -q
echo "valgrind: memcheck on $python_exe -m pytest $*"
PYTHONMALLOC=malloc FASTOPTIM_UNDER_VALGRIND=1 exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=no \
    --num-callers=30 --suppressions="$supp" \
    "$python_exe" -m pytest -p no:cacheprovider "$@"
