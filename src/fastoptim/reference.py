"""The NumPy backend: every kernel of fastoptim.kernels, name for name, in plain NumPy.

It is both the fallback when the extension is not built and the oracle the compiled
kernels are tested against, bit for bit. The kernel functions themselves (checks, per-step
scalars) are shared with the compiled backend (fastoptim._kernel_specs); what is here is
the runner and one loop per C loop, written to perform the same IEEE operations in the same
order:

- each scalar is rounded once to the compute dtype (float64 for float64 params, float32
  otherwise), as the C driver casts each double once (a NumPy scalar of the array's dtype
  keeps float32 arithmetic float32);
- bfloat16/float16 buffers are widened to float32 and every written one is rounded back
  once (fastoptim._rounding, the same rules and random bits as csrc/convert.c);
- reductions add in the C order: per block of 2048 elements, 16 interleaved lanes in
  float64 (a sequential cumsum per lane), lanes combined pairwise, blocks in index order.

A call computes every new value first and writes all of them at the end, with Ctrl-C held
back, so a failed or interrupted call changes nothing. ``threads`` is accepted and ignored.
"""
import numpy as np

from fastoptim import _bind, _interrupts, _rounding
from fastoptim._checks import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    FLOAT64,
    check_call,
    check_shaped_call,
)
from fastoptim._kernel_specs import ADAM_DENOMINATORS, MOMENTUM_FORMS, matrix_shape
from fastoptim.reference_ewma import ewma_scan  # noqa: F401  (the scan's spec: its own module)

__all__ = _bind.__all__ + ["ewma_scan"]

REDUCE_BLOCK, REDUCE_LANES = 2048, 16      # FO_REDUCE_BLOCK, FO_REDUCE_LANES in fastoptim.h


def run(kernel, buffers, scalars, *, step=1, param_copy=None, stochastic=False, seed=0,
        param_index=0, threads=0, writes=True, factor_sums=None):
    """The NumPy twin of fastoptim._kernels.run: same arguments, same results."""
    if kernel.state_shape is not None:     # its state is not of the param's shape
        return run_factored(kernel, buffers, scalars, factor_sums=factor_sums, step=step,
                            param_copy=param_copy, stochastic=stochastic, seed=seed,
                            param_index=param_index, threads=threads, writes=writes)
    groups = check_call(kernel.roles, buffers, param_copy, writes)
    loop = LOOPS[kernel.name]
    per_array = isinstance(scalars, list)
    if per_array and len(scalars) != len(groups):
        raise ValueError(f"{kernel.name}: {len(scalars)} scalar sets for {len(groups)} arrays")
    results, sums = [], []
    for i, group in enumerate(groups):
        compute = FLOAT64 if group[0].dtype == FLOAT64 else FLOAT32
        s = scalars[i] if per_array else scalars
        s = type(s)(*(compute.type(v) for v in s))
        work = [None if a is None else a.astype(compute) for a in group[:-1]]
        with np.errstate(all="ignore"):     # NaN and inf propagate silently, as in C
            sums.append(loop(s, *work))
        results.append(work)
    if writes:
        with _interrupts.deferred():
            for i, (group, work) in enumerate(zip(groups, results)):
                for role, (target, new) in enumerate(zip(group, work)):
                    if target is not None and role != 1:
                        _store(target, new, stochastic, seed, step, param_index + i, role)
                if group[-1] is not None:
                    _store(group[-1], work[0], stochastic, seed, step, param_index + i,
                           len(group) - 1)
    return np.array(sums, dtype=np.float64).reshape(len(groups), -1) if kernel.sums else None


def _store(target, new, stochastic, seed, step, array, role):
    if target.dtype == new.dtype:
        np.copyto(target, new)
        return
    key = _rounding.rounding_key(seed, step, array, role) if stochastic else 0
    np.copyto(target, _rounding.narrow(new, target.dtype, stochastic, key))


# -- the loops: each mirrors the C loop of the same name, operation for operation ---------------

