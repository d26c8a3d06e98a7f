/* gradcv's fused CPU kernels: the forward passes of the fixed-kernel filters.
 *
 * Why this file exists: in eager PyTorch every elementwise op is one pass over the
 * image, and a separable filter with its padding, or grayscale + Sobel magnitude, is
 * 10-14 of them (about 8 us each on a 256x256 plane here, 30-50 us for a square root).
 * These loops do the same arithmetic in one pass, a row at a time, with the row buffers
 * in L1. setup.py compiles this file when the package is built or installed (a plain C
 * shared library, no Python or torch headers); core_ops/_native/__init__.py loads it
 * with ctypes, and the operators fall back to their PyTorch code when it is absent.
 *
 * One build runs on any x86-64 CPU: with GCC, each kernel is compiled three times
 * (x86-64-v4: AVX-512; x86-64-v3: AVX2 + FMA; the x86-64 baseline) and the dynamic
 * loader picks the best clone for the CPU it runs on (an ifunc), instead of one
 * -march=native build that faults on an older CPU. Other compilers and architectures
 * get one portable build.
 *
 * Every function works on contiguous (H, W) planes and computes the planes
 * [p0, p1) and, of each, the output rows [y0, y1): the caller splits the work between
 * threads. The arithmetic is the PyTorch path's, operation for operation (taps in order,
 * fused multiply-adds where ATen's vectorised add-with-alpha uses them, in the image's
 * precision), so both paths give the same numbers.
 *
 * Border codes: 0 constant (zero), 1 reflect (OpenCV's BORDER_REFLECT_101),
 * 2 replicate, 3 circular.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BORDER_CONSTANT 0
#define BORDER_REFLECT 1
#define BORDER_REPLICATE 2
#define BORDER_CIRCULAR 3

/* The pixel of a length-n axis that position i (any integer) reads; -1 for a zero. */
static int64_t source_index(int64_t i, int64_t n, int border) {
    if (i >= 0 && i < n) return i;
    switch (border) {
    case BORDER_REPLICATE:
        return i < 0 ? 0 : n - 1;
    case BORDER_CIRCULAR: {
        int64_t r = i % n;
        return r < 0 ? r + n : r;
    }
    case BORDER_REFLECT: {
        if (n == 1) return 0;
        int64_t period = 2 * (n - 1);
        int64_t r = i % period;
        if (r < 0) r += period;
        return r >= n ? period - r : r;
    }
    default:
        return -1;
    }
}

int gradcv_native_version(void) { return 1; }

/* GCC's function multi-versioning; target_clones needs ifunc support (glibc). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CPU_CLONES
#endif

#define DEFINE_KERNELS(T, SUFFIX, SQRT, FMA)                                                         \
                                                                                                \
/* Separable correlation of planes with K kernels, after padding:                            \
 * out[p, k, yo, xo] = sum_i sum_j ty[k, i] tx[k, j] padded[p, yo*stride + i, xo*stride + j]  \
 * where padded is the plane extended by `top` rows and `left` columns (and as many as the   \
 * kernel needs after) with the border rule. Returns 0, or 1 when out of memory. */           \
