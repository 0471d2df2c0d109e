# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled backend: the C loops of csrc/, behind the signatures of fastoptim.reference.

Design: a kernel call does O(1) work in Python terms. The buffers get a fast check here
(type, dtype, shape, flags, overlap by address range); only when that check fails does
fastoptim._checks run, to raise the precise error -- so the rules and the messages live
in one place, shared with the NumPy reference. The per-step scalars are computed here in
C double with the same expressions the reference evaluates in Python float, then the
loop runs with the GIL released.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.sequence cimport PySequence_Fast_GET_ITEM
from libc.math cimport sqrt
from libc.stdint cimport int64_t
from libc.stdlib cimport qsort

cimport numpy as cnp

from fastoptim._checks import (
    check_buffers,
    each_array,
    check_momentum_form,
    check_rmsprop_momentum,
    check_step,
    check_threads,
)
from fastoptim.reference_ewma import prepare_scan

cnp.import_array()

cdef extern from "fastoptim.h" nogil:
    enum:
        FO_FLOAT32
        FO_FLOAT64
        FO_MOMENTUM_TORCH
        FO_MOMENTUM_EWMA
        FO_MOMENTUM_VELOCITY

    ctypedef struct fo_grad_scalars:
        int maximize
        double weight_decay

    ctypedef struct sgd_scalars:
        fo_grad_scalars g
        double lr

    ctypedef struct momentum_scalars:
        fo_grad_scalars g
        int form, nesterov, first_step
        double momentum, grad_weight, step_size, momentum_sq, nesterov_grad

    ctypedef struct adagrad_scalars:
        fo_grad_scalars g
        double clr, eps

    ctypedef struct rmsprop_scalars:
        fo_grad_scalars g
        double alpha, one_minus_alpha, eps, lr, momentum

    ctypedef struct adam_scalars:
        fo_grad_scalars g
        double param_decay
        int decoupled
        double beta1, one_minus_beta1, beta2, one_minus_beta2
        double step_size, rsqrt_bc2, inv_bc2, eps, eps_root

    ctypedef struct ewma_scalars:
        double beta, one_minus_beta

    ctypedef struct ewma_scan_scalars:
        double beta, alpha
        const double *decay
        int64_t min_periods
        int adjust, bias_correction, ignore_na, complement_weight, float32_arithmetic

    ctypedef void fo_kernel(void *const *buffers, int64_t n, const void *scalars, int threads)
    ctypedef void ewma_scan_kernel(void *, const void *, void *, void *, int64_t *, int64_t,
                                   int64_t, int64_t, const ewma_scan_scalars *, int)

    fo_kernel *c_sgd_step "sgd_step"[2]
    fo_kernel *c_momentum_step "momentum_step"[2]
    fo_kernel *c_adagrad_step "adagrad_step"[2]
    fo_kernel *c_rmsprop_step "rmsprop_step"[2]
    fo_kernel *c_adam_step "adam_step"[2]
    fo_kernel *c_ewma_step "ewma_step"[2]
    ewma_scan_kernel *c_ewma_scan "ewma_scan"[2]

    void fo_run_many(fo_kernel *const *kernel, void *const *buffers, int roles, const int64_t *n,
                     const int *dtype, int64_t count, const void *scalars, int threads)
    int fo_max_threads()
    int fo_has_openmp()
    int64_t fo_parallel_threshold()
    void fo_set_parallel_threshold(int64_t n)
    const char *fo_simd_target()

    enum:
        FO_MOVEMENT_MAX_UPDATED
    ctypedef void movement_kernel(void **, int, const void *, int64_t, int)
    movement_kernel *c_movement_loop "movement_loop"[2]

__all__ = [
    "sgd_step",
    "momentum_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "ewma_step",
    "ewma_scan",
]

cdef enum:
    MAX_BUFFERS = 5

# Names of each kernel's buffers, in argument order: (written, read, written state...).
cdef tuple SGD_NAMES = ("param", "grad")
cdef tuple MOMENTUM_NAMES = ("param", "grad", "momentum_buffer")
cdef tuple ADAGRAD_NAMES = ("param", "grad", "state_sum")
cdef tuple RMSPROP_NAMES = ("param", "grad", "square_avg", "grad_avg", "momentum_buffer")
cdef tuple ADAM_NAMES = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
cdef tuple EWMA_NAMES = ("average", "value")


