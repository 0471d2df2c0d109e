# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled backend's runner: one kernel of csrc/ over one array or a list of arrays.

Design: a call does O(1) work per array in Python terms. The buffers get a fast check here
(exact ndarray type, dtype, shape, flags, overlap by a sort of byte ranges); only when that
check fails does fastoptim._checks.check_call run, to raise the precise error (the rules
and messages live there, shared with the NumPy reference) or to hand back plain views of
ndarray subclasses. The scalars arrive computed (fastoptim._kernel_specs); the loop runs
with the GIL released. Nothing is written before every check has passed.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memset

cimport numpy as cnp

import numpy as np

from fastoptim._checks import BFLOAT16, check_call, check_shaped_call, check_threads
from fastoptim.reference_ewma import prepare_scan

cnp.import_array()

cdef extern from "fastoptim.h" nogil:
    enum:
        FO_FLOAT32
        FO_FLOAT64
        FO_BFLOAT16
        FO_FLOAT16
        FO_MAX_ROLES
        FO_MAX_SCALARS
        FO_MAX_SUMS

    ctypedef struct fo_kernel:
        const char *name
        const char *roles
        const char *scalars
        int nroles, nscalars, nsums

    const fo_kernel fo_kernels[]
    const int fo_kernel_count

    ctypedef struct fo_rounding:
        int stochastic
        uint64_t seed
        int64_t step

    ctypedef struct fo_call:
        const fo_kernel *kernel
        int64_t count
        void *const *data
        const int *dtype
        const int64_t *n
        const double *scalars
        int per_array
        fo_rounding rounding
        int64_t first_index
        double *sums
        int writes
        int threads

    int fo_run(const fo_call *call)

    ctypedef struct fo_adafactor_call:
        int64_t count
        void *const *data
        const int *dtype
        const int64_t *shape
        const double *scalars
        int per_array
        fo_rounding rounding
        int64_t first_index
        double *sums
        double *factor_sums
        int writes
        int threads

    int fo_adafactor(const fo_adafactor_call *call)
    const fo_kernel fo_adafactor_kernel

    ctypedef struct ewma_scan_scalars:
        double beta, alpha
        const double *decay
        int64_t min_periods
        int adjust, bias_correction, ignore_na, complement_weight, float32_arithmetic
    ctypedef void ewma_scan_kernel(void *, const void *, void *, void *, int64_t *, int64_t,
                                   int64_t, int64_t, const ewma_scan_scalars *, int)
    ewma_scan_kernel *c_ewma_scan "ewma_scan"[2]

    void fo_movement(void *const *updated, const int *size, int count, const void *read_only,
                     int read_size, int64_t n, int threads)
    int fo_max_threads()
    int fo_hardware_threads()
    int fo_pool_workers()
    void fo_pool_init()
    int fo_pool_share_openmp()
    int fo_pool_shares_openmp()
    int64_t fo_parallel_threshold()
    void fo_set_parallel_threshold(int64_t n)
    const char *fo_simd_target()
    int fo_bfloat16_instruction()
    void fo_widen(const void *x, int dtype, float *out, int64_t n)
    void fo_narrow(const float *x, void *out, int dtype, int64_t n, const fo_rounding *r,
                   uint64_t key, int64_t first)
    uint64_t fo_rounding_key(const fo_rounding *r, int64_t array, int role)


cdef int BFLOAT16_NUM = BFLOAT16.num if BFLOAT16 is not None else -1
fo_pool_init()

# the registry: name -> (index, role names, scalar names, sums)
REGISTRY = {}
for _i in range(fo_kernel_count):
    REGISTRY[fo_kernels[_i].name.decode()] = (
        _i, tuple(fo_kernels[_i].roles.decode().split()),
        tuple(fo_kernels[_i].scalars.decode().split()), fo_kernels[_i].nsums)
# Adafactor has its own driver (run_factored), not an index into fo_kernels
REGISTRY[fo_adafactor_kernel.name.decode()] = (
    -1, tuple(fo_adafactor_kernel.roles.decode().split()),
    tuple(fo_adafactor_kernel.scalars.decode().split()), fo_adafactor_kernel.nsums)


