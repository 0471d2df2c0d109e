/* loops/adam_bf16_convert.h -- Adam (and AdamW) on bfloat16 buffers rounding with the CPU's
 * own conversion instruction where it has one (AVX512-BF16: Zen 4, Sapphire Rapids).
 *
 * Why Adam gets a second loop: in cache, the generic bfloat16 loops (adam.h instantiated as
 * adam_loop_bf16 and adam_loop_f32_bf16) spend about as many instructions rounding as
 * computing -- GCC vectorizes bfloat16_nearest as eight integer operations per 16 values
 * and a shuffle to pack them, and cannot use the instruction for a loop written value by
 * value. Here the values go 16 to a vector and are rounded 32 at a time by
 * bfloat16_nearest_x32 (bfloat16.h: one instruction, the same bits): an all-bfloat16 step
 * in cache takes about 30 % less time. It serves three layouts: every buffer bfloat16;
 * float32 param and gradient with bfloat16 state; and the offload one, a float32 master
 * param and state with a bfloat16 gradient and param copy, which has no generic loop (it
 * runs in the driver's blocks where the CPU lacks the instruction). Only Adam/AdamW, the
 * optimizer-offload workhorse, has one; the other optimizers round as adam.h does.
 *
 * The arithmetic is adam.h's adam_body, operation for operation, on 16 floats at a time
 * (GCC's vector operators; -ffp-contract=off as everywhere, so no fused multiply-adds).
 * The tests compare all three layouts with the NumPy reference on whichever code the CPU
 * runs, and again with FASTOPTIM_GENERIC_BF16=1, which selects the generic loops and the
 * driver's blocks.
 *
 * Included once by kernels.c, after the float instantiations (it uses adam_scalars_f32 and
 * hands the last elements, fewer than 32, to adam_loop_bf16 / adam_loop_f32_bf16, or for
 * the master layout to adam_loop_f32 as the driver's blocks would). */

#ifdef FO_BFLOAT16_INSTRUCTION
typedef __m512 fo_v16;

/* Which buffers are bfloat16 (the others float32), and whether a bfloat16 copy of the
 * updated param is written (buf[5]). */
typedef struct {
    int params, grad, state, copy;
} adam_bf16_layout;

/* 16 values of a buffer from element i, as floats: bfloat16 widened, or float32 as is. */
FO_TARGET_AVX512_BF16 static inline fo_v16 adam_bf16_load(const void *buf, int64_t i,
                                                          int is_bf16)
{
    if (!is_bf16)
        return _mm512_loadu_ps((const float *)buf + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)buf + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* 32 values (lo: elements i..i+15) stored from element i, as bfloat16 or float32. */
FO_TARGET_AVX512_BF16 static inline void adam_bf16_store(void *buf, int64_t i, fo_v16 lo,
                                                         fo_v16 hi, int is_bf16)
{
    if (is_bf16) {
        bfloat16_nearest_x32(lo, hi, (uint16_t *)buf + i);
    } else {
        _mm512_storeu_ps((float *)buf + i, lo);
        _mm512_storeu_ps((float *)buf + i + 16, hi);
    }
}

/* The last elements of a call (fewer than 32) of the master layout, as the driver's blocks
 * run them: the gradient widened, the float32 loop, the copy rounded from the param. */
static void adam_bf16_master_tail(const adam_scalars_f32 *s, void *const *buf, int64_t n)
{
    static const fo_rounding nearest = {0, 0, 0};
    float grad[32];
    fo_widen(buf[1], FO_BFLOAT16, grad, n);
    void *block[5] = {buf[0], grad, buf[2], buf[3], buf[4]};
    adam_loop_f32((const float *)s, block, n, NULL);
    fo_narrow(buf[0], buf[5], FO_BFLOAT16, n, &nearest, 0, 0);
}

/* adam_body (adam.h) on 32 elements at a time, as two vectors of 16, in layout l. */
FO_TARGET_AVX512_BF16 static void adam_bf16_body(const adam_scalars_f32 *s, void *const *buf,
                                                 int64_t n, const adam_bf16_layout l,
                                                 const int amsgrad, const int denominator)
{
    const fo_v16 param_decay = _mm512_set1_ps(s->pro.param_decay);
    const fo_v16 grad_factor = _mm512_set1_ps(s->pro.grad_factor);
    const fo_v16 weight_decay = _mm512_set1_ps(s->pro.weight_decay);
    const __m512i maximize = _mm512_set1_epi32(s->pro.maximize != 0 ? (int)0x80000000U : 0);
    const fo_v16 beta1 = _mm512_set1_ps(s->mom.beta1), beta2 = _mm512_set1_ps(s->mom.beta2);
    const fo_v16 one_minus_beta1 = _mm512_set1_ps(s->mom.one_minus_beta1);
    const fo_v16 one_minus_beta2 = _mm512_set1_ps(s->mom.one_minus_beta2);
    const fo_v16 step_size = _mm512_set1_ps(s->step_size), eps = _mm512_set1_ps(s->eps);
    const fo_v16 rsqrt_bc2 = _mm512_set1_ps(s->rsqrt_bc2), inv_bc2 = _mm512_set1_ps(s->inv_bc2);
    const fo_v16 eps_root = _mm512_set1_ps(s->eps_root);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        fo_v16 p[2], m[2], v[2];
        for (int h = 0; h < 2; h++) {
            const int64_t at = i + 16 * h;
            /* common.h's prologue: each step skipped when its scalar is the identity, the
             * negation an XOR of the sign bit */
            fo_v16 pi = adam_bf16_load(buf[0], at, l.params);
            fo_v16 g = adam_bf16_load(buf[1], at, l.grad);
            if (s->pro.param_decay != 1)
                pi = pi * param_decay;
            if (s->pro.grad_factor != 1)
                g = g * grad_factor;
            g = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), maximize));
            if (s->pro.weight_decay != 0)
                g = g + weight_decay * pi;
            /* adam.h's moments */
            m[h] = beta1 * adam_bf16_load(buf[2], at, l.state) + one_minus_beta1 * g;
            v[h] = beta2 * adam_bf16_load(buf[3], at, l.state) + one_minus_beta2 * (g * g);
            p[h] = pi;
        }
        adam_bf16_store(buf[2], i, m[0], m[1], l.state);
        adam_bf16_store(buf[3], i, v[0], v[1], l.state);
        if (amsgrad) {
            for (int h = 0; h < 2; h++) {   /* common.h's maximum(vmax, v): a NaN vmax wins */
                const fo_v16 vmax = adam_bf16_load(buf[4], i + 16 * h, l.state);
                const __mmask16 take_vmax = _mm512_cmp_ps_mask(vmax, v[h], _CMP_GT_OQ)
                                            | _mm512_cmp_ps_mask(vmax, vmax, _CMP_UNORD_Q);
                v[h] = _mm512_mask_blend_ps(take_vmax, v[h], vmax);
            }
            adam_bf16_store(buf[4], i, v[0], v[1], l.state);
        }
        for (int h = 0; h < 2; h++) {
            const fo_v16 den =
                denominator == FO_ADAM_DEN_EPS_ROOT ? _mm512_sqrt_ps(v[h] * inv_bc2 + eps_root) + eps
                : denominator == FO_ADAM_DEN_EPS_HAT ? _mm512_sqrt_ps(v[h]) + eps
                : _mm512_sqrt_ps(v[h]) * rsqrt_bc2 + eps;
            p[h] = p[h] - step_size * m[h] / den;
        }
        adam_bf16_store(buf[0], i, p[0], p[1], l.params);
        if (l.copy)
            bfloat16_nearest_x32(p[0], p[1], (uint16_t *)buf[5] + i);
    }
    if (i < n) {
        const int size[6] = {l.params ? 2 : 4, l.grad ? 2 : 4, l.state ? 2 : 4,
                             l.state ? 2 : 4, l.state ? 2 : 4, 2};
        void *rest[6];
        for (int j = 0; j < 6; j++)
            rest[j] = buf[j] && (j < 5 || l.copy) ? (char *)buf[j] + i * size[j] : NULL;
        if (l.copy)
            adam_bf16_master_tail(s, rest, n - i);
        else if (l.params)
            adam_loop_bf16((const float *)s, rest, n - i, NULL);
        else
            adam_loop_f32_bf16((const float *)s, rest, n - i, NULL);
    }
}