cdef int _prepare(tuple arrays, tuple names, void **data, int64_t *n) except -1:
    """Check arrays = (written, read, state...) in O(1) each; fill data (NULL where a state
    entry is None) and n; return FO_FLOAT32 or FO_FLOAT64, or raise the precise error."""
    cdef PyObject *objects[MAX_BUFFERS]
    cdef Py_ssize_t i
    for i in range(len(arrays)):
        objects[i] = <PyObject *>arrays[i]
    cdef int dt = _check_group(objects, len(arrays), data, n)
    if dt < 0:
        _raise_buffer_error(arrays, names)
    return dt


cdef int _check_group(PyObject **objects, Py_ssize_t k, void **data, int64_t *n):
    """_prepare without the error: -1 when anything is off. The objects are borrowed
    references (from the caller's tuple or lists), so checking allocates nothing."""
    cdef Py_ssize_t i, j
    cdef cnp.ndarray a, first
    cdef char *start[MAX_BUFFERS]
    cdef char *end[MAX_BUFFERS]
    cdef int typenum, need
    obj = <object>objects[0]
    if not cnp.PyArray_Check(obj):
        return -1
    first = <cnp.ndarray>obj
    typenum = cnp.PyArray_TYPE(first)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return -1
    for i in range(k):
        obj = <object>objects[i]
        if obj is None and i >= 2:
            data[i] = NULL
            start[i] = end[i] = NULL
            continue
        if not cnp.PyArray_Check(obj):
            return -1
        a = <cnp.ndarray>obj
        need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        if i != 1:
            need |= cnp.NPY_ARRAY_WRITEABLE
        if (cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a)
                or (cnp.PyArray_FLAGS(a) & need) != need or not _same_shape(a, first)):
            return -1
        data[i] = cnp.PyArray_DATA(a)
        start[i] = <char *>data[i]
        end[i] = start[i] + cnp.PyArray_NBYTES(a)
    # every pair includes a written buffer (only arrays[1] is read): none may overlap
    for i in range(k):
        for j in range(i + 1, k):
            if start[i] < end[j] and start[j] < end[i]:
                return -1
    n[0] = cnp.PyArray_SIZE(first)
    return FO_FLOAT64 if typenum == cnp.NPY_FLOAT64 else FO_FLOAT32


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if nd != cnp.PyArray_NDIM(b):
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef int _raise_buffer_error(tuple arrays, tuple names) except -1:
    check_buffers(arrays[0], arrays[1], names[2:], arrays[2:], names=names[:2])
    raise AssertionError("fastoptim: the fast buffer check refused what _checks accepts")


cdef int _run(fo_kernel *const *kernel, tuple buffers, tuple names, const void *scalars,
              int threads) except -1:
    """Run one kernel over buffers = (param, grad, state...): each an array, or each a list
    of arrays (an optimizer's whole parameter list, stepped in one call into C)."""
    cdef void *data[MAX_BUFFERS]
    cdef int64_t n
    cdef int dt
    if not cnp.PyArray_Check(buffers[0]):
        return _run_many(kernel, buffers, names, scalars, threads)
    dt = _prepare(buffers, names, data, &n)
    with nogil:
        kernel[dt](data, n, scalars, threads)
    return 0


cdef struct _span:
    char *start
    char *end
    int written


cdef int _by_start(const void *a, const void *b) noexcept nogil:
    cdef char *x = (<const _span *>a).start
    cdef char *y = (<const _span *>b).start
    return (x > y) - (x < y)


