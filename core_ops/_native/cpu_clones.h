/* gradcv's native kernels: what both plain-C libraries (kernels.c, registration.c) share.
 *
 * CPU_CLONES: GCC's function multi-versioning. A function marked with it is compiled for
 * x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and the baseline, and the dynamic loader picks
 * the clone the CPU supports, so one portable build runs the wide vectors where they exist.
 * target_clones needs ifunc support (glibc), hence the platform test; elsewhere the plain
 * build runs.
 */
#ifndef GRADCV_CPU_CLONES_H
#define GRADCV_CPU_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_CLONES
#endif

#endif