cdef inline int _dtype_code(int typenum) noexcept:
    if typenum == cnp.NPY_FLOAT32:
        return FO_FLOAT32
    if typenum == cnp.NPY_FLOAT64:
        return FO_FLOAT64
    if typenum == cnp.NPY_FLOAT16:
        return FO_FLOAT16
    if typenum == BFLOAT16_NUM:
        return FO_BFLOAT16
    return -1


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int d, nd = cnp.PyArray_NDIM(a)
    if nd != cnp.PyArray_NDIM(b):
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef struct _span:
    char *start
    char *end
    int written


cdef int _by_start(const void *a, const void *b) noexcept nogil:
    cdef char *x = (<const _span *>a).start
    cdef char *y = (<const _span *>b).start
    return (x > y) - (x < y)


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


cdef int _check_array(PyObject **objects, int roles, unsigned required, bint writes,
                      void **data, int *dtype, int64_t *n, _span *spans, Py_ssize_t *nspans):
    """One array's buffers (borrowed references; the last one is the param copy): fill
    data, dtype and n, append their byte ranges; -1 when anything is off (then
    check_call says what). Bit r of ``required`` set: role r may not be None."""
    cdef cnp.ndarray a, param
    cdef int r, code, need, param_code = -1
    cdef object obj
    for r in range(roles):
        obj = <object>objects[r]
        if obj is None:
            if required & (1u << r):
                return -1
            data[r] = NULL
            dtype[r] = -1
            continue
        if type(obj) is not np.ndarray:
            return -1
        a = <cnp.ndarray>obj
        code = _dtype_code(cnp.PyArray_TYPE(a))
        if code < 0 or not cnp.PyArray_ISNOTSWAPPED(a):
            return -1
        need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        if (writes and r != 1) or r == roles - 1:
            need |= cnp.NPY_ARRAY_WRITEABLE
        if (cnp.PyArray_FLAGS(a) & need) != need:
            return -1
        if r == 0:
            param = a
            param_code = code
            n[0] = cnp.PyArray_SIZE(a)
        else:
            if not _same_shape(a, param):
                return -1
            if param_code == FO_FLOAT64:
                if code != FO_FLOAT64 or r == roles - 1:
                    return -1
            elif code == FO_FLOAT64 or (r == roles - 1 and (code == FO_FLOAT32
                                                            or param_code != FO_FLOAT32)):
                return -1
        data[r] = cnp.PyArray_DATA(a)
        dtype[r] = code
        if n[0] > 0:
            spans[nspans[0]].start = <char *>data[r]
            spans[nspans[0]].end = <char *>data[r] + cnp.PyArray_NBYTES(a)
            spans[nspans[0]].written = (writes and r != 1) or r == roles - 1
            nspans[0] += 1
    if data[0] == NULL:
        return -1
    return 0


cdef int _fill_scalars(name, scalars, bint per_array, Py_ssize_t count, Py_ssize_t nscalars,
                       double *out) except -1:
    """Copy one NamedTuple of scalars (or, per_array, one per array) into ``out``."""
    cdef Py_ssize_t i, k
    for i in range(count if per_array else 1):
        values = scalars[i] if per_array else scalars
        if len(values) != nscalars:
            raise ValueError(f"{name} takes {nscalars} scalars, got {len(values)}")
        for k in range(nscalars):
            out[i * nscalars + k] = values[k]
    return 0


cdef _launch(name, const fo_kernel *info, Py_ssize_t count, void *const *data,
             const int *dtype, const int64_t *n, scalars, int64_t step, bint stochastic,
             uint64_t seed, int64_t param_index, int threads, bint writes):
    """The scalars as doubles (one set, or one per array when ``scalars`` is a list), then
    the call, with the GIL released. Returns the sums of a reducing kernel, else None."""
    cdef bint per_array = type(scalars) is list
    cdef Py_ssize_t nscalars = info.nscalars, i, k
    cdef fo_call call
    cdef int status
    if per_array and len(scalars) != count:
        raise ValueError(f"{name}: {len(scalars)} scalar sets for {count} arrays")
    cdef double *scalar_data = <double *>PyMem_Malloc(
        ((count if per_array else 1) * nscalars + 1) * sizeof(double))
    if not scalar_data:
        raise MemoryError()
    try:
        _fill_scalars(name, scalars, per_array, count, nscalars, scalar_data)
        sums = np.zeros((count, info.nsums)) if info.nsums else None
        call.kernel = info
        call.count = count
        call.data = data
        call.dtype = dtype
        call.n = n
        call.scalars = scalar_data
        call.per_array = per_array
        call.rounding.stochastic = stochastic
        call.rounding.seed = seed
        call.rounding.step = step
        call.first_index = param_index
        call.sums = <double *>cnp.PyArray_DATA(sums) if sums is not None else NULL
        call.writes = writes
        call.threads = threads if threads > 0 else fo_max_threads()
        with nogil:
            status = fo_run(&call)
        if status < 0:
            raise MemoryError(f"{name}: no memory for the task list; nothing was written")
        return sums
    finally:
        PyMem_Free(scalar_data)