cdef int _run_many(fo_kernel *const *kernel, tuple buffers, tuple names, const void *scalars,
                   int threads) except -1:
    """The list form: every array checked in O(1) as in _prepare, and no written buffer
    sharing memory with any other buffer of the call (a sort of their byte ranges)."""
    cdef Py_ssize_t roles = len(buffers), count, i, r, k = 0
    cdef PyObject *columns[MAX_BUFFERS]   # each buffer argument: a list/tuple, or None
    cdef PyObject *objects[MAX_BUFFERS]   # array i of each column (borrowed)
    cdef int64_t itemsize
    cdef list held = []   # tuples of the caller's lists: their arrays stay alive (and in
                          # place) while the step runs without the GIL, whatever other
                          # threads do to the lists meanwhile
    first = buffers[0]
    if type(first) is not list and type(first) is not tuple:
        return _raise_many(buffers, names)
    count = len(first)
    for r in range(roles):
        b = buffers[r]
        if not ((b is None and r >= 2)
                or ((type(b) is list or type(b) is tuple) and len(b) == count)):
            return _raise_many(buffers, names)
        if b is not None:
            b = tuple(b)
        held.append(b)
        columns[r] = <PyObject *>b
    cdef void **data = <void **>PyMem_Malloc(count * roles * sizeof(void *))
    cdef int64_t *n = <int64_t *>PyMem_Malloc(count * sizeof(int64_t))
    cdef int *dtype = <int *>PyMem_Malloc(count * sizeof(int))
    cdef _span *spans = <_span *>PyMem_Malloc(count * roles * sizeof(_span))
    try:
        if not (data and n and dtype and spans):
            raise MemoryError()
        for i in range(count):
            for r in range(roles):
                objects[r] = (columns[r] if columns[r] == <PyObject *>None
                              else PySequence_Fast_GET_ITEM(<object>columns[r], i))
            dtype[i] = _check_group(objects, roles, data + i * roles, n + i)
            if dtype[i] < 0:
                return _raise_many(buffers, names)
            itemsize = 8 if dtype[i] == FO_FLOAT64 else 4
            for r in range(roles):
                if data[i * roles + r] != NULL and n[i] > 0:
                    spans[k].start = <char *>data[i * roles + r]
                    spans[k].end = spans[k].start + n[i] * itemsize
                    spans[k].written = r != 1
                    k += 1
        if _any_written_overlap(spans, k):
            return _raise_many(buffers, names)
        with nogil:
            fo_run_many(kernel, data, <int>roles, n, dtype, count, scalars, threads)
    finally:
        PyMem_Free(data)
        PyMem_Free(n)
        PyMem_Free(dtype)
        PyMem_Free(spans)
    return 0


cdef bint _any_written_overlap(_span *spans, Py_ssize_t k) noexcept:
    """Sorted by start, a range overlaps an earlier one iff it starts before the furthest
    end seen so far; only pairs that include a written buffer count."""
    cdef char *written_end = NULL
    cdef char *any_end = NULL
    cdef Py_ssize_t i
    qsort(spans, k, sizeof(_span), _by_start)
    for i in range(k):
        if spans[i].start < written_end or (spans[i].written and spans[i].start < any_end):
            return True
        if spans[i].end > any_end:
            any_end = spans[i].end
        if spans[i].written and spans[i].end > written_end:
            written_end = spans[i].end
    return False


cdef int _raise_many(tuple buffers, tuple names) except -1:
    each_array(names, *buffers)
    raise AssertionError("fastoptim: the fast buffer check refused what _checks accepts")


cdef inline int _threads(object threads) except -1:
    """The team size for a call. The default is resolved here, with the GIL held: it reads
    FASTOPTIM_NUM_THREADS, and getenv must not race a write to os.environ."""
    if threads is None:
        return fo_max_threads()
    return check_threads(threads)


cdef inline int _check_step(int64_t step) except -1:
    if step < 1:
        check_step(step)
    return 0


def sgd_step(param, grad, *, double lr, double weight_decay=0.0, bint maximize=False,
             threads=None):
    """p <- p - lr * g.  See fastoptim.reference.sgd_step."""
    cdef int nt = _threads(threads)
    cdef sgd_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.lr = lr
    _run(c_sgd_step, (param, grad), SGD_NAMES, &s, nt)


def momentum_step(param, grad, momentum_buffer, *, double lr, double momentum, int64_t step,
                  double dampening=0.0, bint nesterov=False, str form="torch",
                  bint bias_correction=False, double weight_decay=0.0, bint maximize=False,
                  threads=None):
    """Momentum in the torch, ewma or velocity form.  See fastoptim.reference.momentum_step."""
    cdef int nt = _threads(threads)
    cdef momentum_scalars s
    if form == "torch":
        s.form = FO_MOMENTUM_TORCH
    elif form == "ewma":
        s.form = FO_MOMENTUM_EWMA
    elif form == "velocity":
        s.form = FO_MOMENTUM_VELOCITY
    if form not in ("torch", "ewma", "velocity") or (dampening != 0 and form != "torch") \
            or (bias_correction and form != "ewma"):
        check_momentum_form(form, dampening, nesterov, bias_correction)
    _check_step(step)
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.nesterov = nesterov
    s.first_step = step == 1
    s.momentum = momentum
    s.momentum_sq = 0.0
    s.nesterov_grad = 0.0
    if s.form == FO_MOMENTUM_TORCH:
        s.grad_weight = 1.0 - dampening
        s.step_size = lr
    elif s.form == FO_MOMENTUM_EWMA:
        s.grad_weight = 1.0 - momentum
        s.step_size = lr / (1.0 - momentum ** step) if bias_correction else lr
    else:
        s.grad_weight = lr
        s.step_size = 0.0
        s.momentum_sq = momentum * momentum
        s.nesterov_grad = (1.0 + momentum) * lr
    _run(c_momentum_step, (param, grad, momentum_buffer), MOMENTUM_NAMES, &s, nt)