def _prologue(s, param, grad):
    """csrc/loops/common.h: decoupled decay, gradient factor, maximize, L2 decay."""
    p = param * s.param_decay if s.param_decay != 1 else param
    g = grad * s.grad_factor if s.grad_factor != 1 else grad
    if s.maximize != 0:
        g = -g
    if s.weight_decay != 0:
        g = g + s.weight_decay * p
    return p, g


def sgd_loop(s, param, grad):
    p, g = _prologue(s, param, grad)
    param[...] = p - s.lr * g


def momentum_loop(s, param, grad, b):
    p, g = _prologue(s, param, grad)
    mu, w, step = s.momentum, s.grad_weight, s.step_size
    if s.form == MOMENTUM_FORMS["torch"]:
        b[...] = g if s.first_step != 0 else mu * b + w * g
        param[...] = p - step * (g + mu * b if s.nesterov != 0 else b)
    elif s.form == MOMENTUM_FORMS["ewma"]:
        b[...] = mu * b + w * g
        param[...] = p - step * (mu * b + w * g if s.nesterov != 0 else b)
    else:
        v0 = b.copy()
        b[...] = mu * v0 - w * g
        param[...] = p - mu * v0 + step * b if s.nesterov != 0 else p + b


def adagrad_loop(s, param, grad, state_sum):
    p, g = _prologue(s, param, grad)
    state_sum += g * g
    den = np.sqrt(state_sum + s.eps) if s.eps_in_sqrt != 0 else np.sqrt(state_sum) + s.eps
    param[...] = p - s.clr * g / den


def rmsprop_loop(s, param, grad, v, grad_avg, b):
    p, g = _prologue(s, param, grad)
    v[...] = s.alpha * v + s.one_minus_alpha * (g * g)
    d = v
    if grad_avg is not None:
        grad_avg[...] = s.alpha * grad_avg + s.one_minus_alpha * g
        d = v - grad_avg * grad_avg
    den = np.sqrt(d + s.eps) if s.eps_in_sqrt != 0 else np.sqrt(d) + s.eps
    if b is not None:
        b[...] = s.momentum * b + g / den
        param[...] = p - s.lr * b
    else:
        param[...] = p - s.lr * g / den


def adadelta_loop(s, param, grad, v, u):
    p, g = _prologue(s, param, grad)
    v[...] = s.rho * v + s.one_minus_rho * (g * g)
    delta = np.sqrt(u + s.eps) / np.sqrt(v + s.eps) * g
    u[...] = s.rho * u + s.one_minus_rho * (delta * delta)
    param[...] = p - s.lr * delta


def adam_loop(s, param, grad, m, v, vmax):
    p, g = _prologue(s, param, grad)
    m[...] = s.beta1 * m + s.one_minus_beta1 * g
    v[...] = s.beta2 * v + s.one_minus_beta2 * (g * g)
    vi = v
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
        vi = vmax
    if s.denominator == ADAM_DENOMINATORS["eps_root"]:
        den = np.sqrt(vi * s.inv_bc2 + s.eps_root) + s.eps
    elif s.denominator == ADAM_DENOMINATORS["eps_hat"]:
        den = np.sqrt(vi) + s.eps
    else:
        den = np.sqrt(vi) * s.rsqrt_bc2 + s.eps
    param[...] = p - s.step_size * m / den


def adamax_loop(s, param, grad, m, u):
    p, g = _prologue(s, param, grad)
    m[...] = s.beta1 * m + s.one_minus_beta1 * g
    u[...] = np.maximum(s.beta2 * u, np.abs(g) + s.eps)
    param[...] = p - s.step_size * m / u


def nadam_loop(s, param, grad, m, v):
    p, g = _prologue(s, param, grad)
    m[...] = s.beta1 * m + s.one_minus_beta1 * g
    v[...] = s.beta2 * v + s.one_minus_beta2 * (g * g)
    den = np.sqrt(v) * s.rsqrt_bc2 + s.eps
    param[...] = p - (s.grad_coef * g + s.avg_coef * m) / den


def radam_loop(s, param, grad, m, v):
    p, g = _prologue(s, param, grad)
    m[...] = s.beta1 * m + s.one_minus_beta1 * g
    v[...] = s.beta2 * v + s.one_minus_beta2 * (g * g)
    if s.rectified != 0:
        param[...] = p - s.step_size * m / (np.sqrt(v) + s.eps)
    else:
        param[...] = p - s.step_size * m


