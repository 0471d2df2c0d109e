/* loops/elementwise.h -- the loops fo_run drives (the registry's kernels), in one list:
 * kernels.c includes this once per storage layout, after defining `real`, `uint_real`,
 * `stored`, `stored_state` and FN (see common.h). */
#include "common.h"
#include "sgd.h"
#include "adaptive.h"
#include "adam.h"
#include "sign.h"
#include "averaged.h"
#include "reduce.h"