def adagrad_step(param, grad, state_sum, *, double lr, int64_t step, double lr_decay=0.0,
                 double eps=1e-10, double weight_decay=0.0, bint maximize=False,
                 threads=None):
    """AdaGrad (torch.optim.Adagrad).  See fastoptim.reference.adagrad_step."""
    cdef int nt = _threads(threads)
    _check_step(step)
    cdef adagrad_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.clr = lr / (1.0 + (step - 1) * lr_decay)
    s.eps = eps
    _run(c_adagrad_step, (param, grad, state_sum), ADAGRAD_NAMES, &s, nt)


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, double lr,
                 double alpha=0.99, double eps=1e-8, double momentum=0.0,
                 double weight_decay=0.0, bint maximize=False, threads=None):
    """RMSProp (torch.optim.RMSprop); centered when grad_avg is given.
    See fastoptim.reference.rmsprop_step."""
    cdef int nt = _threads(threads)
    if (momentum_buffer is None) != (momentum == 0):
        check_rmsprop_momentum(momentum, momentum_buffer)
    cdef rmsprop_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.alpha = alpha
    s.one_minus_alpha = 1.0 - alpha
    s.eps = eps
    s.lr = lr
    s.momentum = momentum
    _run(c_rmsprop_step, (param, grad, square_avg, grad_avg, momentum_buffer), RMSPROP_NAMES,
         &s, nt)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, double lr,
              int64_t step, double beta1=0.9, double beta2=0.999, double eps=1e-8,
              double eps_root=0.0, double weight_decay=0.0, bint maximize=False,
              threads=None):
    """Adam with L2 weight decay; amsgrad when max_exp_avg_sq is given.
    See fastoptim.reference.adam_step."""
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
          eps_root, weight_decay, False, maximize, threads)


def adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, double lr,
               int64_t step, double beta1=0.9, double beta2=0.999, double eps=1e-8,
               double eps_root=0.0, double weight_decay=1e-2, bint maximize=False,
               threads=None):
    """AdamW: decoupled weight decay.  See fastoptim.reference.adamw_step."""
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, step, beta1, beta2, eps,
          eps_root, weight_decay, True, maximize, threads)


cdef int _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, double lr, int64_t step,
               double beta1, double beta2, double eps, double eps_root, double weight_decay,
               bint decoupled, bint maximize, threads) except -1:
    cdef int nt = _threads(threads)
    _check_step(step)
    cdef double bias_correction1 = 1.0 - beta1 ** step
    cdef double bias_correction2 = 1.0 - beta2 ** step
    cdef adam_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = 0.0 if decoupled else weight_decay
    s.decoupled = decoupled
    s.param_decay = 1.0 - lr * weight_decay if decoupled else 1.0
    s.beta1 = beta1
    s.one_minus_beta1 = 1.0 - beta1
    s.beta2 = beta2
    s.one_minus_beta2 = 1.0 - beta2
    s.step_size = lr / bias_correction1
    s.rsqrt_bc2 = 1.0 / sqrt(bias_correction2)
    s.inv_bc2 = 1.0 / bias_correction2
    s.eps = eps
    s.eps_root = eps_root
    _run(c_adam_step, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), ADAM_NAMES, &s, nt)
    return 0


def ewma_step(average, value, *, double beta, threads=None):
    """v <- beta*v + (1-beta)*x.  See fastoptim.reference.ewma_step."""
    cdef int nt = _threads(threads)
    cdef ewma_scalars s
    s.beta = beta
    s.one_minus_beta = 1.0 - beta
    _run(c_ewma_step, (average, value), EWMA_NAMES, &s, nt)


