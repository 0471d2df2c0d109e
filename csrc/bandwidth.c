/* bandwidth.c -- the data-movement limit of an optimizer step, for the benchmark.
 *
 * A one-pass kernel cannot beat the memory traffic it must cause: every buffer read once,
 * every updated buffer written once (Adam: param, exp_avg, exp_avg_sq read and written, grad
 * read: 7 values per element). movement_loop causes exactly that traffic with one addition
 * per value, threaded and compiled like the kernels (fo_parallel_for, target_clones), so
 * `python -m fastoptim bench` can report each kernel as a share of it, measured on the same
 * buffers in the same run. Written once in loops/movement.h, instantiated per dtype. */
#include <stddef.h>

#include "fastoptim.h"

#define real float
#define uint_real uint32_t
#define FN(name) name##_f32
#include "loops/common.h"
#include "loops/movement.h"
#undef real
#undef uint_real
#undef FN

#define real double
#define uint_real uint64_t
#define FN(name) name##_f64
#include "loops/common.h"
#include "loops/movement.h"
#undef real
#undef uint_real
#undef FN

movement_kernel *const movement_loop[2] = {movement_loop_f32, movement_loop_f64};
