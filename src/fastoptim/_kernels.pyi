# Type stub for the compiled backend (_kernels.pyx). Each buffer argument is one
# C-contiguous, writable (grad/value/series: readable) float32/float64 ndarray, or a list of
# them -- one per parameter array -- with optional state buffers None when unused. Scalars
# are converted to C double (hyperparameters) and int64_t (step, a 1-based count).
from typing import Optional, Sequence, TypedDict, Union

import numpy as np

Buffer = Union[np.ndarray, Sequence[np.ndarray]]
OptionalBuffer = Optional[Buffer]

def sgd_step(param: Buffer, grad: Buffer, *, lr: float, weight_decay: float = ...,
             maximize: bool = ..., threads: Optional[int] = ...) -> None: ...
def momentum_step(param: Buffer, grad: Buffer, momentum_buffer: Buffer, *, lr: float,
                  momentum: float, step: int, dampening: float = ..., nesterov: bool = ...,
                  form: str = ..., bias_correction: bool = ..., weight_decay: float = ...,
                  maximize: bool = ..., threads: Optional[int] = ...) -> None: ...
def adagrad_step(param: Buffer, grad: Buffer, state_sum: Buffer, *, lr: float, step: int,
                 lr_decay: float = ..., eps: float = ..., weight_decay: float = ...,
                 maximize: bool = ..., threads: Optional[int] = ...) -> None: ...
def rmsprop_step(param: Buffer, grad: Buffer, square_avg: Buffer,
                 grad_avg: OptionalBuffer = ..., momentum_buffer: OptionalBuffer = ..., *,
                 lr: float, alpha: float = ..., eps: float = ..., momentum: float = ...,
                 weight_decay: float = ..., maximize: bool = ...,
                 threads: Optional[int] = ...) -> None: ...
def adam_step(param: Buffer, grad: Buffer, exp_avg: Buffer, exp_avg_sq: Buffer,
              max_exp_avg_sq: OptionalBuffer = ..., *, lr: float, step: int,
              beta1: float = ..., beta2: float = ..., eps: float = ..., eps_root: float = ...,
              weight_decay: float = ..., maximize: bool = ...,
              threads: Optional[int] = ...) -> None: ...
def adamw_step(param: Buffer, grad: Buffer, exp_avg: Buffer, exp_avg_sq: Buffer,
               max_exp_avg_sq: OptionalBuffer = ..., *, lr: float, step: int,
               beta1: float = ..., beta2: float = ..., eps: float = ..., eps_root: float = ...,
               weight_decay: float = ..., maximize: bool = ...,
               threads: Optional[int] = ...) -> None: ...
def adafactor_step(param: Buffer, grad: Buffer, row_var: OptionalBuffer = ...,
                   col_var: OptionalBuffer = ..., variance: OptionalBuffer = ..., *,
                   lr: float = ..., step: int, beta2_decay: float = ...,
                   eps1: Optional[float] = ..., eps2: float = ..., d: float = ...,
                   weight_decay: float = ..., maximize: bool = ...,
                   threads: Optional[int] = ...) -> None: ...
def ewma_step(average: Buffer, value: Buffer, *, beta: float,
              threads: Optional[int] = ...) -> None: ...
def ewma_scan(average: np.ndarray, series: np.ndarray, mean: Optional[np.ndarray] = ...,
              weight: Optional[np.ndarray] = ..., count: Optional[np.ndarray] = ..., *,
              beta: float, alpha: Optional[float] = ..., adjust: bool = ...,
              bias_correction: bool = ..., ignore_na: bool = ..., min_periods: int = ...,
              decay: Optional[np.ndarray] = ..., float32_arithmetic: bool = ...,
              axis: int = ..., threads: Optional[int] = ...) -> None: ...
def movement_loop(updated: Sequence[np.ndarray], read_only: Sequence[np.ndarray],
                  threads: Optional[int] = ...) -> None: ...

class BuildInfo(TypedDict):
    threads: str
    max_threads: int
    hardware_threads: int
    pool_workers: int
    shared_openmp: bool
    parallel_threshold: int
    simd_target: str

def build_info() -> BuildInfo: ...
def share_openmp_team() -> bool: ...
def set_parallel_threshold(n: int) -> None: ...