_REQUIRED_ROLES = {}     # kernel name -> bit r set when role r may not be None


cdef unsigned _required_roles(kernel):
    cdef unsigned mask
    cached = _REQUIRED_ROLES.get(kernel.name)
    if cached is None:
        mask = 0
        for r, role in enumerate(kernel.roles):
            if not role.optional:
                mask |= 1u << r
        _REQUIRED_ROLES[kernel.name] = cached = mask
    return cached


def run(kernel, tuple buffers, scalars, *, int64_t step=1, param_copy=None,
        bint stochastic=False, uint64_t seed=0, int64_t param_index=0, int threads=0,
        bint writes=True, factor_sums=None):
    """Run ``kernel`` (a fastoptim._kernel_specs.Kernel) over ``buffers`` (one entry per role:
    an array, a list of arrays, or None for an unused optional role) with ``scalars`` (one
    NamedTuple of doubles, or one per array). Returns the sums of a reducing kernel as a
    (count, sums) float64 array, else None. A kernel with a state_shape (Adafactor) goes to
    run_factored, with factor_sums."""
    cdef int index, roles, r, k
    cdef Py_ssize_t count, i, nspans = 0
    if kernel.state_shape is not None:     # its state is not of the param's shape
        return run_factored(kernel, buffers, scalars, factor_sums=factor_sums, step=step,
                            param_copy=param_copy, stochastic=stochastic, seed=seed,
                            param_index=param_index, threads=threads, writes=writes)
    cdef tuple entry = REGISTRY[kernel.name]
    index = entry[0]
    cdef const fo_kernel *info = &fo_kernels[index]
    roles = info.nroles + 1
    cdef unsigned required = _required_roles(kernel)
    if len(buffers) != info.nroles:
        raise TypeError(f"{kernel.name} takes {info.nroles} buffers, got {len(buffers)}")
    first = buffers[0]
    cdef bint many = type(first) is list or type(first) is tuple
    count = len(first) if many else 1
    cdef list columns = []      # tuples: the arrays stay alive while the loop runs
    cdef list views = None
    for r in range(roles):
        b = buffers[r] if r < info.nroles else param_copy
        if many and b is not None:
            if (type(b) is not list and type(b) is not tuple) or len(b) != count:
                views = check_call(kernel.roles, buffers, param_copy, writes)
                break
            columns.append(tuple(b))
        else:
            columns.append(b)

    cdef void **data = <void **>PyMem_Malloc(count * roles * sizeof(void *))
    cdef int *dtype = <int *>PyMem_Malloc(count * roles * sizeof(int))
    cdef int64_t *n = <int64_t *>PyMem_Malloc(count * sizeof(int64_t))
    cdef _span *spans = <_span *>PyMem_Malloc(count * roles * sizeof(_span))
    cdef PyObject *objects[FO_MAX_ROLES + 1]
    sums = None
    try:
        if not (data and dtype and n and spans):
            raise MemoryError()
        if views is None:
            for i in range(count):
                for r in range(roles):
                    column = columns[r]
                    objects[r] = (<PyObject *>column if not many or column is None
                                  else <PyObject *>(<tuple>column)[i])
                if _check_array(objects, roles, required, writes, data + i * roles,
                                dtype + i * roles, n + i, spans, &nspans) < 0:
                    views = check_call(kernel.roles, buffers, param_copy, writes)
                    break
            if views is None and _any_written_overlap(spans, nspans):
                views = check_call(kernel.roles, buffers, param_copy, writes)
        if views is not None:   # check_call accepted them: plain views of subclasses
            nspans = 0
            for i in range(count):
                for r in range(roles):
                    objects[r] = <PyObject *>views[i][r]
                if _check_array(objects, roles, required, writes, data + i * roles,
                                dtype + i * roles, n + i, spans, &nspans) < 0:
                    raise AssertionError("fastoptim: the fast buffer check refused what "
                                         "_checks accepts")
        sums = _launch(kernel.name, info, count, <void *const *>data, dtype, n, scalars,
                       step, stochastic, seed, param_index, threads, writes)
    finally:
        PyMem_Free(data)
        PyMem_Free(dtype)
        PyMem_Free(n)
        PyMem_Free(spans)
    return sums