def ewma_scan(average, series, mean=None, weight=None, count=None, *, beta, alpha=None,
              adjust=True, bias_correction=True, ignore_na=False, min_periods=1, decay=None,
              float32_arithmetic=False, axis=0, threads=None):
    """The EWMA of series along axis, into average (pandas' ewm().mean() rules), optionally
    from and into a running state.  See fastoptim.reference_ewma.ewma_scan."""
    plan = prepare_scan(average, series, mean, weight, count, beta=beta, alpha=alpha,
                        adjust=adjust, bias_correction=bias_correction, ignore_na=ignore_na,
                        min_periods=min_periods, decay=decay,
                        float32_arithmetic=float32_arithmetic, axis=axis, threads=threads)
    cdef int nt = _threads(threads)
    cdef int dt = FO_FLOAT64 if cnp.PyArray_TYPE(<cnp.ndarray>series) == cnp.NPY_FLOAT64 \
        else FO_FLOAT32
    cdef ewma_scan_scalars s
    s.beta = plan.beta
    s.alpha = plan.alpha
    s.decay = NULL
    if plan.decay is not None:
        s.decay = <const double *>_data(plan.decay)
    s.min_periods = plan.min_periods
    s.adjust = adjust
    s.bias_correction = bias_correction
    s.ignore_na = ignore_na
    s.complement_weight = plan.complement_weight
    s.float32_arithmetic = float32_arithmetic
    cdef void *m = NULL if mean is None else _data(mean)
    cdef void *w = NULL if weight is None else _data(weight)
    cdef int64_t *n = NULL if count is None else <int64_t *>_data(count)
    cdef void *a = _data(average)
    cdef const void *x = _data(series)
    cdef int64_t outer = plan.outer, length = plan.length, inner = plan.inner
    with nogil:
        c_ewma_scan[dt](a, x, m, w, n, outer, length, inner, &s, nt)


cdef inline void *_data(object array) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>array)


cdef tuple MOVEMENT_NAMES = ("updated[0]", "read_only[0]", "updated[1]", "updated[2]",
                             "updated[3]")


def movement_loop(updated, read_only, threads=None):
    """u <- u + r for every array u of ``updated``, r the one array of ``read_only``.

    The memory traffic of a one-pass kernel over the same buffers (each read once, each
    updated one written once) with next to no arithmetic: the speed limit the benchmark
    measures kernels against. Adam's is movement_loop((param, exp_avg, exp_avg_sq), (grad,)),
    7 values per element. Buffers are checked as the kernels check theirs.
    """
    cdef void *d[MAX_BUFFERS]
    cdef void *u[MAX_BUFFERS]
    cdef int64_t n
    cdef Py_ssize_t j, k
    if cnp.PyArray_Check(updated) or cnp.PyArray_Check(read_only):
        raise TypeError("updated and read_only must be sequences of arrays, e.g. (param,)")
    updated = tuple(updated)
    read_only = tuple(read_only)
    k = len(updated)
    if not 1 <= k <= FO_MOVEMENT_MAX_UPDATED:
        raise ValueError(f"updated must hold 1 to {FO_MOVEMENT_MAX_UPDATED} arrays, got {k}")
    if len(read_only) != 1:
        raise ValueError(f"read_only must hold exactly 1 array, got {len(read_only)}")
    for j in range(k):
        if updated[j] is None:
            raise TypeError(f"updated[{j}] must be a numpy.ndarray, got NoneType")
    cdef int dt = _prepare((updated[0], read_only[0]) + updated[1:], MOVEMENT_NAMES[:k + 1],
                           d, &n)
    cdef int nt = _threads(threads)
    u[0] = d[0]
    for j in range(1, k):
        u[j] = d[j + 1]
    with nogil:
        c_movement_loop[dt](u, <int>k, d[1], n, nt)


def build_info():
    """How this extension was built and what it selects on this CPU."""
    return {
        "openmp": bool(fo_has_openmp()),
        "max_threads": fo_max_threads(),
        "parallel_threshold": fo_parallel_threshold(),
        "simd_target": fo_simd_target().decode(),
    }


def set_parallel_threshold(int64_t n):
    """Elements per thread below which a call stays on the calling thread."""
    fo_set_parallel_threshold(n)