/* The options as constants, so each combination compiles to a loop of its own. */
FO_TARGET_AVX512_BF16 static void adam_bf16(const float *scalars, void *const *buf, int64_t n,
                                            const adam_bf16_layout l)
{
    const adam_scalars_f32 *s = (const void *)scalars;
    const int amsgrad = buf[4] != NULL;
    if (s->denominator == FO_ADAM_DEN_EPS_ROOT)
        amsgrad ? adam_bf16_body(s, buf, n, l, 1, FO_ADAM_DEN_EPS_ROOT)
                : adam_bf16_body(s, buf, n, l, 0, FO_ADAM_DEN_EPS_ROOT);
    else if (s->denominator == FO_ADAM_DEN_EPS_HAT)
        amsgrad ? adam_bf16_body(s, buf, n, l, 1, FO_ADAM_DEN_EPS_HAT)
                : adam_bf16_body(s, buf, n, l, 0, FO_ADAM_DEN_EPS_HAT);
    else
        amsgrad ? adam_bf16_body(s, buf, n, l, 1, FO_ADAM_DEN_TORCH)
                : adam_bf16_body(s, buf, n, l, 0, FO_ADAM_DEN_TORCH);
}
#endif

/* The registry's Adam loops for the bfloat16 layouts. */
static void adam_loop_bf16_any(const float *scalars, void *const *buf, int64_t n, double *sums)
{
#ifdef FO_BFLOAT16_INSTRUCTION
    if (fo_bfloat16_instruction()) {
        adam_bf16(scalars, buf, n, (adam_bf16_layout){1, 1, 1, 0});
        return;
    }
#endif
    adam_loop_bf16(scalars, buf, n, sums);
}

static void adam_loop_f32_bf16_any(const float *scalars, void *const *buf, int64_t n,
                                   double *sums)
{
#ifdef FO_BFLOAT16_INSTRUCTION
    if (fo_bfloat16_instruction()) {
        adam_bf16(scalars, buf, n, (adam_bf16_layout){0, 0, 1, 0});
        return;
    }
#endif
    adam_loop_f32_bf16(scalars, buf, n, sums);
}

/* float32 master param and state, bfloat16 gradient and param copy: only with the
 * instruction (the driver checks fo_bfloat16_instruction; elsewhere the blocks run it). */
static void adam_loop_master(const float *scalars, void *const *buf, int64_t n, double *sums)
{
    (void)sums;
#ifdef FO_BFLOAT16_INSTRUCTION
    adam_bf16(scalars, buf, n, (adam_bf16_layout){0, 1, 0, 1});
#else
    (void)scalars, (void)buf, (void)n;
#endif
}