def run_table(kernel, const int64_t[:, ::1] data, const int[:, ::1] dtype,
              const int64_t[::1] n, scalars, *, int64_t step=1, param_copy=None,
              bint stochastic=False, uint64_t seed=0, int64_t param_index=0, int threads=0,
              bint writes=True):
    """``run`` for a caller that has checked its buffers itself -- fastoptim.torch's plans,
    which hold the tensors alive and check dtypes, layouts and overlaps: one row per array
    of data addresses (0: unused), fastoptim.h dtype codes and element counts, in role
    order with the param copy last. ``param_copy`` is ignored (the table's last column)."""
    cdef int index = REGISTRY[kernel.name][0]
    if index < 0:
        raise TypeError(f"{kernel.name} runs through run_factored, not from a table")
    cdef const fo_kernel *info = &fo_kernels[index]
    cdef int roles = info.nroles + 1
    cdef Py_ssize_t count = data.shape[0]
    if data.shape[1] != roles or dtype.shape[0] != count or dtype.shape[1] != roles \
            or n.shape[0] != count:
        raise ValueError(f"{kernel.name}: the table must have {roles} columns and one row per "
                         "array in data, dtype and n")
    if count == 0:
        return np.zeros((0, info.nsums)) if info.nsums else None
    return _launch(kernel.name, info, count, <void *const *>&data[0, 0], &dtype[0, 0], &n[0],
                   scalars, step, stochastic, seed, param_index, threads, writes)


cdef bint _factored_shape(cnp.ndarray a, cnp.ndarray param, int role) noexcept:
    """a has the shape Adafactor's role needs next to param (fastoptim._kernel_specs.
    adafactor_state_shape): row_var (..., rows, 1), col_var (..., 1, cols), the others the
    param's own."""
    cdef int d, nd = cnp.PyArray_NDIM(param)
    if cnp.PyArray_NDIM(a) != nd:
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) != (1 if (role == 2 and d == nd - 1) or (role == 3 and d == nd - 2)
                                     else cnp.PyArray_DIM(param, d)):
            return False
    return True


cdef int _check_factored(PyObject **objects, bint writes, void **data, int *dtype,
                         int64_t *shape, _span *spans, Py_ssize_t *nspans):
    """One array's six buffers (param, grad, row_var, col_var, variance, param copy) in
    Adafactor's layout: fill data, dtype and shape (batch, rows, cols), append the byte
    ranges; -1 when anything is off (check_shaped_call then says what)."""
    cdef cnp.ndarray a, param = None
    cdef int r, d, nd = 0, code, need, param_code = -1
    cdef bint factored = False, written
    cdef object obj
    for r in range(6):
        obj = <object>objects[r]
        # row_var and col_var for a param of 2+ dimensions, variance for another
        if 2 <= r <= 4 and (obj is None) != ((r == 4) == factored):
            return -1
        if obj is None:
            if r < 2:
                return -1
            data[r] = NULL
            dtype[r] = -1
            continue
        if type(obj) is not np.ndarray:
            return -1
        a = <cnp.ndarray>obj
        code = _dtype_code(cnp.PyArray_TYPE(a))
        written = (writes and r != 1) or r == 5
        need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        if written:
            need |= cnp.NPY_ARRAY_WRITEABLE
        if code < 0 or not cnp.PyArray_ISNOTSWAPPED(a) or (cnp.PyArray_FLAGS(a) & need) != need:
            return -1
        if r == 0:
            param = a
            param_code = code
            nd = cnp.PyArray_NDIM(a)
            factored = nd >= 2
        elif not _factored_shape(a, param, r):
            return -1
        elif param_code == FO_FLOAT64:
            if code != FO_FLOAT64 or r == 5:
                return -1
        elif code == FO_FLOAT64 or (r == 5 and code == FO_FLOAT32):
            return -1
        data[r] = cnp.PyArray_DATA(a)
        dtype[r] = code
        if cnp.PyArray_SIZE(a) > 0:
            spans[nspans[0]].start = <char *>data[r]
            spans[nspans[0]].end = <char *>data[r] + cnp.PyArray_NBYTES(a)
            spans[nspans[0]].written = written
            nspans[0] += 1
    shape[0], shape[1], shape[2] = 1, 1, cnp.PyArray_SIZE(param)
    if factored:
        for d in range(nd - 2):
            shape[0] *= cnp.PyArray_DIM(param, d)
        shape[1] = cnp.PyArray_DIM(param, nd - 2)
        shape[2] = cnp.PyArray_DIM(param, nd - 1)
    return 0


