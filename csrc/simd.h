/* simd.h -- how the loops are compiled for several CPUs. */
#ifndef FO_SIMD_H
#define FO_SIMD_H

/* Runtime SIMD dispatch: GCC compiles a function once per target and picks one when the
 * library loads (an ifunc), so one build runs on any x86-64 and still uses AVX-512 where
 * the CPU has it. x86-64-v3 is AVX2 + FMA + F16C (FMA unused: -ffp-contract=off), v4 adds
 * AVX-512. Elsewhere the plain loop is compiled once. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#  if __has_attribute(target_clones) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#    define FO_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#  elif __has_attribute(target_clones)
#    define FO_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#  endif
#endif
#ifndef FO_SIMD
#  define FO_SIMD
#endif

/* Loops that take a few constant options are written once as an always-inline function
 * and called with literal flags, so each variant compiles without tests in its loop. */
#define FO_INLINE static inline __attribute__((always_inline))

#endif
