"""The compiled kernels and the NumPy reference give identical bits for bfloat16/float16
params, gradients, state and param copies, with both roundings, on any number of threads.

A layout is (param, grad, state, copy) dtypes as the rules allow them: params float32,
bfloat16 or float16 (computed in float32); gradients and state float32, bfloat16 or
float16 next to any of them; a low-precision copy of the updated params only next to
float32 params. Adam runs every layout; every other case of fastoptim._cases runs a few,
chosen so that across the cases of a kernel most layouts come up. The arrays of one call
have sizes around the SIMD widths and the 512-element conversion block, and one is split
across threads (the parallel threshold is lowered for that); one test runs a single array
above the default threshold on 1, 2 and 3 threads.
"""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_same_bits, kernels, needs_kernels, parallel_threshold
from fastoptim import reference
from fastoptim._cases import _parameters, kernel_cases, run_case

ml_dtypes = pytest.importorskip("ml_dtypes")

pytestmark = needs_kernels

F32, BF16, F16 = np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
NAMES = {F32: "f32", BF16: "bf16", F16: "f16"}


class Layout(tuple):
    """(param, grad, state, copy) dtypes; copy None for no param copy."""

    @property
    def label(self):
        param, grad, state, copy = self
        return (f"p={NAMES[param]} g={NAMES[grad]} s={NAMES[state]}"
                + (f" copy={NAMES[copy]}" if copy is not None else ""))


LAYOUTS = [Layout((param, grad, state, copy))
           for param, grad, state in itertools.product((F32, BF16, F16), repeat=3)
           for copy in ((None, BF16, F16) if param == F32 else (None,))]

# around the SIMD widths (8 and 16 floats, loops unrolled to 64) and the conversion block
# of 512; 4099 is cut into pieces of 2048 when split across threads, the small ones are
# grouped into tasks
SIZES = (1, 7, 17, 64, 65, 511, 512, 513, 4099)
STEPS = 2
THREADS = (1, 2, 3)
ROUNDINGS = ("nearest", "stochastic")


def problem(layout, sizes, seed, steps=STEPS):
    """Params around 1 and gradients spread over eight decades (so float16 state meets its
    subnormals and, for g*g, its overflow to inf)."""
    param_dtype, grad_dtype = layout[0], layout[1]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
    scales = [10.0 ** rng.uniform(-6, 2, n) for n in sizes]
    grads = [[(s * rng.standard_normal(s.size)).astype(np.float32).astype(grad_dtype)
              for s in scales] for _ in range(steps)]
    return params, grads


def takes_rounding(case):
    return "options" in _parameters(case.kernel)


def options(case, layout, rounding, sizes, single=False):
    """The run options of a call: the param copy buffers (new ones each call), rounding."""
    if not takes_rounding(case):
        return {}
    copy = layout[3]
    buffers = None
    if copy is not None:
        buffers = [np.zeros(n, copy) for n in sizes]
        buffers = buffers[0] if single else buffers
    return dict(param_copy=buffers, rounding=rounding, seed=2024)


def assert_same_results(fast, slow, what):
    assert fast.keys() == slow.keys()
    for name in fast:
        f, s = fast[name], slow[name]
        for i, (a, b) in enumerate(zip(f, s) if isinstance(f, list) else [(f, s)]):
            assert_same_bits(a, b, f"{what}: {name}[{i}]")


def compare(case, layout, rounding, seed=0):
    """One call over arrays of every size in SIZES, STEPS steps: the reference once, the
    kernels on 1, 2 and 3 threads with the threshold lowered so the largest array splits."""
    params, grads = problem(layout, SIZES, seed)
    if case.kernel == "norms":
        grads = [[g] for g in (grads[0][-1], grads[1][5])]    # a big and a small array
        params = params[0]
    state = layout[2]
    expected = run_case(reference, case, params, grads, state_dtype=state,
                        **options(case, layout, rounding, SIZES))
    changed = next(iter(expected))
    if case.kernel != "norms":
        assert any((a != b).any() for a, b in zip(expected[changed], params)), \
            "the reference changed nothing"
    with parallel_threshold(1024):
        for threads in THREADS:
            fast = run_case(kernels, case, params, grads, threads=threads, state_dtype=state,
                            **options(case, layout, rounding, SIZES))
            assert_same_results(fast, expected, f"{case.label}, {layout.label}, {rounding}, "
                                                f"threads={threads}")


# -- Adam: every layout ------------------------------------------------------------------------

ADAM = next(c for c in kernel_cases() if c.label == "adam_step")
ADAM_AMSGRAD = next(c for c in kernel_cases() if c.label == "adam_step amsgrad")


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.label for layout in LAYOUTS])
def test_adam_fast_equals_reference_in_every_layout(layout, rounding):
    compare(ADAM, layout, rounding)


# -- every other case: a few layouts each ------------------------------------------------------