def run_factored(kernel, tuple buffers, scalars, *, factor_sums=None, int64_t step=1,
                 param_copy=None, bint stochastic=False, uint64_t seed=0,
                 int64_t param_index=0, int threads=0, bint writes=True):
    """Adafactor's runner (csrc/adafactor.c; ``run`` hands it a kernel whose state is not of
    the param's shape). writes=False measures: returns (sums, factor_sums), per array the
    sums of p*p and u*u and, per factored array, the row then column sums of g*g.
    writes=True applies, from the factor_sums the measure returned; ``scalars`` then holds
    one set per array (the step sizes). See fastoptim.reference.run_factored. The buffers
    get the fast check of ``run``; check_shaped_call explains a refusal."""
    cdef Py_ssize_t count, i, r, k, nspans = 0
    cdef Py_ssize_t nscalars = fo_adafactor_kernel.nscalars
    cdef bint per_array = type(scalars) is list
    first = buffers[0]
    cdef bint many = type(first) is list or type(first) is tuple
    count = len(first) if many else 1
    cdef list columns = []      # tuples: the arrays stay alive while the loop runs
    cdef object views = None
    for r in range(6):
        b = buffers[r] if r < 5 else param_copy
        if many and b is not None:
            if (type(b) is not list and type(b) is not tuple) or len(b) != count:
                views = check_shaped_call(kernel.roles, kernel.state_shape, buffers,
                                          param_copy, writes)
                break
            columns.append(tuple(b))
        else:
            columns.append(b)
    if per_array and len(scalars) != count:
        raise ValueError(f"{kernel.name}: {len(scalars)} scalar sets for {count} arrays")
    cdef void **data = <void **>PyMem_Malloc((count * 6 + 1) * sizeof(void *))
    cdef int *dtype = <int *>PyMem_Malloc((count * 6 + 1) * sizeof(int))
    cdef int64_t *shape = <int64_t *>PyMem_Malloc((count * 3 + 1) * sizeof(int64_t))
    cdef _span *spans = <_span *>PyMem_Malloc((count * 6 + 1) * sizeof(_span))
    cdef double *scalar_data = <double *>PyMem_Malloc(
        ((count if per_array else 1) * nscalars + 1) * sizeof(double))
    cdef PyObject *objects[6]
    cdef fo_adafactor_call call
    cdef int status
    cdef int64_t needed = 0
    try:
        if not (data and dtype and shape and spans and scalar_data):
            raise MemoryError()
        if views is None:
            for i in range(count):
                for r in range(6):
                    column = columns[r]
                    objects[r] = (<PyObject *>column if not many or column is None
                                  else <PyObject *>(<tuple>column)[i])
                if _check_factored(objects, writes, data + i * 6, dtype + i * 6, shape + i * 3,
                                   spans, &nspans) < 0:
                    views = check_shaped_call(kernel.roles, kernel.state_shape, buffers,
                                              param_copy, writes)
                    break
            if views is None and _any_written_overlap(spans, nspans):
                views = check_shaped_call(kernel.roles, kernel.state_shape, buffers, param_copy,
                                          writes)
        if views is not None:   # check_shaped_call accepted them: plain views of subclasses
            nspans = 0
            for i in range(count):
                for r in range(6):
                    objects[r] = <PyObject *>views[i][r]
                if _check_factored(objects, writes, data + i * 6, dtype + i * 6, shape + i * 3,
                                   spans, &nspans) < 0:
                    raise AssertionError("fastoptim: the fast buffer check refused what "
                                         "_checks accepts")
        for i in range(count):
            if data[i * 6 + 2] != NULL:
                needed += shape[i * 3] * (shape[i * 3 + 1] + shape[i * 3 + 2])
        if writes:
            if (type(factor_sums) is not np.ndarray or factor_sums.dtype != np.float64
                    or factor_sums.shape != (needed,) or not factor_sums.flags.c_contiguous):
                raise ValueError(f"factor_sums must be the float64 array of {needed} sums the "
                                 "measuring call (writes=False) returned")
        else:
            factor_sums = np.zeros(needed)
        _fill_scalars(kernel.name, scalars, per_array, count, nscalars, scalar_data)
        sums = np.zeros((count, 2))
        call.count = count
        call.data = data
        call.dtype = dtype
        call.shape = shape
        call.scalars = scalar_data
        call.per_array = per_array
        call.rounding.stochastic = stochastic
        call.rounding.seed = seed
        call.rounding.step = step
        call.first_index = param_index
        call.sums = <double *>cnp.PyArray_DATA(sums)
        call.factor_sums = <double *>cnp.PyArray_DATA(factor_sums)
        call.writes = writes
        call.threads = threads if threads > 0 else fo_max_threads()
        with nogil:
            status = fo_adafactor(&call)
        if status < 0:
            raise MemoryError(f"{kernel.name}: no memory for its work; nothing was written")
    finally:
        PyMem_Free(data)
        PyMem_Free(dtype)
        PyMem_Free(shape)
        PyMem_Free(spans)
        PyMem_Free(scalar_data)
    return None if writes else (sums, factor_sums)


