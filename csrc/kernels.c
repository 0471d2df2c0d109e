/* kernels.c -- every loop, instantiated once per storage layout, and the registry the
 * Python layer reads (names, roles, scalars) and calls through fo_run.
 *
 * The loops in loops/ (one file per family) are written once in terms of the compute type
 * `real`, the storage types `stored` (param and gradient) and `stored_state` (state
 * buffers), and name their functions and scalar structs through FN(name). The layouts:
 *   _f32      float32 buffers                      _f64   float64 buffers
 *   _bf16     bfloat16 buffers, computed in float
 *   _f32_bf16 float32 param and gradient, bfloat16 state, computed in float
 * fo_run picks the bfloat16 ones when stores round to nearest; every other mix of dtypes
 * runs the _f32 loop on blocks widened to float. The EWMA scan and Adafactor have their
 * own drivers and come in float and double only. */
#include "fastoptim.h"

#define real float
#define uint_real uint32_t
#define stored float
#define stored_state float
#define FN(name) name##_f32
#include "loops/elementwise.h"
#include "loops/scan.h"
#include "loops/adafactor.h"
#undef real
#undef uint_real
#undef stored
#undef stored_state
#undef FN

#define real double
#define uint_real uint64_t
#define stored double
#define stored_state double
#define FN(name) name##_f64
#include "loops/elementwise.h"
#include "loops/scan.h"
#include "loops/adafactor.h"
#undef real
#undef uint_real
#undef stored
#undef stored_state
#undef FN

#define real float
#define uint_real uint32_t
#define stored fo_bfloat16
#define stored_state fo_bfloat16
#define FO_PARAMS_BFLOAT16
#define FO_STATE_BFLOAT16
#define FN(name) name##_bf16
#include "loops/elementwise.h"
#undef real
#undef uint_real
#undef stored
#undef stored_state
#undef FO_PARAMS_BFLOAT16
#undef FO_STATE_BFLOAT16
#undef FN

#define real float
#define uint_real uint32_t
#define stored float
#define stored_state fo_bfloat16
#define FO_STATE_BFLOAT16
#define FN(name) name##_f32_bf16
#include "loops/elementwise.h"
#undef real
#undef uint_real
#undef stored
#undef stored_state
#undef FO_STATE_BFLOAT16
#undef FN

/* Adam's bfloat16 loops that round with the CPU's conversion instruction where it has one */
#include "loops/adam_bf16_convert.h"

/* the prologue's fields (loops/common.h), first in every optimizer's scalars */
#define PROLOGUE "maximize grad_factor weight_decay param_decay "
#define NSCALARS(type) (int)(sizeof(type) / sizeof(double))
#define LOOPS(name) name##_loop_f32, name##_loop_f64, name##_loop_bf16, name##_loop_f32_bf16, NULL

/* name, roles (role 1 only read), scalars, nroles, nscalars, nsums, combine_max, loops */
const fo_kernel fo_kernels[] = {
    {"sgd_step", "param grad", PROLOGUE SGD_SCALARS,
     2, NSCALARS(sgd_scalars_f64), 0, 0, LOOPS(sgd)},
    {"momentum_step", "param grad momentum_buffer", PROLOGUE MOMENTUM_SCALARS,
     3, NSCALARS(momentum_scalars_f64), 0, 0, LOOPS(momentum)},
    {"adagrad_step", "param grad sum", PROLOGUE ADAGRAD_SCALARS,
     3, NSCALARS(adagrad_scalars_f64), 0, 0, LOOPS(adagrad)},
    {"rmsprop_step", "param grad square_avg grad_avg momentum_buffer", PROLOGUE RMSPROP_SCALARS,
     5, NSCALARS(rmsprop_scalars_f64), 0, 0, LOOPS(rmsprop)},
    {"adadelta_step", "param grad square_avg acc_delta", PROLOGUE ADADELTA_SCALARS,
     4, NSCALARS(adadelta_scalars_f64), 0, 0, LOOPS(adadelta)},
    {"adam_step", "param grad exp_avg exp_avg_sq max_exp_avg_sq", PROLOGUE ADAM_SCALARS,
     5, NSCALARS(adam_scalars_f64), 0, 0,
     adam_loop_f32, adam_loop_f64, adam_loop_bf16_any, adam_loop_f32_bf16_any, adam_loop_master},
    {"adamax_step", "param grad exp_avg exp_inf", PROLOGUE ADAMAX_SCALARS,
     4, NSCALARS(adamax_scalars_f64), 0, 0, LOOPS(adamax)},
    {"nadam_step", "param grad exp_avg exp_avg_sq", PROLOGUE NADAM_SCALARS,
     4, NSCALARS(nadam_scalars_f64), 0, 0, LOOPS(nadam)},
    {"radam_step", "param grad exp_avg exp_avg_sq", PROLOGUE RADAM_SCALARS,
     4, NSCALARS(radam_scalars_f64), 0, 0, LOOPS(radam)},
    {"lamb_pass", "param grad exp_avg exp_avg_sq", PROLOGUE LAMB_SCALARS,
     4, NSCALARS(lamb_scalars_f64), 2, 0, LOOPS(lamb)},
    {"lion_step", "param grad exp_avg", PROLOGUE LION_SCALARS,
     3, NSCALARS(lion_scalars_f64), 0, 0, LOOPS(lion)},
    {"rprop_step", "param grad prev step_size", PROLOGUE RPROP_SCALARS,
     4, NSCALARS(rprop_scalars_f64), 0, 0, LOOPS(rprop)},
    {"asgd_step", "param grad ax", PROLOGUE ASGD_SCALARS,
     3, NSCALARS(asgd_scalars_f64), 0, 0, LOOPS(asgd)},
    {"schedulefree_adamw_step", "param grad z exp_avg_sq", PROLOGUE SCHEDULEFREE_ADAMW_SCALARS,
     4, NSCALARS(schedulefree_adamw_scalars_f64), 0, 0, LOOPS(schedulefree_adamw)},
    {"interpolate_step", "param target", INTERPOLATE_SCALARS,
     2, NSCALARS(interpolate_scalars_f64), 0, 0, LOOPS(interpolate)},
    {"ewma_step", "average value", EWMA_SCALARS,
     2, NSCALARS(ewma_scalars_f64), 0, 0, LOOPS(ewma)},
    {"sum_squares", "x", "", 1, 0, 2, 0, LOOPS(sum_squares)},
    {"sum_abs", "x", "", 1, 0, 2, 0, LOOPS(sum_abs)},
    {"max_abs", "x", "", 1, 0, 2, 1, LOOPS(max_abs)},
};

const int fo_kernel_count = sizeof fo_kernels / sizeof fo_kernels[0];

/* Adafactor runs through its own driver (adafactor.c): its names, for the registry check */
const fo_kernel fo_adafactor_kernel = {
    "adafactor_pass", "param grad row_var col_var variance", PROLOGUE ADAFACTOR_SCALARS,
    5, NSCALARS(adafactor_scalars_f64), 2, 0, NULL, NULL, NULL, NULL, NULL};

ewma_scan_kernel *const ewma_scan[2] = {ewma_scan_f32, ewma_scan_f64};