def cases_and_layouts(per_case=3):
    """(case, layout, rounding) triples: each case with ``per_case`` layouts, stepping
    through LAYOUTS so that the cases of one kernel meet different ones; the rounding
    alternates. Kernels without rounding options (ewma_step, norms) get layouts without a
    param copy, rounding to nearest."""
    triples = []
    plain = [layout for layout in LAYOUTS if layout[3] is None]
    for i, case in enumerate(c for c in kernel_cases() if c.label != "adam_step"):
        pool = LAYOUTS if takes_rounding(case) else plain
        for k in range(per_case):
            layout = pool[(7 * i + 11 * k) % len(pool)]
            rounding = ROUNDINGS[(i + k) % 2] if takes_rounding(case) else "nearest"
            triples.append(pytest.param(case, layout, rounding,
                                        id=f"{case.label}, {layout.label}, {rounding}"))
    return triples


@pytest.mark.parametrize("case, layout, rounding", cases_and_layouts())
def test_every_kernel_fast_equals_reference_in_low_precision(case, layout, rounding):
    compare(case, layout, rounding, seed=1)


def test_the_chosen_layouts_cover_every_layout_and_both_roundings():
    """Across the cases, every layout and rounding meets several kernels."""
    seen = {}
    for p in cases_and_layouts():
        case, layout, rounding = p.values
        seen.setdefault((layout, rounding), set()).add(case.kernel)
    for layout in LAYOUTS:
        for rounding in ROUNDINGS:
            assert len(seen.get((layout, rounding), ())) >= 3, (layout.label, rounding)


# -- the layouts with loops of their own, rounding to nearest: conversions in registers --------

IN_REGISTERS = [Layout((BF16, BF16, BF16, None)),   # every buffer bfloat16
                Layout((F32, F32, BF16, None))]     # float32 params, bfloat16 state


@pytest.mark.parametrize("layout", IN_REGISTERS, ids=[layout.label for layout in IN_REGISTERS])
@pytest.mark.parametrize("case", kernel_cases(), ids=lambda case: case.label)
def test_every_kernel_in_the_layouts_converted_in_registers(case, layout):
    """These layouts run a loop compiled for them (widening and rounding in registers, not
    in blocks): every case, sizes around the SIMD widths, 1-3 threads."""
    compare(case, layout, "nearest", seed=2)