DTYPE_CODES = {np.dtype(np.float32): FO_FLOAT32, np.dtype(np.float64): FO_FLOAT64,
               np.dtype(np.float16): FO_FLOAT16}
if BFLOAT16 is not None:
    DTYPE_CODES[BFLOAT16] = FO_BFLOAT16


def narrow(cnp.ndarray x, cnp.ndarray out, *, bint stochastic=False, uint64_t seed=0,
           int64_t step=1, int64_t array=0, int role=0):
    """float32 x rounded into out (bfloat16 or float16) with the C conversion, as a kernel
    stores role ``role`` of array ``array``: for the tests of the rounding rules."""
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous float32 array")
    cdef int code = _dtype_code(cnp.PyArray_TYPE(out))
    if code not in (FO_BFLOAT16, FO_FLOAT16) or out.size != x.size or not out.flags.c_contiguous:
        raise TypeError("out must be a C-contiguous bfloat16/float16 array of x's size")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    cdef fo_rounding r
    r.stochastic = stochastic
    r.seed = seed
    r.step = step
    cdef uint64_t key = fo_rounding_key(&r, array, role)
    fo_narrow(<const float *>cnp.PyArray_DATA(x), cnp.PyArray_DATA(out), code, x.size, &r,
              key, 0)


def widen(cnp.ndarray x, cnp.ndarray out):
    """bfloat16/float16 x widened into float32 out with the C conversion, as a kernel
    reads a low-precision buffer: for the tests of the conversions."""
    cdef int code = _dtype_code(cnp.PyArray_TYPE(x))
    if code not in (FO_BFLOAT16, FO_FLOAT16) or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous bfloat16/float16 array")
    if out.dtype != np.float32 or out.size != x.size or not out.flags.c_contiguous:
        raise TypeError("out must be a C-contiguous float32 array of x's size")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    fo_widen(cnp.PyArray_DATA(x), code, <float *>cnp.PyArray_DATA(out), x.size)


def ewma_scan(average, series, mean=None, weight=None, count=None, *, beta, alpha=None,
              adjust=True, bias_correction=True, ignore_na=False, min_periods=1, decay=None,
              float32_arithmetic=False, axis=0, threads=None):
    """The EWMA of series along axis, into average (pandas' ewm().mean() rules), optionally
    from and into a running state.  See fastoptim.reference_ewma.ewma_scan."""
    plan = prepare_scan(average, series, mean, weight, count, beta=beta, alpha=alpha,
                        adjust=adjust, bias_correction=bias_correction, ignore_na=ignore_na,
                        min_periods=min_periods, decay=decay,
                        float32_arithmetic=float32_arithmetic, axis=axis, threads=threads)
    cdef int nt = check_threads(threads) or fo_max_threads()
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


cdef bint _movement_buffer(object a, bint written, int64_t n, _span *span) noexcept:
    """A plain C-contiguous float array of n elements (writable if written): the fast check
    of movement_loop (check_call explains a refusal)."""
    if type(a) is not np.ndarray:
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a
    if (_dtype_code(cnp.PyArray_TYPE(x)) < 0 or not cnp.PyArray_IS_C_CONTIGUOUS(x)
            or not cnp.PyArray_ISNOTSWAPPED(x) or not cnp.PyArray_ISALIGNED(x)
            or (written and not cnp.PyArray_ISWRITEABLE(x)) or cnp.PyArray_SIZE(x) != n):
        return False
    span.start = <char *>cnp.PyArray_DATA(x)
    span.end = span.start + cnp.PyArray_NBYTES(x)
    span.written = written
    return True