def lamb_pass_loop(s, param, grad, m, v):
    p, g = _prologue(s, param, grad)
    m_new = s.beta1 * m + s.one_minus_beta1 * g
    v_new = s.beta2 * v + s.one_minus_beta2 * (g * g)
    u = m_new * s.inv_bc1 / (np.sqrt(v_new) * s.rsqrt_bc2 + s.eps) + s.decay * p
    if s.apply != 0:
        m[...] = m_new
        v[...] = v_new
        param[...] = p - s.step_size * u
        return 0.0, 0.0
    return ordered_sum(_square(u)), ordered_sum(_square(p))


def lion_loop(s, param, grad, m):
    p, g = _prologue(s, param, grad)
    c = s.beta1 * m + s.one_minus_beta1 * g
    param[...] = p - s.lr * np.sign(c)
    m[...] = s.beta2 * m + s.one_minus_beta2 * g


def rprop_loop(s, param, grad, prev, step):
    p, g = _prologue(s, param, grad)
    product = g * prev
    one = product.dtype.type(1)
    factor = np.where(product > 0, s.eta_plus,
                      np.where(product < 0, s.eta_minus, np.where(product == 0, one, product)))
    size = step * factor
    size = np.where(size < s.step_size_min, s.step_size_min,
                    np.where(size > s.step_size_max, s.step_size_max, size))
    g = np.where(factor == s.eta_minus, product.dtype.type(0), g)
    step[...] = size
    prev[...] = g
    param[...] = p - np.sign(g) * size


def asgd_loop(s, param, grad, ax):
    p, g = _prologue(s, param, grad)
    p = p * s.shrink
    p = p - s.eta * g
    param[...] = p
    ax[...] = p if s.mu == 1 else ax + (p - ax) * s.mu


def schedulefree_adamw_loop(s, param, grad, z, v):
    p, g = _prologue(s, param, grad)
    v[...] = s.beta2 * v + s.one_minus_beta2 * (g * g)
    d = g / (np.sqrt(v * s.inv_bc2) + s.eps)
    if s.decay != 0:
        d = d + s.decay * p
    p = p + s.ckp1 * (z - p)
    param[...] = p + s.y_step * d
    z[...] = z - s.lr * d


def interpolate_loop(s, param, target):
    param[...] = param + s.weight * (target - param)


def ewma_loop(s, average, value):
    average[...] = s.beta * average + s.one_minus_beta * value


# -- reductions ---------------------------------------------------------------------------------

def _square(x):
    x = x.astype(np.float64).ravel()
    return x * x


