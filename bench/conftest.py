"""Benchmarks for pytest-benchmark: ``pytest bench/ --benchmark-only``.

The files here are named bench_*.py so that the normal test run (testpaths = tests) never
picks them up; this hook collects them when bench/ is given explicitly.
"""
import fnmatch

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    # leave the file to pytest if its python_files setting already matches it, or if it was
    # named on the command line (pytest collects those itself)
    if any(fnmatch.fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return None
    if parent.session.isinitpath(file_path):
        return None
    return pytest.Module.from_parent(parent, path=file_path)
