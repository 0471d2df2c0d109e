/* kernels.c -- every kernel, instantiated for float (_f32) and double (_f64).
 *
 * The loops in loops/ (one file per family) are written once in terms of the element type `real` and name
 * their functions through FN(name); this file includes them once per dtype and exports
 * one table per kernel, indexed by FO_FLOAT32 / FO_FLOAT64 (see fastoptim.h). */
#include "fastoptim.h"

#define real float
#define uint_real uint32_t
#define FN(name) name##_f32
#include "loops/common.h"
#include "loops/sgd.h"
#include "loops/adaptive.h"
#include "loops/adam.h"
#include "loops/scan.h"
#include "loops/movement.h"
#undef real
#undef uint_real
#undef FN

#define real double
#define uint_real uint64_t
#define FN(name) name##_f64
#include "loops/common.h"
#include "loops/sgd.h"
#include "loops/adaptive.h"
#include "loops/adam.h"
#include "loops/scan.h"
#include "loops/movement.h"
#undef real
#undef uint_real
#undef FN

fo_kernel *const sgd_step[2] = {sgd_step_f32, sgd_step_f64};
fo_kernel *const momentum_step[2] = {momentum_step_f32, momentum_step_f64};
fo_kernel *const adagrad_step[2] = {adagrad_step_f32, adagrad_step_f64};
fo_kernel *const rmsprop_step[2] = {rmsprop_step_f32, rmsprop_step_f64};
fo_kernel *const adam_step[2] = {adam_step_f32, adam_step_f64};
fo_kernel *const ewma_step[2] = {ewma_step_f32, ewma_step_f64};
ewma_scan_kernel *const ewma_scan[2] = {ewma_scan_f32, ewma_scan_f64};

/* the benchmark's data-movement limit (loops/movement.h) */
movement_kernel *const movement_loop[2] = {movement_loop_f32, movement_loop_f64};