def movement_loop(updated, read_only, threads=None):
    """u <- u + r (as integers of u's element size) for every array u of ``updated``, r the
    one array of ``read_only``: the memory traffic of a one-pass kernel over the same
    buffers (each read once, each updated one written once) with next to no arithmetic --
    the speed limit the benchmark measures kernels against. Adam's is
    movement_loop((param, exp_avg, exp_avg_sq), (grad,)); a norm's is movement_loop((),
    (grad,)), a read only. Buffers of any float dtype, one element count."""
    cdef void *u[4]
    cdef int size[4]
    cdef _span spans[5]
    cdef Py_ssize_t j, k
    if isinstance(updated, np.ndarray) or isinstance(read_only, np.ndarray):
        raise TypeError("updated and read_only must be sequences of arrays, e.g. (param,)")
    updated = tuple(updated)
    read_only = tuple(read_only)
    k = len(updated)
    if not 0 <= k <= 4:
        raise ValueError(f"updated must hold 0 to 4 arrays, got {k}")
    if len(read_only) != 1:
        raise ValueError(f"read_only must hold exactly 1 array, got {len(read_only)}")
    r = read_only[0]
    cdef int64_t n = r.size if type(r) is np.ndarray else -1
    cdef bint plain = _movement_buffer(r, False, n, &spans[k])
    for j in range(k):
        plain = plain and _movement_buffer(updated[j], True, n, &spans[j])
        # float64 goes with float64 only; float32, bfloat16 and float16 mix (as in kernels)
        plain = plain and ((<cnp.ndarray>updated[j]).itemsize == 8) == ((<cnp.ndarray>r).itemsize == 8)
    if not plain or _any_written_overlap(spans, k + 1):     # the checks that explain why
        from fastoptim._kernel_specs import Role
        if k == 0:
            check_call((Role("read_only[0]"),), (r,), writes=False)
        else:
            roles = tuple(Role(f"updated[{j}]") for j in range(k))
            arrays = check_call((roles[0], Role("read_only[0]")) + roles[1:],
                                (updated[0], r) + updated[1:])[0]
            if any(a.size != arrays[0].size for a in arrays[:k + 1]):
                raise ValueError("every buffer must have the same number of elements")
            # accepted: subclasses and the like, stepped as plain views
            return movement_loop(arrays[:1] + arrays[2:], arrays[1:2], threads)
        return movement_loop((), (np.asarray(r),), threads)
    for j in range(k):
        u[j] = cnp.PyArray_DATA(<cnp.ndarray>updated[j])
        size[j] = (<cnp.ndarray>updated[j]).itemsize
    cdef int nt = check_threads(threads) or fo_max_threads()
    cdef int read_size = (<cnp.ndarray>r).itemsize
    cdef const void *r_data = cnp.PyArray_DATA(<cnp.ndarray>r)
    with nogil:
        fo_movement(u, size, <int>k, r_data, read_size, n, nt)


def default_threads():
    """The team a call uses when threads=None: FASTOPTIM_NUM_THREADS, else OMP_NUM_THREADS,
    else every core this process may run on."""
    return fo_max_threads()


def build_info():
    """How this extension was built and what it selects on this CPU."""
    return {
        "threads": "pthreads pool" if fo_hardware_threads() >= 1 else "none",
        "max_threads": fo_max_threads(),
        "hardware_threads": fo_hardware_threads(),
        "pool_workers": fo_pool_workers(),
        "shared_openmp": bool(fo_pool_shares_openmp()),
        "parallel_threshold": fo_parallel_threshold(),
        "simd_target": fo_simd_target().decode(),
        "bfloat16_instruction": bool(fo_bfloat16_instruction()),
    }


def share_openmp_team():
    """Run threaded calls on the OpenMP team of the runtime torch loaded (fastoptim.torch
    calls this when imported): its workers spin after each of torch's parallel ops, and a
    pool of fastoptim's own would fight them for the cores. Not in a child forked later;
    never for a team larger than the runtime's own. Returns whether a runtime was found."""
    return bool(fo_pool_share_openmp())


def set_parallel_threshold(int64_t n):
    """Elements per thread below which a call stays on the calling thread."""
    fo_set_parallel_threshold(n)