def special_values(n, rng):
    """float32 values whose bfloat16 rounding is a corner: NaN with payloads (one would
    carry into the sign bit if rounded as a number), infinities, float32 subnormals, the
    largest finite bfloat16 and values that round up to infinity, signed zeros, ties."""
    corners = np.array([0x7fc00000, 0xffc00001, 0x7f800001, 0x7fffffff, 0xff800000,
                        0x7f800000, 0x00000001, 0x807fffff, 0x00018000, 0x7f7f0000,
                        0x7f7f8000, 0xff7fffff, 0x80000000, 0x00000000, 0x3f808000,
                        0x3f818000, 0x3f80ffff, 0x3f807fff], np.uint32).view(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    x[rng.integers(0, n, 3 * corners.size)] = np.tile(corners, 3)
    return x


@pytest.mark.filterwarnings("ignore:(invalid value|overflow) encountered:RuntimeWarning")
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("layout", IN_REGISTERS, ids=[layout.label for layout in IN_REGISTERS])
def test_loops_in_registers_round_special_values_as_the_reference_does(layout, amsgrad):
    """Params, gradients and moments at the corners of bfloat16 rounding, through Adam
    (amsgrad: a fourth buffer) and SGD, whose results meet those corners again: NaN and
    infinity propagate, g*g overflows, subnormal moments round, param - lr*g lands on ties."""
    param_dtype, grad_dtype, state_dtype = layout[:3]
    rng = np.random.default_rng(5)
    n = 4099
    params = [special_values(n, rng).astype(param_dtype) for _ in range(2)]
    state = [special_values(n, rng).astype(state_dtype) for _ in range(3)]
    grad = (special_values(n, rng) * np.float32(1e30)).astype(grad_dtype)
    results = []
    for module, threads in ((reference, {}), (kernels, dict(threads=2))):
        p, q = (x.copy() for x in params)
        m, v, vmax = (x.copy() for x in state)
        module.adam_step(p, grad, m, v, vmax if amsgrad else None, lr=0.5, step=3,
                         weight_decay=0.1, **threads)
        module.sgd_step(q, params[0].astype(grad_dtype), lr=2.0 ** -8, **threads)
        results.append(dict(param=p, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=vmax, sgd=q))
    slow, fast = results
    for name in fast:
        assert_same_bits(fast[name], slow[name], name)
    assert np.isnan(fast["exp_avg"].astype(np.float32)).any()
    assert np.isinf(fast["exp_avg_sq"].astype(np.float32)).any()


# -- Adam's loops with the CPU's bfloat16 conversion (AVX512-BF16) -----------------------------

def cpu_converts_bfloat16():
    """Whether the CPU has AVX512-BF16, read from /proc/cpuinfo (None elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_bf16" in f.read().split()
    except OSError:
        return None


def test_adam_rounds_with_the_bfloat16_instruction_exactly_where_the_cpu_has_it():
    has = cpu_converts_bfloat16()
    if has is None:
        pytest.skip("no /proc/cpuinfo to check the CPU against")
    generic = os.environ.get("FASTOPTIM_GENERIC_BF16") == "1"
    assert kernels.build_info()["bfloat16_instruction"] == (has and not generic)


@pytest.mark.skipif(os.environ.get("FASTOPTIM_GENERIC_BF16") == "1", reason="already generic")
def test_the_generic_bfloat16_loops_where_the_cpu_converts():
    """On a CPU with the instruction, the tests above run Adam's loops that use it (three
    layouts, the float32 master with a bfloat16 gradient and copy among them) and the block
    conversions round with it; the generic loops, blocks and rounding (every other CPU) run
    here, in a child with FASTOPTIM_GENERIC_BF16=1, with the rounding tests."""
    if not kernels.build_info()["bfloat16_instruction"]:
        pytest.skip("the generic loops already run in this process")
    tests = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         os.path.join(tests, "test_low_precision.py"), os.path.join(tests, "test_rounding.py"),
         "-k", "registers or bfloat16_instruction or split_across_threads or rounding "
         "or every_layout"],
        env=dict(os.environ, FASTOPTIM_GENERIC_BF16="1"), cwd=tests,
        capture_output=True, text=True)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    assert " passed" in child.stdout and " failed" not in child.stdout


# -- above the default threshold, on 1, 2 and 3 threads ----------------------------------------

BIG = 2 * 65536 + 37
BIG_LAYOUTS = [Layout(t) for t in [
    (F32, F32, BF16, None),     # float32 params, bfloat16 moments
    (BF16, BF16, BF16, None),   # everything bfloat16
    (F32, BF16, F32, BF16),     # float32 master, bfloat16 gradient and copy
    (F16, F16, F16, None),
    (F32, F16, F16, F16),
]]


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("layout", BIG_LAYOUTS, ids=[layout.label for layout in BIG_LAYOUTS])
def test_one_large_array_split_across_threads(layout, rounding):
    (param,), grads = problem(layout, (BIG,), seed=3, steps=2)
    grads = [g[0] for g in grads]
    expected = run_case(reference, ADAM_AMSGRAD, param, grads, state_dtype=layout[2],
                        **options(ADAM_AMSGRAD, layout, rounding, (BIG,), single=True))
    for threads in THREADS:
        fast = run_case(kernels, ADAM_AMSGRAD, param, grads, threads=threads,
                        state_dtype=layout[2],
                        **options(ADAM_AMSGRAD, layout, rounding, (BIG,), single=True))
        assert_same_results(fast, expected, f"{layout.label}, {rounding}, threads={threads}")


# -- the array index in the rounding key ---------------------------------------------------------

@pytest.mark.parametrize("module", ["kernels", "reference"])
def test_param_index_keys_an_array_as_its_place_in_a_list(module):
    """Array i of a list draws the bits of a single call with param_index=i (how
    fastoptim.torch numbers the params of its groups), and another index draws others."""
    module = kernels if module == "kernels" else reference
    layout = Layout((BF16, BF16, BF16, None))
    sizes = (700, 1300, 900)
    params, grads = problem(layout, sizes, seed=4, steps=1)
    m = [np.zeros(n, BF16) for n in sizes]
    v = [np.zeros(n, BF16) for n in sizes]
    together = [p.copy() for p in params]
    module.adam_step(together, grads[0], m, v, lr=1e-2, step=1, rounding="stochastic", seed=8)
    for i, n in enumerate(sizes):
        one = params[i].copy()
        module.adam_step(one, grads[0][i], np.zeros(n, BF16), np.zeros(n, BF16), lr=1e-2,
                         step=1, rounding="stochastic", seed=8, param_index=i)
        assert_same_bits(one, together[i], f"param[{i}]")
        other = params[i].copy()
        module.adam_step(other, grads[0][i], np.zeros(n, BF16), np.zeros(n, BF16), lr=1e-2,
                         step=1, rounding="stochastic", seed=8, param_index=i + 1)
        assert (other != one).any()


@pytest.mark.parametrize("module", ["kernels", "reference"])
@pytest.mark.parametrize("param_dtype", [BF16, F16, np.dtype(np.float64)],
                         ids=["bfloat16", "float16", "float64"])
def test_a_param_copy_is_refused_unless_the_params_are_float32(module, param_dtype):
    """The copy is the float32 params rounded (master weights). Next to a low-precision
    param it would round the float32 result a second time, independently of the param's
    own store (with stochastic rounding a third of the elements differed from the param
    they copy), so it is refused, before anything is written."""
    module = kernels if module == "kernels" else reference
    param = np.linspace(-1, 1, 100).astype(param_dtype)
    grad = np.ones(100, param_dtype)
    for copy_dtype in (BF16, F16):
        p, copy = param.copy(), np.zeros(100, copy_dtype)
        with pytest.raises(TypeError, match="param_copy: a .* param has no low-precision "
                                            "copy.*float32 params"):
            module.sgd_step(p, grad, lr=0.1, param_copy=copy, rounding="stochastic")
        assert_same_bits(p, param)
        assert not copy.view(np.uint16).any()
