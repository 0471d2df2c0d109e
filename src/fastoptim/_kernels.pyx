# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled backend: the C loops of csrc/, behind the signatures of fastoptim.reference.

Design: a kernel call does O(1) work in Python terms. The buffers get a fast check here
(type, dtype, shape, flags, overlap by address range); only when that check fails does
fastoptim._checks run, to raise the precise error -- so the rules and the messages live
in one place, shared with the NumPy reference. The per-step scalars are computed here in
C double with the same expressions the reference evaluates in Python float, then the
loop runs with the GIL released.
"""
from libc.math cimport sqrt
from libc.stdint cimport int64_t

cimport numpy as cnp

from fastoptim._checks import (
    check_buffers,
    check_momentum_form,
    check_rmsprop_momentum,
    check_step,
    check_threads,
)

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

    ctypedef void sgd_kernel(void *, const void *, int64_t, const sgd_scalars *, int)
    ctypedef void momentum_kernel(void *, const void *, void *, int64_t,
                                  const momentum_scalars *, int)
    ctypedef void adagrad_kernel(void *, const void *, void *, int64_t,
                                 const adagrad_scalars *, int)
    ctypedef void rmsprop_kernel(void *, const void *, void *, void *, void *, int64_t,
                                 const rmsprop_scalars *, int)
    ctypedef void adam_kernel(void *, const void *, void *, void *, void *, int64_t,
                              const adam_scalars *, int)
    ctypedef void ewma_kernel(void *, const void *, int64_t, const ewma_scalars *, int)

    sgd_kernel *c_sgd_step "sgd_step"[2]
    momentum_kernel *c_momentum_step "momentum_step"[2]
    adagrad_kernel *c_adagrad_step "adagrad_step"[2]
    rmsprop_kernel *c_rmsprop_step "rmsprop_step"[2]
    adam_kernel *c_adam_step "adam_step"[2]
    ewma_kernel *c_ewma_step "ewma_step"[2]

    int fo_max_threads()
    int fo_has_openmp()
    int64_t fo_parallel_threshold()
    void fo_set_parallel_threshold(int64_t n)
    const char *fo_simd_target()

__all__ = [
    "sgd_step",
    "momentum_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "ewma_step",
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
    entry is None) and n; return FO_FLOAT32 or FO_FLOAT64."""
    cdef Py_ssize_t i, j, k = len(arrays)
    cdef cnp.ndarray a, first
    cdef char *start[MAX_BUFFERS]
    cdef char *end[MAX_BUFFERS]
    cdef int typenum, need
    obj = arrays[0]
    if not cnp.PyArray_Check(obj):
        return _raise_buffer_error(arrays, names)
    first = <cnp.ndarray>obj
    typenum = cnp.PyArray_TYPE(first)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return _raise_buffer_error(arrays, names)
    for i in range(k):
        obj = arrays[i]
        if obj is None and i >= 2:
            data[i] = NULL
            start[i] = end[i] = NULL
            continue
        if not cnp.PyArray_Check(obj):
            return _raise_buffer_error(arrays, names)
        a = <cnp.ndarray>obj
        need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        if i != 1:
            need |= cnp.NPY_ARRAY_WRITEABLE
        if (cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a)
                or (cnp.PyArray_FLAGS(a) & need) != need or not _same_shape(a, first)):
            return _raise_buffer_error(arrays, names)
        data[i] = cnp.PyArray_DATA(a)
        start[i] = <char *>data[i]
        end[i] = start[i] + cnp.PyArray_NBYTES(a)
    # every pair includes a written buffer (only arrays[1] is read): none may overlap
    for i in range(k):
        for j in range(i + 1, k):
            if start[i] < end[j] and start[j] < end[i]:
                return _raise_buffer_error(arrays, names)
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


cdef inline int _threads(object threads) except -1:
    if threads is None:
        return 0
    return check_threads(threads)


cdef inline int _check_step(int64_t step) except -1:
    if step < 1:
        check_step(step)
    return 0


def sgd_step(param, grad, *, double lr, double weight_decay=0.0, bint maximize=False,
             threads=None):
    """p <- p - lr * g.  See fastoptim.reference.sgd_step."""
    cdef void *d[2]
    cdef int64_t n
    cdef int dt = _prepare((param, grad), SGD_NAMES, d, &n)
    cdef int nt = _threads(threads)
    cdef sgd_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.lr = lr
    with nogil:
        c_sgd_step[dt](d[0], d[1], n, &s, nt)


def momentum_step(param, grad, momentum_buffer, *, double lr, double momentum, int64_t step,
                  double dampening=0.0, bint nesterov=False, str form="torch",
                  bint bias_correction=False, double weight_decay=0.0, bint maximize=False,
                  threads=None):
    """Momentum in the torch, ewma or velocity form.  See fastoptim.reference.momentum_step."""
    cdef void *d[3]
    cdef int64_t n
    cdef int dt = _prepare((param, grad, momentum_buffer), MOMENTUM_NAMES, d, &n)
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
    with nogil:
        c_momentum_step[dt](d[0], d[1], d[2], n, &s, nt)


def adagrad_step(param, grad, state_sum, *, double lr, int64_t step, double lr_decay=0.0,
                 double eps=1e-10, double weight_decay=0.0, bint maximize=False,
                 threads=None):
    """AdaGrad (torch.optim.Adagrad).  See fastoptim.reference.adagrad_step."""
    cdef void *d[3]
    cdef int64_t n
    cdef int dt = _prepare((param, grad, state_sum), ADAGRAD_NAMES, d, &n)
    cdef int nt = _threads(threads)
    _check_step(step)
    cdef adagrad_scalars s
    s.g.maximize = maximize
    s.g.weight_decay = weight_decay
    s.clr = lr / (1.0 + (step - 1) * lr_decay)
    s.eps = eps
    with nogil:
        c_adagrad_step[dt](d[0], d[1], d[2], n, &s, nt)


def rmsprop_step(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, double lr,
                 double alpha=0.99, double eps=1e-8, double momentum=0.0,
                 double weight_decay=0.0, bint maximize=False, threads=None):
    """RMSProp (torch.optim.RMSprop); centered when grad_avg is given.
    See fastoptim.reference.rmsprop_step."""
    cdef void *d[5]
    cdef int64_t n
    cdef int dt = _prepare((param, grad, square_avg, grad_avg, momentum_buffer),
                           RMSPROP_NAMES, d, &n)
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
    with nogil:
        c_rmsprop_step[dt](d[0], d[1], d[2], d[3], d[4], n, &s, nt)


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
    cdef void *d[5]
    cdef int64_t n
    cdef int dt = _prepare((param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
                           ADAM_NAMES, d, &n)
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
    with nogil:
        c_adam_step[dt](d[0], d[1], d[2], d[3], d[4], n, &s, nt)
    return 0


def ewma_step(average, value, *, double beta, threads=None):
    """v <- beta*v + (1-beta)*x.  See fastoptim.reference.ewma_step."""
    cdef void *d[2]
    cdef int64_t n
    cdef int dt = _prepare((average, value), EWMA_NAMES, d, &n)
    cdef int nt = _threads(threads)
    cdef ewma_scalars s
    s.beta = beta
    s.one_minus_beta = 1.0 - beta
    with nogil:
        c_ewma_step[dt](d[0], d[1], n, &s, nt)


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