def ordered_sum(terms):
    """The sum of float64 ``terms`` in the C order: blocks of REDUCE_BLOCK, lane k of a block
    adding elements k, k + 16, ... from 0 (a sequential cumsum), lanes combined pairwise,
    blocks added in index order."""
    terms = np.asarray(terms, dtype=np.float64).ravel()
    if terms.size == 0:
        return 0.0
    blocks = -(-terms.size // REDUCE_BLOCK)
    padded = np.zeros(blocks * REDUCE_BLOCK)
    padded[:terms.size] = terms
    lanes = np.cumsum(padded.reshape(blocks, REDUCE_BLOCK // REDUCE_LANES, REDUCE_LANES),
                      axis=1)[:, -1, :]
    while lanes.shape[1] > 1:
        lanes = lanes[:, 0::2] + lanes[:, 1::2]
    return float(np.cumsum(lanes[:, 0])[-1])


def _nonfinite(x):
    """0.0 when every element is finite, else NaN (the C sum of x*0)."""
    return 0.0 if np.isfinite(x).all() else float("nan")


def sum_squares_loop(s, x):
    return ordered_sum(_square(x)), _nonfinite(x)


def sum_abs_loop(s, x):
    return ordered_sum(np.abs(x.astype(np.float64).ravel())), _nonfinite(x)


def max_abs_loop(s, x):
    return (float(np.max(np.abs(x))) if x.size else 0.0), _nonfinite(x)


# -- Adafactor (csrc/adafactor.c): row and column factors, so its own runner ----------------------

ROW_BLOCK, ROW_BLOCKS = 32, 16      # FO_ADAFACTOR_ROW_BLOCK, FO_ADAFACTOR_ROW_BLOCKS
MACHINE_EPSILON = {FLOAT32: 2.0**-23, FLOAT64: 2.0**-52, FLOAT16: 2.0**-10, BFLOAT16: 2.0**-7}


def run_factored(kernel, buffers, scalars, *, factor_sums=None, step=1, param_copy=None,
                 stochastic=False, seed=0, param_index=0, threads=0, writes=True):
    """The NumPy twin of fastoptim._kernels.run_factored. writes=False measures: returns
    (sums, factor_sums), per array the sums of p*p and u*u, and per factored array the row
    then column sums of g*g. writes=True applies, from those factor_sums, with one set of
    scalars per array; every new value is computed before the first write."""
    groups = check_shaped_call(kernel.roles, kernel.state_shape, buffers, param_copy, writes)
    per_array = isinstance(scalars, list)
    if per_array and len(scalars) != len(groups):
        raise ValueError(f"{kernel.name}: {len(scalars)} scalar sets for {len(groups)} arrays")
    shapes = [matrix_shape(group[0].shape) for group in groups]
    needed = sum(b * (r + c) for (b, r, c), group in zip(shapes, groups) if group[2] is not None)
    if writes and not (isinstance(factor_sums, np.ndarray) and factor_sums.dtype == FLOAT64
                       and factor_sums.shape == (needed,)):
        raise ValueError(f"factor_sums must be the float64 array of {needed} sums the "
                         "measuring call (writes=False) returned")
    sums, measured, results, offset = [], [], [], 0
    for i, (group, (batch, rows, cols)) in enumerate(zip(groups, shapes)):
        param, grad, row_var, col_var, variance = group[:5]
        compute = FLOAT64 if param.dtype == FLOAT64 else FLOAT32
        s = kernel.scalars(*(scalars[i] if per_array else scalars))
        if s.machine_eps1 != 0:
            s = s._replace(eps1=MACHINE_EPSILON[param.dtype])
        s = kernel.scalars(*(compute.type(v) for v in s))
        count = batch * (rows + cols) if row_var is not None else 0
        own_sums = factor_sums[offset:offset + count] if writes else np.zeros(count)
        offset += count
        if param.size == 0:     # left as it is
            sums.append((0.0, 0.0))
            measured.append(own_sums)
            continue
        p = param.astype(compute).reshape(batch, rows, cols)
        g = grad.astype(compute).reshape(batch, rows, cols)
        with np.errstate(all="ignore"):     # NaN and inf propagate silently, as in C
            p_new, g = _prologue(s, p, g)
            factors = None
            if row_var is not None:
                if not writes:
                    squares = _square(g).reshape(batch, rows, cols)
                    own_sums[:] = np.concatenate([
                        ordered_row_sums(squares.reshape(-1, cols)),
                        column_sums(squares, max(ROW_BLOCK, -(-rows // ROW_BLOCKS))).ravel()])
                factors = adafactor_factors(s, row_var.astype(compute), col_var.astype(compute),
                                            own_sums, batch, rows, cols)
            u, v_new = adafactor_update(s, g, variance, factors)
            if not writes:
                sums.append((sum_of_rows(_square(p).reshape(-1, cols)),
                             sum_of_rows(_square(u).reshape(-1, cols))))
                measured.append(own_sums)
                continue
            p_new = p_new - s.step_size * u
        new = [p_new, None, None, None, v_new]
        if factors is not None:
            new[2], new[3] = factors[0], factors[1]
        results.append((i, group, new))
    if not writes:
        return np.array(sums, dtype=np.float64).reshape(len(groups), 2), np.concatenate(
            [np.zeros(0)] + measured)
    with _interrupts.deferred():
        for i, group, new in results:
            for role, values in enumerate(new):
                if values is not None:
                    _store(group[role], values.reshape(group[role].shape), stochastic, seed,
                           step, param_index + i, role)
            if group[-1] is not None:
                _store(group[-1], new[0].reshape(group[-1].shape), stochastic, seed, step,
                       param_index + i, len(group) - 1)
    return None


def adafactor_factors(s, row_var, col_var, factor_sums, batch, rows, cols):
    """loops/adafactor.h's adafactor_factors for every matrix: the new row and column
    variances (batch, rows, 1) and (batch, 1, cols), and the roots of the denominator."""
    row_sums = factor_sums[:batch * rows].reshape(batch, rows, 1)
    col_sums = factor_sums[batch * rows:].reshape(batch, 1, cols)
    compute = type(s.beta2)
    row_new = s.beta2 * row_var.reshape(batch, rows, 1) + s.one_minus_beta2 * (
        row_sums / cols).astype(compute)
    total = np.cumsum(row_new.astype(np.float64), axis=1)[:, -1:, :]   # in row order
    mean = np.maximum((total / rows).astype(compute), s.eps1)
    col_new = s.beta2 * col_var.reshape(batch, 1, cols) + s.one_minus_beta2 * (
        col_sums / rows).astype(compute)
    return row_new, col_new, np.sqrt(row_new), np.sqrt(col_new / mean)


def adafactor_update(s, g, variance, factors):
    """u = g / den (loops/adafactor.h's adafactor_body), and the new variance when the
    param is not factored."""
    if factors is not None:
        return g / np.maximum(factors[2] * factors[3], s.eps1), None
    v = s.beta2 * variance.astype(g.dtype).reshape(g.shape) + s.one_minus_beta2 * (g * g)
    return g / np.maximum(np.sqrt(v), s.eps1), v


def ordered_row_sums(terms):
    """Per row of the 2-D float64 ``terms``, its sum in the C order of a reduction (that of
    ordered_sum, row by row)."""
    rows, cols = terms.shape
    blocks = -(-cols // REDUCE_BLOCK)
    padded = np.zeros((rows, blocks * REDUCE_BLOCK))
    padded[:, :cols] = terms
    lanes = np.cumsum(padded.reshape(rows, blocks, REDUCE_BLOCK // REDUCE_LANES, REDUCE_LANES),
                      axis=2)[:, :, -1, :]
    while lanes.shape[2] > 1:
        lanes = lanes[:, :, 0::2] + lanes[:, :, 1::2]
    return np.cumsum(lanes[:, :, 0], axis=1)[:, -1]


def sum_of_rows(terms):
    """The sum of 2-D float64 ``terms``: each row's ordered sum, the rows added in order."""
    return float(np.cumsum(ordered_row_sums(terms))[-1])


def column_sums(terms, row_block):
    """Per matrix and column of the (batch, rows, cols) float64 ``terms``: within each block
    of ``row_block`` rows the column added in row order from 0, the blocks added in order."""
    batch, rows, cols = terms.shape
    blocks = -(-rows // row_block)
    padded = np.zeros((batch, blocks * row_block, cols))
    padded[:, :rows] = terms
    per_block = np.cumsum(padded.reshape(batch, blocks, row_block, cols), axis=2)[:, :, -1, :]
    return np.cumsum(per_block, axis=1)[:, -1, :]


# the loop of each C kernel (csrc/kernels.c's registry), by the registry's name
LOOPS = {
    "sgd_step": sgd_loop,
    "momentum_step": momentum_loop,
    "adagrad_step": adagrad_loop,
    "rmsprop_step": rmsprop_loop,
    "adadelta_step": adadelta_loop,
    "adam_step": adam_loop,
    "adamax_step": adamax_loop,
    "nadam_step": nadam_loop,
    "radam_step": radam_loop,
    "lamb_pass": lamb_pass_loop,
    "lion_step": lion_loop,
    "rprop_step": rprop_loop,
    "asgd_step": asgd_loop,
    "schedulefree_adamw_step": schedulefree_adamw_loop,
    "interpolate_step": interpolate_loop,
    "ewma_step": ewma_loop,
    "sum_squares": sum_squares_loop,
    "sum_abs": sum_abs_loop,
    "max_abs": max_abs_loop,
}

globals().update(_bind.bind_all(run))