CPU_CLONES                                                                                    \
int separable_correlate_##SUFFIX(                                                             \
    const T *in, T *out, int64_t p0, int64_t p1, int64_t y0, int64_t y1, int64_t h,           \
    int64_t w, int64_t kernels, const double *taps_y, int64_t ky, const double *taps_x,       \
    int64_t kx, int64_t top, int64_t left, int64_t stride, int border, int64_t ho,            \
    int64_t wo) {                                                                             \
    int64_t wp = (wo - 1) * stride + kx;  /* padded columns the output reads */               \
    int64_t span = left + w > wp ? left + w : wp;                                             \
    int64_t half = (span + 1) / 2;                                                            \
    T *row = malloc(sizeof(T) * (span + 2 * half + 2));                                       \
    int64_t *col_src = malloc(sizeof(int64_t) * (wp + 1));                                    \
    if (!row || !col_src) { free(row); free(col_src); return 1; }                             \
    T *even = row + span, *odd = even + half + 1;                                             \
    for (int64_t xp = 0; xp < wp; ++xp) col_src[xp] = source_index(xp - left, w, border);     \
    for (int64_t p = p0; p < p1; ++p) {                                                       \
        const T *plane = in + p * h * w;                                                      \
        for (int64_t k = 0; k < kernels; ++k) {                                               \
            const double *ty = taps_y + k * ky, *tx = taps_x + k * kx;                        \
            T *dst = out + (p * kernels + k) * ho * wo;                                       \
            for (int64_t yo = y0; yo < y1; ++yo) {                                            \
                T *ri = row + left; /* the row's own pixels, padded columns around them */    \
                int first = 1;                                                                \
                for (int64_t i = 0; i < ky; ++i) {                                            \
                    const T t = (T)ty[i];                                                     \
                    if (t == 0) continue;                                                     \
                    int64_t ys = source_index(yo * stride + i - top, h, border);              \
                    if (ys < 0) continue;                                                     \
                    const T *src = plane + ys * w;                                            \
                    if (first) {                                                              \
                        for (int64_t x = 0; x < w; ++x) ri[x] = t * src[x];                   \
                        first = 0;                                                            \
                    } else {                                                                  \
                        for (int64_t x = 0; x < w; ++x) ri[x] = FMA(t, src[x], ri[x]);        \
                    }                                                                         \
                }                                                                             \
                if (first) for (int64_t x = 0; x < w; ++x) ri[x] = 0;                         \
                for (int64_t xp = 0; xp < left && xp < wp; ++xp)                              \
                    row[xp] = col_src[xp] < 0 ? (T)0 : ri[col_src[xp]];                       \
                for (int64_t xp = left + w; xp < wp; ++xp)                                    \
                    row[xp] = col_src[xp] < 0 ? (T)0 : ri[col_src[xp]];                       \
                T *o = dst + yo * wo;                                                         \
                const T *base = row;                                                          \
                int64_t step = 1;                                                             \
                if (stride == 2) {                                                            \
                    for (int64_t x = 0; 2 * x < wp; ++x) even[x] = row[2 * x];                \
                    for (int64_t x = 0; 2 * x + 1 < wp; ++x) odd[x] = row[2 * x + 1];         \
                } else if (stride != 1) {                                                     \
                    step = stride;                                                            \
                }                                                                             \
                first = 1;                                                                    \
                for (int64_t j = 0; j < kx; ++j) {                                            \
                    const T t = (T)tx[j];                                                     \
                    if (t == 0) continue;                                                     \
                    const T *src;                                                             \
                    if (stride == 2) src = (j % 2 ? odd : even) + j / 2;                      \
                    else src = base + j;                                                      \
                    if (step == 1) {                                                          \
                        if (first) for (int64_t x = 0; x < wo; ++x) o[x] = t * src[x];        \
                        else for (int64_t x = 0; x < wo; ++x) o[x] = FMA(t, src[x], o[x]);    \
                    } else {                                                                  \
                        if (first) for (int64_t x = 0; x < wo; ++x) o[x] = t * src[x * step]; \
                        else for (int64_t x = 0; x < wo; ++x) o[x] = FMA(t, src[x * step], o[x]); \
                    }                                                                         \
                    first = 0;                                                                \
                }                                                                             \
                if (first) for (int64_t x = 0; x < wo; ++x) o[x] = 0;                         \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    free(row);                                                                                \
    free(col_src);                                                                            \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
/* Sobel magnitude sqrt(eps + scale dx^2 + scale dy^2) with OpenCV's raw 3x3 Sobel taps:     \
 * dx = [1 2 1]^T [-1 0 1], dy = [-1 0 1]^T [1 2 1]. Same-size output. */                    \
CPU_CLONES                                                                                    \
int sobel_magnitude_##SUFFIX(                                                                 \
    const T *in, T *out, int64_t p0, int64_t p1, int64_t y0, int64_t y1, int64_t h,           \
    int64_t w, int border, double scale_, double eps_) {                                      \
    const T scale = (T)scale_, eps = (T)eps_;                                                 \
    T *smooth = malloc(sizeof(T) * (3 * (w + 2)));                                            \
    if (!smooth) return 1;                                                                    \
    T *diff = smooth + (w + 2), *zero = diff + (w + 2);                                       \
    for (int64_t x = 0; x < w + 2; ++x) zero[x] = 0;                                          \
    int64_t cl = source_index(-1, w, border), cr = source_index(w, w, border);                \
    for (int64_t p = p0; p < p1; ++p) {                                                       \
        const T *plane = in + p * h * w;                                                      \
        T *dst = out + p * h * w;                                                             \
        for (int64_t y = y0; y < y1; ++y) {                                                   \
            int64_t ya = source_index(y - 1, h, border), yc = source_index(y + 1, h, border); \
            const T *a = ya < 0 ? zero : plane + ya * w;                                      \
            const T *b = plane + y * w;                                                       \
            const T *c = yc < 0 ? zero : plane + yc * w;                                      \
            T *s = smooth + 1, *v = diff + 1;                                                 \
            for (int64_t x = 0; x < w; ++x) {                                                 \
                s[x] = FMA(b[x], (T)2, a[x]) + c[x];                                          \
                v[x] = c[x] - a[x];                                                           \
            }                                                                                 \
            s[-1] = cl < 0 ? (T)0 : s[cl];                                                    \
            v[-1] = cl < 0 ? (T)0 : v[cl];                                                    \
            s[w] = cr < 0 ? (T)0 : s[cr];                                                     \
            v[w] = cr < 0 ? (T)0 : v[cr];                                                     \
            T *o = dst + y * w;                                                               \
            for (int64_t x = 0; x < w; ++x) {                                                 \
                T dx = s[x + 1] - s[x - 1];                                                   \
                T dy = FMA(v[x], (T)2, v[x - 1]) + v[x + 1];                                  \
                T m = FMA(scale * dx, dx, eps);                                               \
                m = FMA(scale * dy, dy, m);                                                   \
                o[x] = SQRT(m);                                                               \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    free(smooth);                                                                             \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
/* out = (w0 c0 + w1 c1) + w2 c2 per pixel: grayscale from three channel planes. Image b's   \
 * channel c starts at in + b * batch_stride + c * channel_stride; each plane holds `pixels` \
 * contiguous values. Here [p0, p1) are images and [y0, y1) ranges of pixels. */             \
CPU_CLONES                                                                                    \
int weighted_sum3_##SUFFIX(                                                                   \
    const T *in, T *out, int64_t p0, int64_t p1, int64_t y0, int64_t y1, int64_t pixels,      \
    int64_t batch_stride, int64_t channel_stride, double w0_, double w1_, double w2_) {       \
    const T w0 = (T)w0_, w1 = (T)w1_, w2 = (T)w2_;                                            \
    for (int64_t p = p0; p < p1; ++p) {                                                       \
        const T *c0 = in + p * batch_stride, *c1 = c0 + channel_stride;                       \
        const T *c2 = c1 + channel_stride;                                                    \
        T *o = out + p * pixels;                                                              \
        for (int64_t i = y0; i < y1; ++i) o[i] = FMA(c2[i], w2, FMA(c1[i], w1, c0[i] * w0)); \
    }                                                                                         \
    return 0;                                                                                 \
}

DEFINE_KERNELS(float, f32, sqrtf, fmaf)
DEFINE_KERNELS(double, f64, sqrt, fma)
