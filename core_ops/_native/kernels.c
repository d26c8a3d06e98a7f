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
 * -march=native build that faults on an older CPU. Other architectures get one portable
 * build (GCC or clang: the sampler's threads share a counter through their atomics).
 *
 * Every filter works on contiguous (H, W) planes and computes the planes
 * [p0, p1) and, of each, the output rows [y0, y1): the caller splits the work between
 * threads. The arithmetic is the PyTorch path's, operation for operation (taps in order,
 * fused multiply-adds where ATen's vectorised add-with-alpha uses them, in the image's
 * precision), so both paths give the same numbers.
 *
 * Border codes: 0 constant (zero), 1 reflect (OpenCV's BORDER_REFLECT_101),
 * 2 replicate, 3 circular.
 *
 * The bilinear sampler (warp_bilinear_*, at the end) works in pixel coordinates, pixel
 * centres at integers, on (B, C, H, W) images: the source position of each output pixel
 * (from a grid of positions or a 3x3 matrix per image) and its weights are found once for
 * all channels, which then read the same four offsets. Its work comes in pieces (an image,
 * or a band of its output rows) that the threads take from a shared counter; the threads
 * are PyTorch's own OpenMP team where the caller passes GOMP_parallel (see DEFINE_TEAMS),
 * else the caller's pool. Its padding codes are grid_sample's: 0 zeros, 1 border,
 * 2 reflection (about the image edge).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int gradcv_native_version(void) { return 6; }

/* The bilinear warps' sampling matrices a (n x 9 doubles) from the source-to-destination pixel
 * matrices m: each inverse by cofactors (row i of the cofactors is row i + 1 x row i + 2, the
 * determinant row 0 . cofactor row 0), ok[i] = 1 where the determinant is non-zero and finite
 * and the inverse finite; elsewhere ok[i] = 0 and a matrix sending every pixel far outside an
 * h x w source: x = y = -2 (h + w) - 4. One call in place of the two dozen small PyTorch ops of
 * the same arithmetic (the PyTorch path: imgwarp._bilinear_matrices). */
void sampling_matrices(const double *m, int64_t n, int64_t h, int64_t w, double *a, uint8_t *ok) {
    for (int64_t b = 0; b < n; ++b, m += 9, a += 9) {
        double cof[9];
        for (int i = 0; i < 3; ++i) {
            const double *r1 = m + 3 * ((i + 1) % 3), *r2 = m + 3 * ((i + 2) % 3);
            cof[3 * i] = r1[1] * r2[2] - r1[2] * r2[1];
            cof[3 * i + 1] = r1[2] * r2[0] - r1[0] * r2[2];
            cof[3 * i + 2] = r1[0] * r2[1] - r1[1] * r2[0];
        }
        const double det = (m[0] * cof[0] + m[1] * cof[1]) + m[2] * cof[2];
        int good = (det != 0.0) & (det - det == 0.0);
        const double d = good ? det : 1.0;
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
                a[3 * i + j] = cof[3 * j + i] / d;
                good &= a[3 * i + j] - a[3 * i + j] == 0.0;
            }
        if (!good) {
            const double far = -2.0 * (double)(h + w) - 4.0;
            for (int k = 0; k < 9; ++k) a[k] = 0.0;
            a[2] = a[5] = far;
            a[8] = 1.0;
        }
        ok[b] = (uint8_t)good;
    }
}

#include "cpu_clones.h" /* CPU_CLONES: one build, a clone per CPU level */

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

/* ------------------------------------------------------------------ bilinear sampling */
#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif
#define PAD_ZEROS 0
#define PAD_BORDER 1
#define PAD_REFLECTION 2

/* x mirrored about -0.5 and n - 0.5 (grid_sample's reflection with align_corners=False),
 * and the sign of d(result)/dx in *sign. NaN stays NaN. */
static inline ALWAYS_INLINE double reflect_coord(double x, int64_t n, double *sign) {
    double span = (double)n, t = x + 0.5, g = 1.0;
    if (t < 0) { t = -t; g = -1.0; }
    double flips = floor(t / span);
    double extra = t - flips * span;
    if (fmod(flips, 2.0) == 0.0) {
        x = extra - 0.5;
    } else {
        x = span - extra - 0.5;
        g = -g;
    }
    *sign = g;
    return x;
}

/* The per-channel reads of a row, shared by both precisions: out (channels planes of oplane
 * values) at [xa, xb) from the 2 x 2 blocks at base with separable weights; and the four values
 * of each block into contiguous rows (for the position gradient: the row's last wo % 16
 * outputs where grad_rows_f32_avx512 does the rest). Plain loops; the float32 samples have an
 * AVX-512 version below (permutes or gathers), picked at run time, and so has the whole
 * forward from a matrix with zeros or border padding (fused_mat_f32_avx512). */
#define DEFINE_GATHERS(T, SUFFIX)                                                                  \
static void sample_rows_##SUFFIX##_plain(                                                          \
    const T *img, T *out, int64_t channels, int64_t plane, int64_t oplane, int64_t w, int64_t wo,  \
    const int32_t *base, const T *wx0, const T *wx1, const T *wy0, const T *wy1) {                 \
    for (int64_t c = 0; c < channels; ++c) {                                                       \
        const T *src = img + c * plane;                                                            \
        T *o = out + c * oplane;                                                                   \
        for (int64_t x = 0; x < wo; ++x) {                                                         \
            const T *s = src + base[x];                                                            \
            T a0 = wx0[x], a1 = wx1[x];                                                            \
            o[x] = wy0[x] * (a0 * s[0] + a1 * s[1]) + wy1[x] * (a0 * s[w] + a1 * s[w + 1]);        \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
static void blocks_##SUFFIX(                                                                       \
    const T *src, int64_t w, int64_t wo, const int32_t *base, T *restrict q00, T *restrict q01,    \
    T *restrict q10, T *restrict q11) {                                                            \
    for (int64_t x = 0; x < wo; ++x) {                                                             \
        const T *s = src + base[x];                                                                \
        q00[x] = s[0];                                                                             \
        q01[x] = s[1];                                                                             \
        q10[x] = s[w];                                                                             \
        q11[x] = s[w + 1];                                                                         \
    }                                                                                              \
}
DEFINE_GATHERS(float, f32)
DEFINE_GATHERS(double, f64)

/* row_ends_avx512's plain loop (a function of its own: inside the sampler's loops the
 * compiler keeps the count in memory) */
static int64_t row_ends_plain(const int32_t *base, int64_t wo, int32_t *ends) {
    int64_t n = 0;
    for (int64_t x = 0; x + 1 < wo; ++x) { /* no branch: most outputs are not ends */
        ends[n] = (int32_t)x;
        n += base[x + 1] != base[x] + 1;
    }
    ends[n++] = (int32_t)(wo - 1);
    return n;
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
static int have_avx512(void) {
    static volatile int flag = -1; /* every thread computes the same value */
    if (flag < 0) {
        __builtin_cpu_init();
        flag = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    return flag;
}

/* Where the 2 x 2 blocks of 16 outputs (top-left corners at the plane indices b) are read from.
 * Gathers are slow on many CPUs (AMD's, and Intel's under the gather-data-sampling microcode),
 * while the blocks of neighbouring outputs mostly lie close together: where every corner lies
 * in at most MAX_WINDOWS windows of 31 consecutive plane values (the first from the smallest
 * corner, each next one from the smallest corner not yet held), each window and the one w below
 * it are two plain 16-value loads, and the blocks' values are picked from them by permutes (the
 * corners of a window's lanes at k, their right neighbours at k + 1 <= 31). A window needs its
 * 32 values and the 32 below inside the plane (o + w + 32 <= plane); elsewhere (corners spread
 * over more rows or columns, the plane's last rows) the gathers read them. Moves only: the same
 * values either way. On the benchmark's 8 x 3 x 256^2 warps (corners moved by up to 10 %) the
 * forward took 0.56x the time of gathers alone at one thread (AMD EPYC, AVX-512); 4 windows
 * against 3 measured 0.96x. Corners more than 3 rows + 30 values apart (steep rotations) go to
 * the gathers before any search: the search then cost 1.25-1.31x the gathers' time at 15 to
 * 60 degrees, and without it 0.93-1.0x. */
#define MAX_WINDOWS 4
typedef struct {
    int n;                   /* windows: 0 (gathers) to MAX_WINDOWS */
    int64_t o[MAX_WINDOWS];  /* each window's first plane index */
    __m512i k[MAX_WINDOWS];  /* each lane's corner in each window (low 5 bits used) */
    __mmask16 m[MAX_WINDOWS]; /* the lanes each later window gives (window 0 gives all first) */
} Windows16;

__attribute__((target("avx512f"))) static inline Windows16 windows16(__m512i b, int64_t w, int64_t plane) {
    Windows16 r;
    const __m512i span = _mm512_set1_epi32(30);
    const int64_t lo = _mm512_reduce_min_epi32(b), hi = _mm512_reduce_max_epi32(b);
    r.n = 0;
    /* corners more than MAX_WINDOWS - 1 rows apart need more windows: gathers, without a search */
    if (hi - lo > (MAX_WINDOWS - 1) * w + 30 || lo + w + 32 > plane) return r;
    r.o[0] = lo;
    r.k[0] = _mm512_sub_epi32(b, _mm512_set1_epi32((int32_t)lo));
    if (hi - lo <= 30) { /* one window holds all */
        r.n = 1;
        return r;
    }
    __mmask16 left = (__mmask16)~_mm512_cmple_epu32_mask(r.k[0], span); /* lanes no window holds yet */
    for (int k = 1; k < MAX_WINDOWS; ++k) {
        const int64_t o = _mm512_mask_reduce_min_epi32(left, b);
        if (o + w + 32 > plane) break;
        r.o[k] = o;
        r.k[k] = _mm512_sub_epi32(b, _mm512_set1_epi32((int32_t)o));
        r.m[k] = left & _mm512_cmple_epu32_mask(r.k[k], span);
        left &= (__mmask16)~r.m[k];
        if (!left) {
            r.n = k + 1;
            break;
        }
    }
    return r;
}

/* The four values of 16 blocks of the plane s (top-left corners at i0, i1: 8 each; w values a
 * row) as windows16 found them: v[0] top left, v[1] top right, v[2] bottom left, v[3] bottom
 * right. The gathers read each pair of horizontal neighbours as one 64-bit value. */
__attribute__((target("avx512f"))) static inline void corners16_f32_avx512(
    const float *s, int64_t w, const Windows16 *win, __m256i i0, __m256i i1, __m512 v[4]) {
    if (win->n) {
        const __m512i one = _mm512_set1_epi32(1);
        for (int k = 0; k < win->n; ++k) {
            const float *t = s + win->o[k];
            const __m512i left = win->k[k], right = _mm512_add_epi32(left, one);
            const __m512 t0 = _mm512_loadu_ps(t), t1 = _mm512_loadu_ps(t + 16);
            const __m512 u0 = _mm512_loadu_ps(t + w), u1 = _mm512_loadu_ps(t + w + 16);
            __m512 q[4] = {_mm512_permutex2var_ps(t0, left, t1), _mm512_permutex2var_ps(t0, right, t1),
                           _mm512_permutex2var_ps(u0, left, u1), _mm512_permutex2var_ps(u0, right, u1)};
            for (int j = 0; j < 4; ++j) v[j] = k ? _mm512_mask_mov_ps(v[j], win->m[k], q[j]) : q[j];
        }
        return;
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m256i down = _mm256_set1_epi32((int)w);
    __m512 t0 = _mm512_castsi512_ps(_mm512_i32gather_epi64(i0, (const void *)s, 4));
    __m512 t1 = _mm512_castsi512_ps(_mm512_i32gather_epi64(i1, (const void *)s, 4));
    __m512 u0 = _mm512_castsi512_ps(_mm512_i32gather_epi64(_mm256_add_epi32(i0, down), (const void *)s, 4));
    __m512 u1 = _mm512_castsi512_ps(_mm512_i32gather_epi64(_mm256_add_epi32(i1, down), (const void *)s, 4));
    v[0] = _mm512_permutex2var_ps(t0, even, t1);
    v[1] = _mm512_permutex2var_ps(t0, odd, t1);
    v[2] = _mm512_permutex2var_ps(u0, even, u1);
    v[3] = _mm512_permutex2var_ps(u0, odd, u1);
}

__attribute__((target("avx512f"))) static inline __m512i join16(__m256i i0, __m256i i1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(i0), i1, 1);
}

/* out[0 .. 16) from the four corners v00 (top left), v01, v10, v11 of 16 blocks: horizontal
 * weights a0, a1, vertical c0, c1; the plain loop's arithmetic, lane by lane (no fused
 * multiply-adds). */
__attribute__((target("avx512f"))) static inline void store_blend16_f32_avx512(
    float *out, __m512 a0, __m512 a1, __m512 c0, __m512 c1, __m512 v00, __m512 v01, __m512 v10, __m512 v11) {
    __m512 top = _mm512_add_ps(_mm512_mul_ps(a0, v00), _mm512_mul_ps(a1, v01));
    __m512 bot = _mm512_add_ps(_mm512_mul_ps(a0, v10), _mm512_mul_ps(a1, v11));
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_mul_ps(c0, top), _mm512_mul_ps(c1, bot)));
}

/* out[c * oplane + (0 .. 16)] for every channel from the 2 x 2 blocks whose top-left corners are
 * at the indices i0, i1 (8 each) of planes of w values a row; horizontal weights a0, a1,
 * vertical c0, c1; the plain loop's arithmetic, lane by lane (no fused multiply-adds). */
__attribute__((target("avx512f"))) static inline void blend16_f32_avx512(
    const float *img, float *out, int64_t channels, int64_t plane, int64_t oplane, int64_t w, __m256i i0,
    __m256i i1, __m512 a0, __m512 a1, __m512 c0, __m512 c1) {
    const Windows16 win = windows16(join16(i0, i1), w, plane);
    for (int64_t c = 0; c < channels; ++c) {
        __m512 v[4];
        corners16_f32_avx512(img + c * plane, w, &win, i0, i1, v);
        store_blend16_f32_avx512(out + c * oplane, a0, a1, c0, c1, v[0], v[1], v[2], v[3]);
    }
}

/* blend16_rows_f32_avx512's samples from the rows t, t + w, ..., t + n w of each channel (n a
 * constant where it is inlined: no branch per channel). */
__attribute__((target("avx512f"))) static inline ALWAYS_INLINE void rows_blend_f32_avx512(
    const float *t, float *out, int64_t channels, int64_t plane, int64_t oplane, int64_t w, __m512i k, __m512i k1,
    const __mmask16 *m, int n, __m512 a0, __m512 a1, __m512 c0, __m512 c1) {
    for (int64_t c = 0; c < channels; ++c, t += plane) {
        __m512 v0, v1, v2 = _mm512_setzero_ps(), v3 = _mm512_setzero_ps();
        {
            const __m512 t0 = _mm512_loadu_ps(t), t1 = _mm512_loadu_ps(t + 16);
            v0 = _mm512_permutex2var_ps(t0, k, t1);
            v1 = _mm512_permutex2var_ps(t0, k1, t1);
        }
        for (int j = 1; j <= n; ++j) {
            const __m512 t0 = _mm512_loadu_ps(t + j * w), t1 = _mm512_loadu_ps(t + j * w + 16);
            const __m512 left = _mm512_permutex2var_ps(t0, k, t1), right = _mm512_permutex2var_ps(t0, k1, t1);
            if (j == 1) {
                v2 = left;
                v3 = right;
            } else {
                v2 = _mm512_mask_mov_ps(v2, m[j - 1], left);
                v3 = _mm512_mask_mov_ps(v3, m[j - 1], right);
            }
            if (j < n) {
                v0 = _mm512_mask_mov_ps(v0, m[j], left);
                v1 = _mm512_mask_mov_ps(v1, m[j], right);
            }
        }
        store_blend16_f32_avx512(out + c * oplane, a0, a1, c0, c1, v0, v1, v2, v3);
    }
}

/* blend16_f32_avx512 where the blocks' columns bx and rows by (8 lanes each in bx0, bx1 and
 * by0, by1; b0, b1 the blocks by * w + bx) are known apart, as the forward from a matrix has them.
 * The 16 outputs of a row lie on a segment of the source, so the blocks' extremes are mostly
 * those of the first and last lanes: where every column lies within 31 values of the smaller
 * end column xmin and every row between the ends' rows (at most MAX_WINDOWS of them), the rows'
 * 32 values from column xmin are read by plain loads, each row once (it is the bottom of one
 * row's blocks and the top of the next's), and the corners are picked from them by permutes
 * with one index for all rows. Else blend16_f32_avx512's windows and gathers. Moves only: the
 * same values, and blend16_f32_avx512's arithmetic. On the benchmark's 8 x 3 x 256^2 warps at
 * one thread (AMD EPYC, interleaved in one process) the forward took 1.73-1.80 ms against
 * 2.07 with the windows, the identity 0.90-0.93 against 1.11; rotations by 30 degrees (gathers)
 * the same. */
__attribute__((target("avx512f"))) static inline void blend16_rows_f32_avx512(
    const float *img, float *out, int64_t channels, int64_t plane, int64_t oplane, int64_t w, __m256i bx0,
    __m256i bx1, __m256i by0, __m256i by1, __m256i b0, __m256i b1, __m512 a0, __m512 a1, __m512 c0, __m512 c1) {
    const int64_t xf = _mm256_cvtsi256_si32(bx0), xl = _mm256_extract_epi32(bx1, 7);
    const int64_t yf = _mm256_cvtsi256_si32(by0), yl = _mm256_extract_epi32(by1, 7);
    const int64_t xmin = xf < xl ? xf : xl, ymin = yf < yl ? yf : yl, n = (yf < yl ? yl : yf) - ymin + 1;
    if (n > MAX_WINDOWS || (ymin + n) * w + xmin + 32 > plane) {
        blend16_f32_avx512(img, out, channels, plane, oplane, w, b0, b1, a0, a1, c0, c1);
        return;
    }
    const __m512i k = _mm512_sub_epi32(join16(bx0, bx1), _mm512_set1_epi32((int32_t)xmin));
    const __m512i r = _mm512_sub_epi32(join16(by0, by1), _mm512_set1_epi32((int32_t)ymin));
    const __mmask16 held = _mm512_cmple_epu32_mask(k, _mm512_set1_epi32(30))
                         & _mm512_cmplt_epu32_mask(r, _mm512_set1_epi32((int32_t)n));
    if (held != (__mmask16)0xFFFF) {
        blend16_f32_avx512(img, out, channels, plane, oplane, w, b0, b1, a0, a1, c0, c1);
        return;
    }
    const __m512i k1 = _mm512_add_epi32(k, _mm512_set1_epi32(1));
    __mmask16 m[MAX_WINDOWS]; /* m[j]: the lanes whose block's top row is ymin + j (m[0] unused) */
    for (int64_t j = 1; j < MAX_WINDOWS; ++j) m[j] = _mm512_cmpeq_epi32_mask(r, _mm512_set1_epi32((int32_t)j));
    const float *t = img + ymin * w + xmin;
    switch (n) { /* a constant n in each: the channels' loop has no branch */
    case 1: rows_blend_f32_avx512(t, out, channels, plane, oplane, w, k, k1, m, 1, a0, a1, c0, c1); break;
    case 2: rows_blend_f32_avx512(t, out, channels, plane, oplane, w, k, k1, m, 2, a0, a1, c0, c1); break;
    case 3: rows_blend_f32_avx512(t, out, channels, plane, oplane, w, k, k1, m, 3, a0, a1, c0, c1); break;
    default: rows_blend_f32_avx512(t, out, channels, plane, oplane, w, k, k1, m, 4, a0, a1, c0, c1); break;
    }
}

/* 16 outputs at a time: the four corners as corners16_f32_avx512 reads them (one decision for
 * all channels), the same arithmetic as the plain loop, lane by lane (no fused multiply-adds). */
__attribute__((target("avx512f"))) static void sample_rows_f32_avx512(
    const float *img, float *out, int64_t channels, int64_t plane, int64_t oplane, int64_t w, int64_t wo,
    const int32_t *base, const float *wx0, const float *wx1, const float *wy0, const float *wy1) {
    int64_t x = 0;
    for (; x + 16 <= wo; x += 16) {
        __m256i i0 = _mm256_loadu_si256((const __m256i *)(base + x)), i1 = _mm256_loadu_si256((const __m256i *)(base + x + 8));
        __m512 a0 = _mm512_loadu_ps(wx0 + x), a1 = _mm512_loadu_ps(wx1 + x);
        __m512 c0 = _mm512_loadu_ps(wy0 + x), c1 = _mm512_loadu_ps(wy1 + x);
        blend16_f32_avx512(img, out + x, channels, plane, oplane, w, i0, i1, a0, a1, c0, c1);
    }
    if (x < wo)
        for (int64_t c = 0; c < channels; ++c)
            sample_rows_f32_plain(img + c * plane, out + c * oplane + x, 1, 0, 0, w, wo - x, base + x, wx0 + x,
                                  wx1 + x, wy0 + x, wy1 + x);
}

/* The first wo - wo % 8 outputs of the backward's matrix-gradient sums (warp_bilinear_backward_f32)
 * in eight lanes, lane k adding the outputs x = k mod 8 as acc[j][k] does there: the same
 * operations in the same order (the negation flips the sign bit, as C's does), so the same bits.
 * Returns how many outputs it summed. */
__attribute__((target("avx512f"))) static int64_t mat_sums_f32_avx512(
    int64_t wo, const float *gxs, const float *gys, const double *fx, const double *fy, const double *sxs,
    const double *sys, const double *invs, double acc[6][8]) {
    const __m512d zero = _mm512_setzero_pd(), eight = _mm512_set1_pd(8.0);
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ULL);
    __m512d a0 = _mm512_loadu_pd(acc[0]), a1 = _mm512_loadu_pd(acc[1]), a2 = _mm512_loadu_pd(acc[2]);
    __m512d a3 = _mm512_loadu_pd(acc[3]), a4 = _mm512_loadu_pd(acc[4]), a5 = _mm512_loadu_pd(acc[5]);
    __m512d xd = _mm512_set_pd(7, 6, 5, 4, 3, 2, 1, 0);
    int64_t x = 0;
    for (; x + 8 <= wo; x += 8, xd = _mm512_add_pd(xd, eight)) {
        __m512d inv = _mm512_loadu_pd(invs + x);
        __m512d qx = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(gxs + x)), _mm512_loadu_pd(fx + x)), inv);
        __m512d qy = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(gys + x)), _mm512_loadu_pd(fy + x)), inv);
        __mmask8 nz = _mm512_cmp_pd_mask(inv, zero, _CMP_NEQ_UQ);
        __m512d sx = _mm512_maskz_mov_pd(nz, _mm512_loadu_pd(sxs + x));
        __m512d sy = _mm512_maskz_mov_pd(nz, _mm512_loadu_pd(sys + x));
        __m512d t = _mm512_add_pd(_mm512_mul_pd(qx, sx), _mm512_mul_pd(qy, sy));
        __m512d qz = _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(t), sign));
        a0 = _mm512_add_pd(a0, qx);
        a1 = _mm512_add_pd(a1, qy);
        a2 = _mm512_add_pd(a2, qz);
        a3 = _mm512_add_pd(a3, _mm512_mul_pd(qx, xd));
        a4 = _mm512_add_pd(a4, _mm512_mul_pd(qy, xd));
        a5 = _mm512_add_pd(a5, _mm512_mul_pd(qz, xd));
    }
    _mm512_storeu_pd(acc[0], a0);
    _mm512_storeu_pd(acc[1], a1);
    _mm512_storeu_pd(acc[2], a2);
    _mm512_storeu_pd(acc[3], a3);
    _mm512_storeu_pd(acc[4], a4);
    _mm512_storeu_pd(acc[5], a5);
    return x;
}
#define MAT_SUMS_F32(...) (have_avx512() ? mat_sums_f32_avx512(__VA_ARGS__) : 0)
static int have_avx512vl(void) {
    static volatile int flag = -1; /* every thread computes the same value */
    if (flag < 0) {
        __builtin_cpu_init();
        flag = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? 1 : 0;
    }
    return flag;
}

/* One axis of taps_f32 + axis_f32 (zeros and border padding, no derivatives) for 8 positions
 * p (double; ok: defined): the clamps to [lo, hi], -2 (read nothing) where undefined, the block's
 * first index c in [0, n - 2] and its two weights w0, w1. Every operation is the scalar one (the
 * 0/1 masks multiply exactly, and of the two products summed into a weight at most one is not
 * +0), so the same bits. */
__attribute__((target("avx512f,avx512vl"))) static inline void axis_f32_avx512(
    __m512d p, __mmask8 ok, __m512d lo, __m512d hi, int32_t n, __m256i *c, __m256 *w0, __m256 *w1) {
    p = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(p, lo, _CMP_GT_OQ), lo, p);
    p = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(p, hi, _CMP_LT_OQ), hi, p);
    p = _mm512_mask_blend_pd(ok, _mm512_set1_pd(-2.0), p);
    __m512d f0 = _mm512_roundscale_pd(p, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 f = _mm512_cvtpd_ps(_mm512_sub_pd(p, f0));
    __m256i i = _mm512_cvttpd_epi32(f0), i1 = _mm256_add_epi32(i, _mm256_set1_epi32(1));
    __m256i k = _mm256_min_epi32(_mm256_max_epi32(i, _mm256_setzero_si256()), _mm256_set1_epi32(n - 2));
    __mmask8 m0 = _mm256_cmp_epi32_mask(i, _mm256_setzero_si256(), _MM_CMPINT_NLT)
                & _mm256_cmp_epi32_mask(i, _mm256_set1_epi32(n), _MM_CMPINT_LT);
    __mmask8 m1 = _mm256_cmp_epi32_mask(i1, _mm256_setzero_si256(), _MM_CMPINT_NLT)
                & _mm256_cmp_epi32_mask(i1, _mm256_set1_epi32(n), _MM_CMPINT_LT);
    __m256 a0 = _mm256_maskz_mov_ps(m0, _mm256_sub_ps(_mm256_set1_ps(1.0f), f)), a1 = _mm256_maskz_mov_ps(m1, f);
    __mmask8 e0 = _mm256_cmp_epi32_mask(i, k, _MM_CMPINT_EQ), e1 = _mm256_cmp_epi32_mask(i1, k, _MM_CMPINT_EQ);
    __mmask8 e2 = _mm256_cmp_epi32_mask(i, _mm256_add_epi32(k, _mm256_set1_epi32(1)), _MM_CMPINT_EQ);
    *w0 = _mm256_mask_mov_ps(_mm256_maskz_mov_ps(e1, a1), e0, a0);
    *w1 = _mm256_mask_mov_ps(_mm256_maskz_mov_ps(e0, a1), e2, a0);
    *c = k;
}

/* The forward from a matrix with zeros or border padding, float32, outputs [xa, xb) of row yo
 * (xb - xa a multiple of 16): positions, taps and samples in one pass, 16 outputs at a time,
 * so that the divides of the positions overlap the gathers of the samples (two passes over the
 * row, positions then samples, keep them apart). Where all 16 positions are inside the image
 * the weights are interior_f32's, else taps_f32's; the samples are sample_rows_f32_avx512's:
 * every operation is the scalar path's, so the same bits. With tb (the backward of the image alone)
 * it writes the taps instead of sampling: blocks into tb, weights wx0, wx1, wy0, wy1 into tw,
 * oplane values apart (img, out unused). */
__attribute__((target("avx512f,avx512vl"))) static int fused_mat_f32_avx512(
    const double *m, int64_t yo, int64_t xa, int64_t xb, int64_t h, int64_t w, int padding, const float *img,
    float *out, int64_t channels, int64_t plane, int64_t oplane, int32_t *tb, float *tw) {
    const double y = (double)yo;
    const __m512d m0 = _mm512_set1_pd(m[0]), m3 = _mm512_set1_pd(m[3]), m6 = _mm512_set1_pd(m[6]);
    const __m512d c0 = _mm512_set1_pd(m[1] * y + m[2]), c1 = _mm512_set1_pd(m[4] * y + m[5]);
    const __m512d c2 = _mm512_set1_pd(m[7] * y + m[8]);
    const __m512d hx = _mm512_set1_pd((double)w - 1.0), hy = _mm512_set1_pd((double)h - 1.0);
    const int border = padding != PAD_ZEROS;
    const __m512d lo = _mm512_set1_pd(border ? 0.0 : -2.0);
    const __m512d hix = _mm512_set1_pd(border ? (double)w - 1.0 : (double)w + 1.0);
    const __m512d hiy = _mm512_set1_pd(border ? (double)h - 1.0 : (double)h + 1.0);
    const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0), eight = _mm512_set1_pd(8.0);
    const __m256i wi = _mm256_set1_epi32((int)w);
    const __m512 onef = _mm512_set1_ps(1.0f);
    __m512d xv = _mm512_add_pd(_mm512_set1_pd((double)xa), _mm512_set_pd(7, 6, 5, 4, 3, 2, 1, 0));
#define JOIN_PS(lo, hi) _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1))
    for (int64_t x = xa; x < xb; x += 16) {
        __m512d sx[2], sy[2];
        __m256 ax[2], ay[2];
        __m256i b[2], bx[2], by[2];
        __mmask8 in[2], ok[2];
        for (int k = 0; k < 2; ++k, xv = _mm512_add_pd(xv, eight)) {
            __m512d d = _mm512_add_pd(_mm512_mul_pd(m6, xv), c2);
            __m512d inv = _mm512_div_pd(one, d);
            sx[k] = _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(m0, xv), c0), inv);
            sy[k] = _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(m3, xv), c1), inv);
            /* inside (NaN compares false): sx in [0, w - 1), sy in [0, h - 1) */
            in[k] = _mm512_cmp_pd_mask(sx[k], zero, _CMP_GE_OQ) & _mm512_cmp_pd_mask(sx[k], hx, _CMP_LT_OQ)
                  & _mm512_cmp_pd_mask(sy[k], zero, _CMP_GE_OQ) & _mm512_cmp_pd_mask(sy[k], hy, _CMP_LT_OQ);
            /* defined: d != 0 and both finite (locate_row_f32's test) */
            ok[k] = _mm512_cmp_pd_mask(d, zero, _CMP_NEQ_UQ)
                  & _mm512_cmp_pd_mask(_mm512_sub_pd(sx[k], sx[k]), zero, _CMP_EQ_OQ)
                  & _mm512_cmp_pd_mask(_mm512_sub_pd(sy[k], sy[k]), zero, _CMP_EQ_OQ);
            __m512d fx = _mm512_roundscale_pd(sx[k], _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            __m512d fy = _mm512_roundscale_pd(sy[k], _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
            ax[k] = _mm512_cvtpd_ps(_mm512_sub_pd(sx[k], fx));
            ay[k] = _mm512_cvtpd_ps(_mm512_sub_pd(sy[k], fy));
            bx[k] = _mm512_cvttpd_epi32(fx);
            by[k] = _mm512_cvttpd_epi32(fy);
            b[k] = _mm256_add_epi32(_mm256_mullo_epi32(by[k], wi), bx[k]);
        }
        __m512 a0, a1, e0, e1;
        if ((in[0] & in[1]) == 0xFF) {
            a1 = JOIN_PS(ax[0], ax[1]);
            e1 = JOIN_PS(ay[0], ay[1]);
            a0 = _mm512_sub_ps(onef, a1);
            e0 = _mm512_sub_ps(onef, e1);
        } else {
            __m256 p0[2], p1[2], q0[2], q1[2];
            for (int k = 0; k < 2; ++k) {
                axis_f32_avx512(sx[k], ok[k], lo, hix, (int32_t)w, &bx[k], &p0[k], &p1[k]);
                axis_f32_avx512(sy[k], ok[k], lo, hiy, (int32_t)h, &by[k], &q0[k], &q1[k]);
                b[k] = _mm256_add_epi32(_mm256_mullo_epi32(by[k], wi), bx[k]);
            }
            a0 = JOIN_PS(p0[0], p0[1]);
            a1 = JOIN_PS(p1[0], p1[1]);
            e0 = JOIN_PS(q0[0], q0[1]);
            e1 = JOIN_PS(q1[0], q1[1]);
        }
        if (tb) { /* the taps only (the backward's): blocks and weights, as row_f32 writes them */
            _mm256_storeu_si256((__m256i *)(tb + x), b[0]);
            _mm256_storeu_si256((__m256i *)(tb + x + 8), b[1]);
            _mm512_storeu_ps(tw + x, a0);
            _mm512_storeu_ps(tw + oplane + x, a1);
            _mm512_storeu_ps(tw + 2 * oplane + x, e0);
            _mm512_storeu_ps(tw + 3 * oplane + x, e1);
            continue;
        }
        blend16_rows_f32_avx512(img, out + x, channels, plane, oplane, w, bx[0], bx[1], by[0], by[1], b[0], b[1],
                                a0, a1, e0, e1);
    }
#undef JOIN_PS
    return 0;
}
/* The backward's taps with their derivatives (row_f32 with deriv) from a matrix, zeros or border
 * padding, for the 16 outputs [x, x + 16) of row yo when all of them lie strictly inside the
 * image (interior_f32's test with deriv): positions sxs, sys and 1 / d into pos (wo doubles
 * apart), blocks, weights (wts) and their derivatives (wts + 4 wo), unit padding factors (fac).
 * Every operation is interior_f32's, so the same bits. Returns 0 (nothing to use) when some
 * position is not inside: the scalar path does those 16. */
__attribute__((target("avx512f,avx512vl"))) static int deriv16_f32_avx512(
    const double *m, int64_t yo, int64_t x, int64_t h, int64_t w, int64_t wo, double *pos, int32_t *base,
    float *wts, double *fac) {
    const double y = (double)yo;
    const __m512d m0 = _mm512_set1_pd(m[0]), m3 = _mm512_set1_pd(m[3]), m6 = _mm512_set1_pd(m[6]);
    const __m512d c0 = _mm512_set1_pd(m[1] * y + m[2]), c1 = _mm512_set1_pd(m[4] * y + m[5]);
    const __m512d c2 = _mm512_set1_pd(m[7] * y + m[8]);
    const __m512d hx = _mm512_set1_pd((double)w - 1.0), hy = _mm512_set1_pd((double)h - 1.0);
    const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
    const __m256i wi = _mm256_set1_epi32((int)w);
    __m512d sx[2], sy[2], inv[2];
    __mmask8 in = 0xFF;
    for (int k = 0; k < 2; ++k) {
        __m512d xv = _mm512_add_pd(_mm512_set1_pd((double)(x + 8 * k)), _mm512_set_pd(7, 6, 5, 4, 3, 2, 1, 0));
        __m512d d = _mm512_add_pd(_mm512_mul_pd(m6, xv), c2);
        inv[k] = _mm512_div_pd(one, d);
        sx[k] = _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(m0, xv), c0), inv[k]);
        sy[k] = _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(m3, xv), c1), inv[k]);
        in &= _mm512_cmp_pd_mask(sx[k], zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(sx[k], hx, _CMP_LT_OQ)
            & _mm512_cmp_pd_mask(sy[k], zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(sy[k], hy, _CMP_LT_OQ);
    }
    if (in != 0xFF) return 0;
    const __m256 onef = _mm256_set1_ps(1.0f), minus = _mm256_set1_ps(-1.0f);
    for (int k = 0; k < 2; ++k) {
        const int64_t i = x + 8 * k;
        __m512d fx = _mm512_roundscale_pd(sx[k], _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        __m512d fy = _mm512_roundscale_pd(sy[k], _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        __m256 ax = _mm512_cvtpd_ps(_mm512_sub_pd(sx[k], fx)), ay = _mm512_cvtpd_ps(_mm512_sub_pd(sy[k], fy));
        _mm256_storeu_si256((__m256i *)(base + i),
                            _mm256_add_epi32(_mm256_mullo_epi32(_mm512_cvttpd_epi32(fy), wi), _mm512_cvttpd_epi32(fx)));
        _mm256_storeu_ps(wts + i, _mm256_sub_ps(onef, ax));
        _mm256_storeu_ps(wts + wo + i, ax);
        _mm256_storeu_ps(wts + 2 * wo + i, _mm256_sub_ps(onef, ay));
        _mm256_storeu_ps(wts + 3 * wo + i, ay);
        _mm256_storeu_ps(wts + 4 * wo + i, minus);
        _mm256_storeu_ps(wts + 5 * wo + i, onef);
        _mm256_storeu_ps(wts + 6 * wo + i, minus);
        _mm256_storeu_ps(wts + 7 * wo + i, onef);
        _mm512_storeu_pd(pos + i, sx[k]);
        _mm512_storeu_pd(pos + wo + i, sy[k]);
        _mm512_storeu_pd(pos + 2 * wo + i, inv[k]);
        _mm512_storeu_pd(fac + i, one);
        _mm512_storeu_pd(fac + wo + i, one);
    }
    return 1;
}
#define DERIV16_F32(...) deriv16_f32_avx512(__VA_ARGS__)
#define HAVE_DERIV16_F32 have_avx512vl()
/* The backward's gradients of the positions (blocks_f32 + gradient_row_f32 over the channels)
 * 16 outputs at a time, the blocks read as corners16_f32_avx512 reads them and used
 * in registers: gxs, gys of the first wo - wo % 16 outputs (returned), the same operations in
 * the same order (channels in turn), so the same bits. wts: the 8 rows of row_f32 (weights,
 * then derivatives), wo values apart; channel c's gradient row at grad + c gsc. */
__attribute__((target("avx512f"))) static int64_t grad_rows_f32_avx512(
    const float *img, int64_t channels, int64_t plane, int64_t w, int64_t wo, const int32_t *base,
    const float *grad, int64_t gsc, const float *wts, float *gxs, float *gys) {
    int64_t x = 0;
    for (; x + 16 <= wo; x += 16) {
        __m256i i0 = _mm256_loadu_si256((const __m256i *)(base + x)), i1 = _mm256_loadu_si256((const __m256i *)(base + x + 8));
        const Windows16 win = windows16(join16(i0, i1), w, plane);
        const __m512 a0 = _mm512_loadu_ps(wts + x), a1 = _mm512_loadu_ps(wts + wo + x);
        const __m512 b0 = _mm512_loadu_ps(wts + 2 * wo + x), b1 = _mm512_loadu_ps(wts + 3 * wo + x);
        const __m512 da0 = _mm512_loadu_ps(wts + 4 * wo + x), da1 = _mm512_loadu_ps(wts + 5 * wo + x);
        const __m512 db0 = _mm512_loadu_ps(wts + 6 * wo + x), db1 = _mm512_loadu_ps(wts + 7 * wo + x);
        __m512 gx = _mm512_setzero_ps(), gy = _mm512_setzero_ps();
        for (int64_t c = 0; c < channels; ++c) {
            __m512 v[4];
            corners16_f32_avx512(img + c * plane, w, &win, i0, i1, v);
            const __m512 v00 = v[0], v01 = v[1], v10 = v[2], v11 = v[3];
            __m512 g = _mm512_loadu_ps(grad + c * gsc + x);
            __m512 top = _mm512_add_ps(_mm512_mul_ps(a0, v00), _mm512_mul_ps(a1, v01));
            __m512 bot = _mm512_add_ps(_mm512_mul_ps(a0, v10), _mm512_mul_ps(a1, v11));
            __m512 dtop = _mm512_add_ps(_mm512_mul_ps(da0, v00), _mm512_mul_ps(da1, v01));
            __m512 dbot = _mm512_add_ps(_mm512_mul_ps(da0, v10), _mm512_mul_ps(da1, v11));
            gx = _mm512_add_ps(gx, _mm512_mul_ps(g, _mm512_add_ps(_mm512_mul_ps(b0, dtop), _mm512_mul_ps(b1, dbot))));
            gy = _mm512_add_ps(gy, _mm512_mul_ps(g, _mm512_add_ps(_mm512_mul_ps(db0, top), _mm512_mul_ps(db1, bot))));
        }
        _mm512_storeu_ps(gxs + x, gx);
        _mm512_storeu_ps(gys + x, gy);
    }
    return x;
}
#define GRAD_ROWS_F32(...) (have_avx512() ? grad_rows_f32_avx512(__VA_ARGS__) : 0)
/* unpack_f32 16 pixels at a time: the first nc lanes of pk's pixels [0, plane - plane % 16)
 * (returned) into the planes g + k plane, by permutes (moves only, so the same bits), and those
 * pixels of pk zeroed. */
__attribute__((target("avx512f"))) static int64_t unpack_f32_avx512(float *pk, float *g, int64_t plane, int nc) {
    const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i even32 = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd32 = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512 zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= plane; i += 16) {
        float *p = pk + 4 * i;
        __m512d v0 = _mm512_loadu_pd((const double *)p), v1 = _mm512_loadu_pd((const double *)(p + 16));
        __m512d v2 = _mm512_loadu_pd((const double *)(p + 32)), v3 = _mm512_loadu_pd((const double *)(p + 48));
        __m512 lo01 = _mm512_castpd_ps(_mm512_permutex2var_pd(v0, even, v1));
        __m512 lo23 = _mm512_castpd_ps(_mm512_permutex2var_pd(v2, even, v3));
        _mm512_storeu_ps(g + i, _mm512_permutex2var_ps(lo01, even32, lo23));
        _mm512_storeu_ps(g + plane + i, _mm512_permutex2var_ps(lo01, odd32, lo23));
        if (nc > 2) {
            __m512 hi01 = _mm512_castpd_ps(_mm512_permutex2var_pd(v0, odd, v1));
            __m512 hi23 = _mm512_castpd_ps(_mm512_permutex2var_pd(v2, odd, v3));
            _mm512_storeu_ps(g + 2 * plane + i, _mm512_permutex2var_ps(hi01, even32, hi23));
            if (nc > 3) _mm512_storeu_ps(g + 3 * plane + i, _mm512_permutex2var_ps(hi01, odd32, hi23));
        }
        _mm512_storeu_ps(p, zero);
        _mm512_storeu_ps(p + 16, zero);
        _mm512_storeu_ps(p + 32, zero);
        _mm512_storeu_ps(p + 48, zero);
    }
    return i;
}
/* products_row_f32 (x from 0) and the interleaving of scatter_packed_f32 for nc (2 to 4) channels,
 * 16 outputs at a time in registers: the left columns interleaved into ib (top at ib + 4 x,
 * bottom at ib + 4 (wo + x)), the right columns into buf's rows (tr, br of each channel, for the
 * ends); each carried column recomputes the previous output's right value as products_row_f32
 * computes it, so the same bits. Returns how many outputs it did (a multiple of 16). */
__attribute__((target("avx512f"))) static int64_t products_packed_f32_avx512(
    const float *gr, int64_t gsc, int nc, int64_t wo, const int32_t *base, const float *wx0, const float *wx1,
    const float *wy0, const float *wy1, float *buf, float *ib) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i ulo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), uhi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    const __m512 zero = _mm512_setzero_ps();
    const __m512i one = _mm512_set1_epi32(1);
    int64_t x = 0;
    for (; x + 16 <= wo; x += 16) {
        const __mmask16 pm = x ? 0xFFFF : 0xFFFE; /* the previous output (none before x = 0) */
        __m512i b = _mm512_loadu_si512((const void *)(base + x));
        __m512i bp = _mm512_maskz_loadu_epi32(pm, base + x - 1);
        __mmask16 carry = _mm512_mask_cmpeq_epi32_mask(pm, b, _mm512_add_epi32(bp, one));
        __m512 a0 = _mm512_loadu_ps(wx0 + x), a1 = _mm512_loadu_ps(wx1 + x);
        __m512 c0 = _mm512_loadu_ps(wy0 + x), c1 = _mm512_loadu_ps(wy1 + x);
        __m512 a1p = _mm512_maskz_loadu_ps(pm, wx1 + x - 1), c0p = _mm512_maskz_loadu_ps(pm, wy0 + x - 1);
        __m512 c1p = _mm512_maskz_loadu_ps(pm, wy1 + x - 1);
        __m512 tl[4] = {zero, zero, zero, zero}, bl[4] = {zero, zero, zero, zero};
        for (int k = 0; k < nc; ++k) {
            const float *g = gr + k * gsc;
            __m512 gv = _mm512_loadu_ps(g + x), gp = _mm512_maskz_loadu_ps(pm, g + x - 1);
            __m512 top = _mm512_mul_ps(c0, gv), bot = _mm512_mul_ps(c1, gv);
            _mm512_storeu_ps(buf + (4 * k + 2) * wo + x, _mm512_mul_ps(a1, top));
            _mm512_storeu_ps(buf + (4 * k + 3) * wo + x, _mm512_mul_ps(a1, bot));
            __m512 trp = _mm512_mul_ps(a1p, _mm512_mul_ps(c0p, gp)), brp = _mm512_mul_ps(a1p, _mm512_mul_ps(c1p, gp));
            __m512 l = _mm512_mul_ps(a0, top), m = _mm512_mul_ps(a0, bot);
            tl[k] = _mm512_mask_add_ps(l, carry, trp, l);
            bl[k] = _mm512_mask_add_ps(m, carry, brp, m);
        }
        for (int r = 0; r < 2; ++r) {
            const __m512 *v = r ? bl : tl;
            float *out = ib + 4 * (r * wo + x);
            __m512d ab0 = _mm512_castps_pd(_mm512_permutex2var_ps(v[0], lo, v[1]));
            __m512d ab1 = _mm512_castps_pd(_mm512_permutex2var_ps(v[0], hi, v[1]));
            __m512d cd0 = _mm512_castps_pd(_mm512_permutex2var_ps(v[2], lo, v[3]));
            __m512d cd1 = _mm512_castps_pd(_mm512_permutex2var_ps(v[2], hi, v[3]));
            _mm512_storeu_pd((double *)out, _mm512_permutex2var_pd(ab0, ulo, cd0));
            _mm512_storeu_pd((double *)(out + 16), _mm512_permutex2var_pd(ab0, uhi, cd0));
            _mm512_storeu_pd((double *)(out + 32), _mm512_permutex2var_pd(ab1, ulo, cd1));
            _mm512_storeu_pd((double *)(out + 48), _mm512_permutex2var_pd(ab1, uhi, cd1));
        }
    }
    return x;
}
/* The image gradient's ends of an output row (scatter_row_): the outputs x < wo - 1 whose next
 * output does not read block base[x] + 1, in order, then wo - 1; returns how many. ends has
 * room for wo + 16 values. */
__attribute__((target("avx512f"))) static int64_t row_ends_avx512(const int32_t *base, int64_t wo, int32_t *ends) {
    int64_t n = 0, x = 0;
    const __m512i one = _mm512_set1_epi32(1), step = _mm512_set1_epi32(16);
    __m512i xs = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (; x + 17 <= wo; x += 16, xs = _mm512_add_epi32(xs, step)) {
        __m512i b = _mm512_loadu_si512((const void *)(base + x)), b1 = _mm512_loadu_si512((const void *)(base + x + 1));
        __mmask16 e = _mm512_cmpneq_epi32_mask(b1, _mm512_add_epi32(b, one));
        _mm512_storeu_si512((void *)(ends + n), _mm512_maskz_compress_epi32(e, xs));
        n += __builtin_popcount((unsigned)e);
    }
    for (; x + 1 < wo; ++x) {
        ends[n] = (int32_t)x;
        n += base[x + 1] != base[x] + 1;
    }
    ends[n++] = (int32_t)(wo - 1);
    return n;
}
#define ROW_ENDS(...) (have_avx512() ? row_ends_avx512(__VA_ARGS__) : row_ends_plain(__VA_ARGS__))
#define HAVE_PACKED_F32 have_avx512()
#define PRODUCTS_PACKED_F32(...) products_packed_f32_avx512(__VA_ARGS__)
#define UNPACK_F32(...) unpack_f32_avx512(__VA_ARGS__)
#define FUSED_MAT_F32(...) (have_avx512vl() ? fused_mat_f32_avx512(__VA_ARGS__, NULL, NULL) : -1)
/* taps of outputs [xa, xb) of row yo into base, wts (wo values a weight): -1 where not done */
#define TAPS_MAT_F32(m, yo, xa, xb, h, w, padding, base, wts, wo)                                     \
    (have_avx512vl() ? fused_mat_f32_avx512(m, yo, xa, xb, h, w, padding, NULL, NULL, 0, 0, wo, base, wts) : -1)
#define SAMPLE_ROWS_F32(...) (have_avx512() ? sample_rows_f32_avx512(__VA_ARGS__) : sample_rows_f32_plain(__VA_ARGS__))
#else
#define SAMPLE_ROWS_F32(...) sample_rows_f32_plain(__VA_ARGS__)
#define MAT_SUMS_F32(...) ((int64_t)0)
#define FUSED_MAT_F32(...) (-1)
#define TAPS_MAT_F32(...) (-1)
#define DERIV16_F32(...) 0
#define HAVE_DERIV16_F32 0
#define GRAD_ROWS_F32(...) ((int64_t)0)
#define HAVE_PACKED_F32 0
#define ROW_ENDS(...) row_ends_plain(__VA_ARGS__)
#define PRODUCTS_PACKED_F32(...) ((int64_t)0)
#define UNPACK_F32(...) ((int64_t)0)
#endif
#define HAVE_PACKED_F64 0
#define PRODUCTS_PACKED_F64(...) ((int64_t)0)
#define UNPACK_F64(...) ((int64_t)0)
#define SAMPLE_ROWS_F64(...) sample_rows_f64_plain(__VA_ARGS__)
#define MAT_SUMS_F64(...) ((int64_t)0)
#define FUSED_MAT_F64(...) (-1)
#define TAPS_MAT_F64(...) (-1)
#define DERIV16_F64(...) 0
#define GRAD_ROWS_F64(...) ((int64_t)0)
#define HAVE_DERIV16_F64 0

/* Per output row, per pixel x (buffers of wo values each):
 *   pos:  sx, sy (source position before padding, NaN when undefined), 1 / d (matrix, else 0)
 *   base: offset of the top-left of the 2x2 block read, always inside a plane (needs h, w >= 2)
 *   wts:  wx0, wx1 (columns base, base + 1), wy0, wy1 (rows), taps outside the image at 0
 *   der:  d wx0, d wx1 / d px and d wy0, d wy1 / d py (backward only)
 *   fac:  d px / d sx and d py / d sy: the padding's clamps and mirror (backward only) */
#define INTERIOR_BODY(T)                                                                         \
        /* not inside, NaN or infinite (d = 0 included): bad */                                     \
        int in = ((sx > 0.0) | (!deriv & (sx == 0.0))) & (sx < hx)                                  \
               & ((sy > 0.0) | (!deriv & (sy == 0.0))) & (sy < hy);                                 \
        bad |= !in;                                                                                 \
        double cx = in ? sx : 0.0, cy = in ? sy : 0.0;                                              \
        double fx = floor(cx), fy = floor(cy);                                                      \
        T ax = (T)(cx - fx), ay = (T)(cy - fy);                                                     \
        wx0[x] = (T)1 - ax;                                                                         \
        wx1[x] = ax;                                                                                \
        wy0[x] = (T)1 - ay;                                                                         \
        wy1[x] = ay;                                                                                \
        base[x] = (int32_t)fy * wi + (int32_t)fx;                                                   \
        if (deriv) {                                                                                \
            sxs[x] = sx;                                                                            \
            sys[x] = sy;                                                                            \
            invs[x] = inv;                                                                          \
        }

/* The k-th piece a thread takes: (image *p, rows [*y0, *y1)) of images x ceil(ho / band) pieces,
 * the next one of the shared counter *next, or the k-th when next is NULL; 0 when none is left. */
static int take_piece(int64_t *next, int64_t k, int64_t images, int64_t ho, int64_t band, int64_t *p,
                      int64_t *y0, int64_t *y1) {
    if (band < 1) band = 1;
    const int64_t bands = (ho + band - 1) / band;
#if defined(__GNUC__) || defined(__clang__)
    int64_t i = next ? __atomic_fetch_add(next, 1, __ATOMIC_RELAXED) : k;
#else
#error "the sampler's threads share their pieces through GCC/clang atomics"
#endif
    if (i >= images * bands) return 0;
    *p = i / bands;
    *y0 = (i % bands) * band;
    *y1 = *y0 + band < ho ? *y0 + band : ho;
    return 1;
}

/* The image gradient's packed plane, kept by each thread between calls (where POSIX threads
 * are): allocating it afresh each call (1 MiB for a 256^2 image) faulted its pages in every
 * time (about 230 page faults a call at 256^2). The block is all zeros between calls: every
 * image's unpack_ zeroes what the scatter wrote (the whole plane, and nothing beyond it is
 * written). Blocks up to KEEP_BYTES are kept (a 512^2 plane); larger ones are allocated and
 * freed per call. A thread's block is freed when the thread ends. */
#define KEEP_BYTES ((size_t)4 << 20)
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
struct kept_block { void *mem; size_t bytes; };
static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static int kept_ready;
static void kept_free(void *p) {
    struct kept_block *k = p;
    free(k->mem);
    free(k);
}
static void kept_init(void) { kept_ready = pthread_key_create(&kept_key, kept_free) == 0; }
/* bytes of zeros: the calling thread's kept block (grown as needed) when bytes <= KEEP_BYTES,
 * else (or without threads' keys) a new one to give to zeroed_release; NULL: out of memory */
static void *zeroed_take(size_t bytes) {
    if (bytes > KEEP_BYTES) return calloc(bytes, 1);
    pthread_once(&kept_once, kept_init);
    if (!kept_ready) return calloc(bytes, 1);
    struct kept_block *k = pthread_getspecific(kept_key);
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k) return NULL;
        if (pthread_setspecific(kept_key, k)) {
            free(k);
            return calloc(bytes, 1);
        }
    }
    if (k->bytes < bytes) {
        free(k->mem);
        k->mem = calloc(bytes, 1);
        k->bytes = k->mem ? bytes : 0;
    }
    return k->mem;
}
/* gives back zeroed_take(bytes)'s block, all zeros again: kept if it is the thread's kept
 * block, else freed (a block zeroed_take made because the thread's could not be kept) */
static void zeroed_release(void *mem, size_t bytes) {
    struct kept_block *k = bytes > KEEP_BYTES || !kept_ready ? NULL : pthread_getspecific(kept_key);
    if (!k || k->mem != mem) free(mem);
}
#else
static void *zeroed_take(size_t bytes) { return calloc(bytes, 1); }
static void zeroed_release(void *mem, size_t bytes) { (void)bytes; free(mem); }
#endif

/* Four values of a pixel (the packed plane of the image gradient: GCC's and clang's vector types,
 * lane-wise IEEE arithmetic on every architecture), at the alignment of one value. */
typedef float V4_f32 __attribute__((vector_size(4 * sizeof(float)), aligned(sizeof(float))));
typedef double V4_f64 __attribute__((vector_size(4 * sizeof(double)), aligned(sizeof(double))));

/* Prefetches (into L2) the lines of the source that output row yo of a matrix warp will read: at
 * every 16th output, the 2 x 2 block's two rows (16 values of each) in each of the planes
 * (plane_bytes apart, values of elem bytes), clamped into the plane. The rows of a rotated or
 * sheared warp walk across the source's rows, a pattern the hardware prefetchers do not follow,
 * and the three planes of a 256^2 RGB image with its output do not fit in L2: each line came from
 * the last-level cache or memory when first read. The samplers call it PREFETCH_ROWS rows ahead of
 * the row they work on. Rows whose positions stay within PREFETCH_FLAT source rows of each other
 * (near-axis-aligned warps, which the hardware prefetchers stream) are skipped. On the benchmark's
 * 8 x 3 x 256^2 warps (corners moved by up to 10 %) at one thread (AMD EPYC) the forward took
 * 0.75x the time, a rotation by 5 degrees 0.64x, the identity the same; the matrix gradient 0.8x.
 * Two rows ahead into L1 gained less and slowed the identity by 7 %; the image gradient's scatter
 * gained nothing from it. Moves no value: the same results. */
#define PREFETCH_ROWS 8
#define PREFETCH_FLAT 2.0
static inline ALWAYS_INLINE void prefetch_row(const char *data, int64_t elem, int64_t planes, int64_t plane_bytes,
                                              const double *m, int64_t yo, int64_t wo, int64_t h, int64_t w) {
    const double y = (double)yo, xe = (double)(wo - 1);
    const double c0 = m[1] * y + m[2], c1 = m[4] * y + m[5], c2 = m[7] * y + m[8];
    const double s0 = c1 / c2, s1 = (m[3] * xe + c1) / (m[6] * xe + c2);
    if (s1 - s0 < PREFETCH_FLAT && s0 - s1 < PREFETCH_FLAT) return; /* NaN: not skipped */
    const double last = (double)(h * w - w - 16); /* the last block start whose 16 values fit */
    const int64_t lines = (16 * elem + 63) / 64;
    for (int64_t x = 0; x < wo + 15; x += 16) {
        const double xd = (double)(x < wo ? x : wo - 1);
        const double inv = 1.0 / (m[6] * xd + c2);
        double sx = (m[0] * xd + c0) * inv, sy = (m[3] * xd + c1) * inv;
        sx = sx > 0.0 ? (sx < (double)(w - 1) ? sx : (double)(w - 1)) : 0.0; /* NaN: 0 */
        sy = sy > 0.0 ? (sy < (double)(h - 1) ? sy : (double)(h - 1)) : 0.0;
        double b = (double)(int64_t)sy * (double)w + (double)(int64_t)sx;
        b = b < last ? b : last;
        b = b > 0.0 ? b : 0.0;
        const char *q = data + (int64_t)b * elem;
        for (int64_t c = 0; c < planes; ++c, q += plane_bytes)
            for (int64_t k = 0; k < lines; ++k) {
                __builtin_prefetch(q + 64 * k, 0, 1);
                __builtin_prefetch(q + w * elem + 64 * k, 0, 1);
            }
    }
}

#define DEFINE_SAMPLER(T, SUFFIX) \
                                                                                                   \
/* One axis: the block's first index b in [0, n - 2] and the weights (and their derivatives       \
 * with respect to the position) of b and b + 1, from the position p (padded, finite). */        \
static inline ALWAYS_INLINE void axis_##SUFFIX(                                                    \
    double p, int32_t n, int32_t *b, T *w0, T *w1, T *d0, T *d1) {                                 \
    double f0 = floor(p);                                                                          \
    T f = (T)(p - f0);                                                                             \
    int32_t i = (int32_t)f0;                                                                       \
    int32_t c = i < 0 ? 0 : (i > n - 2 ? n - 2 : i);                                               \
    T m0 = (T)((i >= 0) & (i < n)), m1 = (T)((i >= -1) & (i < n - 1)); /* pixels i, i + 1 inside */ \
    T a0 = m0 * ((T)1 - f), a1 = m1 * f;                                                           \
    /* pixel i lands in slot i - c, pixel i + 1 in slot i + 1 - c (slots 0 and 1 only) */          \
    T e0 = (T)(i == c), e1 = (T)(i + 1 == c), e2 = (T)(i == c + 1);                                \
    *w0 = e0 * a0 + e1 * a1;                                                                       \
    *w1 = e2 * a0 + e0 * a1;                                                                       \
    *d0 = e1 * m1 - e0 * m0;                                                                       \
    *d1 = e0 * m1 - e2 * m0;                                                                       \
    *b = c;                                                                                        \
}                                                                                                  \
                                                                                                   \
/* The padded, clamped positions px, py (NaN: undefined) to blocks and weights; mx, my (the  \
 * mirror signs) are multiplied by the clamps' derivatives. Separate restrict arguments: the  \
 * loop vectorises only when the compiler knows the buffers apart. */                         \
static inline ALWAYS_INLINE void taps_##SUFFIX(                                                    \
    int64_t xa, int64_t wo, const double *restrict px, const double *restrict py, double *restrict mx,         \
    double *restrict my, int32_t *restrict base, T *restrict wx0, T *restrict wx1,                 \
    T *restrict wy0, T *restrict wy1, T *restrict dx0, T *restrict dx1, T *restrict dy0,           \
    T *restrict dy1, double lo, double hix, double hiy, int32_t wi, int32_t hi, int der) {         \
    for (int64_t x = xa; x < wo; ++x) {                                                             \
        double sx = px[x], sy = py[x];                                                             \
        int nan = sx != sx; /* undefined: both NaN; read nothing */                                \
        if (der) {                                                                                 \
            mx[x] *= (double)((sx > lo) & (sx < hix));                                             \
            my[x] *= (double)((sy > lo) & (sy < hiy));                                             \
        }                                                                                          \
        double cx = sx > lo ? sx : lo, cy = sy > lo ? sy : lo;                                     \
        cx = cx < hix ? cx : hix;                                                                  \
        cy = cy < hiy ? cy : hiy;                                                                  \
        cx = nan ? -2.0 : cx;                                                                      \
        cy = nan ? -2.0 : cy;                                                                      \
        int32_t bx, by;                                                                            \
        T ex0, ex1, ey0, ey1;                                                                      \
        axis_##SUFFIX(cx, wi, &bx, &wx0[x], &wx1[x], &ex0, &ex1);                                  \
        axis_##SUFFIX(cy, hi, &by, &wy0[x], &wy1[x], &ey0, &ey1);                                  \
        if (der) {                                                                                 \
            dx0[x] = ex0;                                                                          \
            dx1[x] = ex1;                                                                          \
            dy0[x] = ey0;                                                                          \
            dy1[x] = ey1;                                                                          \
        }                                                                                          \
        base[x] = by * wi + bx;                                                                    \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static inline ALWAYS_INLINE void locate_row_##SUFFIX(                                              \
    const T *grid, const double *mats, int64_t p, int64_t yo, int64_t ho, int64_t wo, int64_t xa,  \
    int64_t xb, int64_t h, int64_t w, int padding, double *pos, int32_t *base, T *wts, T *der,      \
    double *fac, int deriv) {                                                                      \
    double *sxs = pos, *sys = pos + wo, *invs = pos + 2 * wo;                                      \
    if (mats) {                                                                                    \
        const double *m = mats + p * 9;                                                            \
        const double c0 = m[1] * (double)yo + m[2], c1 = m[4] * (double)yo + m[5];                 \
        const double c2 = m[7] * (double)yo + m[8];                                                \
        for (int64_t x = xa; x < xb; ++x) {                                                         \
            double d = m[6] * (double)x + c2;                                                      \
            double inv = 1.0 / d;                                                                  \
            double sx = (m[0] * (double)x + c0) * inv, sy = (m[3] * (double)x + c1) * inv;         \
            /* defined: d != 0 and both finite (x - x is 0 only for finite x) */                   \
            int ok = (d != 0.0) & (sx - sx == 0.0) & (sy - sy == 0.0);                             \
            sxs[x] = ok ? sx : NAN;                                                                \
            sys[x] = ok ? sy : NAN;                                                                \
            invs[x] = ok ? inv : 0.0;                                                              \
        }                                                                                          \
    } else {                                                                                       \
        const T *g = grid + (p * ho + yo) * wo * 2;                                                \
        for (int64_t x = xa; x < xb; ++x) {                                                         \
            double sx = (double)g[2 * x], sy = (double)g[2 * x + 1];                               \
            int ok = (sx - sx == 0.0) & (sy - sy == 0.0);                                          \
            sxs[x] = ok ? sx : NAN;                                                                \
            sys[x] = ok ? sy : NAN;                                                                \
            invs[x] = 0.0;                                                                         \
        }                                                                                          \
    }                                                                                              \
    double *mx = fac, *my = fac + wo; /* mirror signs, then the whole factors */                    \
    double *px = sxs, *py = sys;                                                                   \
    if (padding == PAD_REFLECTION) {                                                               \
        px = pos + 3 * wo;                                                                         \
        py = pos + 4 * wo;                                                                         \
        for (int64_t x = xa; x < xb; ++x) {                                                         \
            px[x] = reflect_coord(sxs[x], w, &mx[x]);                                              \
            py[x] = reflect_coord(sys[x], h, &my[x]);                                              \
        }                                                                                          \
    } else if (deriv) {                                                                            \
        for (int64_t x = xa; x < xb; ++x) mx[x] = my[x] = 1.0;                                      \
    }                                                                                              \
    const int border = padding != PAD_ZEROS;                                                       \
    taps_##SUFFIX(xa, xb, px, py, mx, my, base, wts, wts + wo, wts + 2 * wo, wts + 3 * wo, der,        \
                  der + wo, der + 2 * wo, der + 3 * wo, border ? 0.0 : -2.0,                       \
                  border ? (double)w - 1.0 : (double)w + 1.0,                                      \
                  border ? (double)h - 1.0 : (double)h + 1.0, (int32_t)w, (int32_t)h, deriv);      \
}                                                                                                  \
                                                                                                   \
/* The fast path of a piece [xa, xb) of a row (positions from the matrix or the grid, no reflection): \
 * when every 2 x 2 block read lies inside the image (strictly, when deriv), padding, masks and     \
 * clamps change nothing, and the blocks, weights (and with deriv, positions, derivatives and       \
 * factors) are written here with the general path's arithmetic, to the same bits. Returns 1 when   \
 * some position is not inside: then locate_row_ redoes the piece. */                              \
static inline ALWAYS_INLINE int interior_##SUFFIX(                                                 \
    const T *grid, const double *mats, int64_t p, int64_t yo, int64_t ho, int64_t wo, int64_t xa,   \
    int64_t xb, int64_t h, int64_t w, double *restrict sxs, double *restrict sys,                   \
    double *restrict invs, int32_t *restrict base, T *restrict wx0, T *restrict wx1,                \
    T *restrict wy0, T *restrict wy1, int deriv) {                                                  \
    const double hx = (double)w - 1.0, hy = (double)h - 1.0;                                       \
    const int32_t wi = (int32_t)w;                                                                  \
    int bad = 0;                                                                                    \
    const double *m = mats ? mats + p * 9 : NULL;                                                   \
    const T *g = mats ? NULL : grid + (p * ho + yo) * wo * 2;                                       \
    const double c0 = m ? m[1] * (double)yo + m[2] : 0.0, c1 = m ? m[4] * (double)yo + m[5] : 0.0;  \
    const double c2 = m ? m[7] * (double)yo + m[8] : 0.0;                                           \
    if (m) {                                                                                        \
        for (int64_t x = xa; x < xb; ++x) {                                                         \
            double d = m[6] * (double)x + c2;                                                       \
            double inv = 1.0 / d;                                                                   \
            double sx = (m[0] * (double)x + c0) * inv, sy = (m[3] * (double)x + c1) * inv;          \
            INTERIOR_BODY(T)                                                                        \
        }                                                                                           \
    } else {                                                                                        \
        for (int64_t x = xa; x < xb; ++x) {                                                         \
            double sx = (double)g[2 * x], sy = (double)g[2 * x + 1], inv = 0.0;                     \
            INTERIOR_BODY(T)                                                                        \
        }                                                                                           \
    }                                                                                               \
    return bad;                                                                                     \
}                                                                                                   \
                                                                                                    \
/* Inside the image the weights' derivatives are -1, 1 and the padding's factors 1. */           \
static inline ALWAYS_INLINE void unit_factors_##SUFFIX(int64_t wo, int64_t xa, int64_t xb, T *der, double *fac) { \
    for (int64_t x = xa; x < xb; ++x) {                                                             \
        der[x] = (T)-1;                                                                             \
        der[wo + x] = (T)1;                                                                         \
        der[2 * wo + x] = (T)-1;                                                                    \
        der[3 * wo + x] = (T)1;                                                                     \
        fac[x] = fac[wo + x] = 1.0;                                                                 \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Blocks and weights of output row yo (and with deriv, what the backward needs): the fast path  \
 * piece by piece, the general one where it does not apply. */                                     \
static inline ALWAYS_INLINE void row_##SUFFIX(                                                     \
    const T *grid, const double *mats, int64_t p, int64_t yo, int64_t ho, int64_t wo, int64_t h,    \
    int64_t w, int padding, double *pos, int32_t *base, T *wts, T *der, double *fac, int deriv) {   \
    if (padding == PAD_REFLECTION) {                                                                \
        locate_row_##SUFFIX(grid, mats, p, yo, ho, wo, 0, wo, h, w, padding, pos, base, wts, der,   \
                            fac, deriv);                                                            \
        return;                                                                                     \
    }                                                                                               \
    for (int64_t xa = 0; xa < wo; xa += 32) {                                                       \
        int64_t xb = xa + 32 < wo ? xa + 32 : wo;                                                   \
        if (interior_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, pos, pos + wo, pos + 2 * wo, \
                              base, wts, wts + wo, wts + 2 * wo, wts + 3 * wo, deriv)) {            \
            locate_row_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, padding, pos, base, wts,   \
                                der, fac, deriv);                                                   \
        } else if (deriv) {                                                                         \
            unit_factors_##SUFFIX(wo, xa, xb, der, fac);                                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* d out / d (px, py) of one channel's row, added to gx, gy: restrict arguments, so that it  \
 * vectorises. */                                                                              \
static inline ALWAYS_INLINE void gradient_row_##SUFFIX(                                            \
    int64_t wo, const T *restrict v00, const T *restrict v01, const T *restrict v10,               \
    const T *restrict v11, const T *restrict gr, const T *restrict a0, const T *restrict a1,       \
    const T *restrict b0, const T *restrict b1, const T *restrict da0, const T *restrict da1,      \
    const T *restrict db0, const T *restrict db1, T *restrict gx, T *restrict gy) {                \
    for (int64_t x = 0; x < wo; ++x) {                                                             \
        T top = a0[x] * v00[x] + a1[x] * v01[x], bot = a0[x] * v10[x] + a1[x] * v11[x];            \
        T dtop = da0[x] * v00[x] + da1[x] * v01[x], dbot = da0[x] * v10[x] + da1[x] * v11[x];      \
        gx[x] += gr[x] * (b0[x] * dtop + b1[x] * dbot);                                            \
        gy[x] += gr[x] * (db0[x] * top + db1[x] * bot);                                            \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* One output row's gradient gr (nc channels, gr + k gsc) times each block's four weights, into     \
 * buf (4 rows of wo values a channel: top left, bottom left, top right, bottom right). Where the   \
 * next output reads the next block (b + 1: most of them), its left column is this one's right      \
 * column: the contributions to that column are summed here (right + left, in rows the compiler     \
 * vectorises), so that most outputs then write two values (top and bottom left) instead of         \
 * four; the right columns of the others (ends: the outputs x whose next does not read block        \
 * base[x] + 1) are written after. The order of the additions depends on the row's blocks only:     \
 * the same bits on every path and thread count. */                                                 \
static inline ALWAYS_INLINE void products_row_##SUFFIX(                                            \
    const T *restrict gr, int64_t gsc, const int nc, int64_t xa, int64_t wo, const int32_t *restrict base, \
    const T *restrict wx0, const T *restrict wx1, const T *restrict wy0, const T *restrict wy1,     \
    T *restrict buf) {                                                                              \
    for (int k = 0; k < nc; ++k) {                                                                  \
        const T *restrict g = gr + k * gsc;                                                         \
        T *restrict tl = buf + 4 * k * wo, *restrict bl = tl + wo, *restrict tr = bl + wo;          \
        T *restrict br = tr + wo;                                                                   \
        for (int64_t x = xa; x < wo; ++x) {                                                        \
            T top = wy0[x] * g[x], bot = wy1[x] * g[x];                                            \
            tl[x] = wx0[x] * top;                                                                   \
            tr[x] = wx1[x] * top;                                                                   \
            bl[x] = wx0[x] * bot;                                                                   \
            br[x] = wx1[x] * bot;                                                                   \
        }                                                                                           \
        for (int64_t x = xa > 1 ? xa : 1; x < wo; ++x) {                                           \
            int carry = base[x] == base[x - 1] + 1;                                                \
            tl[x] = carry ? tr[x - 1] + tl[x] : tl[x];                                              \
            bl[x] = carry ? br[x - 1] + bl[x] : bl[x];                                              \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* Adds one output row's gradient (products_row_'s) into the nc planes gi + k plane: the left       \
 * columns of every output, then the right columns of the n ends. buf: 4 nc wo values. */           \
static inline ALWAYS_INLINE void scatter_row_##SUFFIX(                                              \
    T *restrict gi, int64_t plane, const T *restrict gr, int64_t gsc, const int nc, int64_t w,      \
    int64_t wo, const int32_t *restrict base, const int32_t *restrict ends, int64_t n,              \
    const T *restrict wx0, const T *restrict wx1, const T *restrict wy0, const T *restrict wy1,     \
    T *restrict buf) {                                                                             \
    products_row_##SUFFIX(gr, gsc, nc, 0, wo, base, wx0, wx1, wy0, wy1, buf);                      \
    for (int64_t x = 0; x < wo; ++x) {                                                             \
        const int64_t b = base[x];                                                                 \
        for (int k = 0; k < nc; ++k) {                                                             \
            gi[k * plane + b] += buf[4 * k * wo + x];                                               \
            gi[k * plane + b + w] += buf[(4 * k + 1) * wo + x];                                     \
        }                                                                                           \
    }                                                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                               \
        const int64_t x = ends[i], b = base[x];                                                     \
        for (int k = 0; k < nc; ++k) {                                                              \
            gi[k * plane + b + 1] += buf[(4 * k + 2) * wo + x];                                     \
            gi[k * plane + b + w + 1] += buf[(4 * k + 3) * wo + x];                                 \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* scatter_row_ for 2 to 4 channels into one packed plane pk (a vector of 4 per pixel, the         \
 * channels in its first nc lanes): one vector add per written pixel for all channels instead      \
 * of one scalar add per channel. The left columns' products come interleaved (ib: 2 wo vectors,   \
 * top then bottom; 16 outputs at a time in registers where it can, products_row_ for the rest),   \
 * the lanes added are the planes' values in the planes' order, so the same bits; unpack_ moves    \
 * the sums into the planes. buf: 16 wo values (the right columns of the ends are read there). */  \
static inline ALWAYS_INLINE void scatter_packed_##SUFFIX(                                           \
    V4_##SUFFIX *restrict pk, const T *restrict gr, int64_t gsc, const int nc, int64_t w,           \
    int64_t wo, const int32_t *restrict base, const int32_t *restrict ends, int64_t n,              \
    const T *restrict wx0, const T *restrict wx1, const T *restrict wy0, const T *restrict wy1,     \
    T *restrict buf, V4_##SUFFIX *restrict ib) {                                                    \
    const int64_t x0 = PRODUCTS_PACKED_##SUFFIX(gr, gsc, nc, wo, base, wx0, wx1, wy0, wy1, buf, (T *)ib); \
    products_row_##SUFFIX(gr, gsc, nc, x0, wo, base, wx0, wx1, wy0, wy1, buf);                     \
    const T *restrict t0 = buf, *restrict t1 = buf + 4 * wo, *restrict t2 = buf + 8 * wo;          \
    const T *restrict t3 = buf + 12 * wo;                                                          \
    for (int64_t x = x0; x < wo; ++x) {                                                            \
        ib[x] = (V4_##SUFFIX){t0[x], t1[x], nc > 2 ? t2[x] : (T)0, nc > 3 ? t3[x] : (T)0};         \
        ib[wo + x] = (V4_##SUFFIX){t0[wo + x], t1[wo + x], nc > 2 ? t2[wo + x] : (T)0,             \
                                   nc > 3 ? t3[wo + x] : (T)0};                                    \
    }                                                                                              \
    V4_##SUFFIX *pkw = pk + w; /* the lower row: one address computation for both */               \
    for (int64_t x = 0; x < wo; ++x) {                                                             \
        const int64_t b = base[x];                                                                 \
        pk[b] += ib[x];                                                                            \
        pkw[b] += ib[wo + x];                                                                      \
    }                                                                                              \
    for (int64_t i = 0; i < n; ++i) {                                                               \
        const int64_t x = ends[i], b = base[x];                                                     \
        const int64_t r = 2 * wo + x, s = 3 * wo + x;                                               \
        pk[b + 1] += (V4_##SUFFIX){t0[r], t1[r], nc > 2 ? t2[r] : (T)0, nc > 3 ? t3[r] : (T)0};     \
        pk[b + w + 1] += (V4_##SUFFIX){t0[s], t1[s], nc > 2 ? t2[s] : (T)0, nc > 3 ? t3[s] : (T)0}; \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The packed plane's sums into the nc planes gi + k plane (every pixel written: no zeroing of      \
 * gi needed), and pk zeroed again for the next image. */                                           \
static inline ALWAYS_INLINE void unpack_##SUFFIX(                                                   \
    V4_##SUFFIX *restrict pk, T *restrict gi, int64_t plane, const int nc) {                        \
    T *restrict g0 = gi, *restrict g1 = gi + plane, *restrict g2 = gi + 2 * plane;                  \
    T *restrict g3 = gi + 3 * plane;                                                                \
    const V4_##SUFFIX zero = {0, 0, 0, 0};                                                          \
    for (int64_t i = UNPACK_##SUFFIX((T *)pk, gi, plane, nc); i < plane; ++i) {                    \
        V4_##SUFFIX v = pk[i];                                                                     \
        g0[i] = v[0];                                                                               \
        g1[i] = v[1];                                                                               \
        if (nc > 2) g2[i] = v[2];                                                                   \
        if (nc > 3) g3[i] = v[3];                                                                   \
        pk[i] = zero;                                                                               \
    }                                                                                               \
}                                                                                                   \
                                                                                                   \
/* Bilinear samples of the C planes of images [0, images), in pieces of (image p, output rows  \
 * [y0, y0 + band)) taken in turn from *next (a counter shared by the threads that run the call  \
 * at once, starting at 0; NULL: every piece, in order):                                           \
 * out (B, C, ho, wo) from img (B, C, h, w), both contiguous, h, w >= 2; positions from grid      \
 * (B, ho, wo, 2) when mats is NULL, else from mats (B, 3, 3): (x, y) = (n0, n1) * (1 / n2),      \
 * n_i = M[i][0] xo + (M[i][1] yo + M[i][2]) in double. Undefined positions (n2 = 0, not         \
 * finite) read nothing. Returns 0, 1 when out of memory. */                                     \
CPU_CLONES                                                                                         \
int warp_bilinear_##SUFFIX(                                                                        \
    const T *img, T *out, int64_t *next, int64_t images, int64_t band, int64_t channels,           \
    int64_t h, int64_t w, int64_t ho, int64_t wo, const T *grid, const double *mats, int padding) { \
    int32_t *base = malloc(sizeof(int32_t) * (wo + 1));                                            \
    T *wts = malloc(sizeof(T) * 8 * (wo + 1));                                                     \
    double *pos = malloc(sizeof(double) * 7 * (wo + 1));                                           \
    if (!base || !wts || !pos) { free(base); free(wts); free(pos); return 1; }                     \
    const T *wx0 = wts, *wx1 = wts + wo, *wy0 = wts + 2 * wo, *wy1 = wts + 3 * wo;                 \
    int64_t p, y0, y1;                                                                             \
    for (int64_t k = 0; take_piece(next, k, images, ho, band, &p, &y0, &y1); ++k) {                \
        const T *src = img + p * channels * h * w;                                                 \
        for (int64_t yo = y0; yo < y1; ++yo) {                                                     \
            T *dst = out + (p * channels * ho + yo) * wo;                                          \
            if (!mats || padding == PAD_REFLECTION) {                                              \
                row_##SUFFIX(grid, mats, p, yo, ho, wo, h, w, padding, pos, base, wts, wts + 4 * wo,   \
                             pos + 5 * wo, 0);                                                     \
                SAMPLE_ROWS_##SUFFIX(src, dst, channels, h * w, ho * wo, w, wo, base, wx0, wx1, wy0, wy1); \
                continue;                                                                          \
            }                                                                                      \
            if (yo + PREFETCH_ROWS < ho)                                                          \
                prefetch_row((const char *)src, sizeof(T), channels, h * w * sizeof(T), mats + p * 9,  \
                             yo + PREFETCH_ROWS, wo, h, w);                                        \
            /* positions and samples in one pass where it applies (-1: not here), the rest      \
             * (the last wo % 16 outputs) in pieces of 32 as in row_ */                            \
            int64_t xa = FUSED_MAT_##SUFFIX(mats + p * 9, yo, 0, wo & ~(int64_t)15, h, w, padding, src, dst, \
                                            channels, h * w, ho * wo) < 0 ? 0 : wo & ~(int64_t)15;  \
            for (; xa < wo; xa += 32) {                                                            \
                int64_t xb = xa + 32 < wo ? xa + 32 : wo;                                          \
                if (interior_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, pos, pos + wo, pos + 2 * wo, \
                                      base, wts, wts + wo, wts + 2 * wo, wts + 3 * wo, 0))        \
                    locate_row_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, padding, pos, base, wts, \
                                        wts + 4 * wo, pos + 5 * wo, 0);                           \
                SAMPLE_ROWS_##SUFFIX(src, dst + xa, channels, h * w, ho * wo, w, xb - xa, base + xa,    \
                                     wx0 + xa, wx1 + xa, wy0 + xa, wy1 + xa);                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    free(base);                                                                                    \
    free(wts);                                                                                     \
    free(pos);                                                                                     \
    return 0;                                                                                      \
}                                                                                                  \
                                                                                                   \
/* Backward of warp_bilinear, pieces as there (band = ho: whole images, which grad_img and      \
 * grad_mats need: pieces that run at once must not share an image), grad's row of (image p,      \
 * channel c, row y) at grad + p gsb + c gsc + y gsy (unit steps along rows): writes grad_img     \
 * (B, C, h, w; zeroed here, image by image, by the thread that fills it) when not NULL; writes   \
 * grad_grid (B, ho, wo, 2) when not NULL (grid mode); adds into grad_mats (B, 9 doubles, zeroed) \
 * when not NULL (matrix mode). */                                                                 \
CPU_CLONES                                                                                         \
int warp_bilinear_backward_##SUFFIX(                                                               \
    const T *grad, const T *img, T *grad_img, T *grad_grid, double *grad_mats, int64_t *next,      \
    int64_t images, int64_t band, int64_t channels, int64_t h, int64_t w, int64_t ho,              \
    int64_t wo, const T *grid, const double *mats, int padding, int64_t gsb, int64_t gsc,          \
    int64_t gsy) {                                                                                 \
    int32_t *base = malloc(sizeof(int32_t) * (wo + 1));                                            \
    T *wts = malloc(sizeof(T) * 14 * (wo + 1));                                                   \
    double *pos = malloc(sizeof(double) * 7 * (wo + 1));                                           \
    int32_t *ends = grad_img ? malloc(sizeof(int32_t) * (wo + 16)) : NULL;                          \
    /* 3 or 4 channels: through a packed plane (scatter_packed_) up to 2^20 pixels (16 MiB a   \
     * thread; larger planes, whose packed plane is far out of the caches, were slower: 2048^2     \
     * 77 -> 105 ms, where 1024^2 went 9.4 -> 7.7 ms with several images a thread), else (or       \
     * without the memory) in place. Two channels fill half of each 4-lane vector: packed, they    \
     * measured 1.02-1.52x the in-place time (8 x 256^2 to 1 x 1024^2), so they stay in place. */  \
    const size_t pk_bytes = (size_t)(h * w) * sizeof(V4_##SUFFIX);                                 \
    V4_##SUFFIX *pk = grad_img && channels >= 3 && channels <= 4 && HAVE_PACKED_##SUFFIX           \
                      && h * w <= ((int64_t)1 << 20) ? zeroed_take(pk_bytes) : NULL;               \
    const int packed = pk != NULL;                                                                 \
    T *sbuf = grad_img ? malloc(sizeof(T) * 24 * (wo + 1)) : NULL;                                 \
    if (!base || !wts || !pos || (grad_img && (!ends || !sbuf))) {                                 \
        free(base); free(wts); free(pos); free(ends); free(sbuf);                                  \
        if (pk) zeroed_release(pk, pk_bytes);                                                      \
        return 1;                                                                                  \
    }                                                                                              \
    const T *wx0 = wts, *wx1 = wts + wo, *wy0 = wts + 2 * wo, *wy1 = wts + 3 * wo;                 \
    const T *dx0 = wts + 4 * wo, *dx1 = wts + 5 * wo, *dy0 = wts + 6 * wo, *dy1 = wts + 7 * wo;    \
    T *gxs = wts + 8 * wo, *gys = wts + 9 * wo;                                                    \
    T *q00 = wts + 10 * wo, *q01 = wts + 11 * wo, *q10 = wts + 12 * wo, *q11 = wts + 13 * wo;      \
    const double *fx = pos + 5 * wo, *fy = pos + 6 * wo;                                           \
    int want_pos = grad_grid != NULL || grad_mats != NULL;                                         \
    if (grad_img && band < ho) band = ho; /* grad_img sums over rows: whole images only */         \
    if (grad_mats && band < ho) band = ho;                                                         \
    int64_t p, y0, y1;                                                                             \
    for (int64_t k = 0; take_piece(next, k, images, ho, band, &p, &y0, &y1); ++k) {                \
        if (grad_img && !packed)                                                                   \
            memset(grad_img + p * channels * h * w, 0, sizeof(T) * (size_t)(channels * h * w));    \
        for (int64_t yo = y0; yo < y1; ++yo) {                                                     \
            if (want_pos && mats && yo + PREFETCH_ROWS < ho) /* the scatter: no gain measured */  \
                prefetch_row((const char *)(img + p * channels * h * w), sizeof(T), channels,       \
                             h * w * sizeof(T), mats + p * 9, yo + PREFETCH_ROWS, wo, h, w);    \
            /* (deriv a constant in each call: row_ specialises, and its loops vectorise) */      \
            if (want_pos && mats && padding != PAD_REFLECTION && HAVE_DERIV16_##SUFFIX) {        \
                /* row_'s fast path 16 outputs at a time where they all lie inside, else row_'s  \
                 * own pieces (of 16 here) */                                                      \
                for (int64_t xa = 0; xa < wo; xa += 16) {                                          \
                    int64_t xb = xa + 16 < wo ? xa + 16 : wo;                                      \
                    if (xb - xa == 16 && DERIV16_##SUFFIX(mats + p * 9, yo, xa, h, w, wo, pos, base, \
                                                          (T *)wts, pos + 5 * wo))                 \
                        continue;                                                                  \
                    if (interior_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, pos, pos + wo,   \
                                          pos + 2 * wo, base, wts, wts + wo, wts + 2 * wo,         \
                                          wts + 3 * wo, 1))                                        \
                        locate_row_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, padding, pos,  \
                                            base, wts, wts + 4 * wo, pos + 5 * wo, 1);             \
                    else                                                                           \
                        unit_factors_##SUFFIX(wo, xa, xb, wts + 4 * wo, pos + 5 * wo);             \
                }                                                                                  \
            } else if (want_pos) {                                                                 \
                row_##SUFFIX(grid, mats, p, yo, ho, wo, h, w, padding, pos, base, wts, wts + 4 * wo,   \
                             pos + 5 * wo, 1);                                                     \
            } else if (!mats || padding == PAD_REFLECTION) {                                       \
                row_##SUFFIX(grid, mats, p, yo, ho, wo, h, w, padding, pos, base, wts, wts + 4 * wo,   \
                             pos + 5 * wo, 0);                                                     \
            } else {                                                                               \
                /* the image gradient alone: the taps as the forward finds them (16 at a time  \
                 * where it can, -1: not here), the rest in pieces of 32 as in row_ */             \
                int64_t xa = TAPS_MAT_##SUFFIX(mats + p * 9, yo, 0, wo & ~(int64_t)15, h, w, padding, base, \
                                               wts, wo) < 0 ? 0 : wo & ~(int64_t)15;               \
                for (; xa < wo; xa += 32) {                                                        \
                    int64_t xb = xa + 32 < wo ? xa + 32 : wo;                                      \
                    if (interior_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, pos, pos + wo,   \
                                          pos + 2 * wo, base, wts, wts + wo, wts + 2 * wo,         \
                                          wts + 3 * wo, 0))                                        \
                        locate_row_##SUFFIX(grid, mats, p, yo, ho, wo, xa, xb, h, w, padding, pos,  \
                                            base, wts, wts + 4 * wo, pos + 5 * wo, 0);             \
                }                                                                                  \
            }                                                                                      \
            if (grad_img) {                                                                        \
                T *gi = grad_img + p * channels * h * w;                                           \
                const T *gr = grad + p * gsb + yo * gsy;                                           \
                const int64_t plane = h * w;                                                       \
                const int64_t n = ROW_ENDS(base, wo, ends);                                        \
                int64_t c = 0;                                                                     \
                if (packed) {                                                                      \
                    V4_##SUFFIX *ib = (V4_##SUFFIX *)(sbuf + 16 * wo);                             \
                    if (channels == 2)                                                             \
                        scatter_packed_##SUFFIX(pk, gr, gsc, 2, w, wo, base, ends, n, wx0, wx1, wy0, wy1, sbuf, ib); \
                    else if (channels == 3)                                                        \
                        scatter_packed_##SUFFIX(pk, gr, gsc, 3, w, wo, base, ends, n, wx0, wx1, wy0, wy1, sbuf, ib); \
                    else                                                                           \
                        scatter_packed_##SUFFIX(pk, gr, gsc, 4, w, wo, base, ends, n, wx0, wx1, wy0, wy1, sbuf, ib); \
                    c = channels;                                                                  \
                }                                                                                  \
                for (; c + 3 <= channels; c += 3)                                                  \
                    scatter_row_##SUFFIX(gi + c * plane, plane, gr + c * gsc, gsc, 3, w, wo, base, ends, \
                                         n, wx0, wx1, wy0, wy1, sbuf);                             \
                for (; c < channels; ++c)                                                          \
                    scatter_row_##SUFFIX(gi + c * plane, plane, gr + c * gsc, gsc, 1, w, wo, base, ends, \
                                         n, wx0, wx1, wy0, wy1, sbuf);                             \
            }                                                                                      \
            if (want_pos) {                                                                        \
                /* 16 outputs at a time in registers where it can, the rest (x0 on) below */      \
                const int64_t x0 = GRAD_ROWS_##SUFFIX(img + p * channels * h * w, channels, h * w, w, wo, \
                                                      base, grad + p * gsb + yo * gsy, gsc, wts, gxs, gys); \
                const int64_t n0 = wo - x0;                                                        \
                for (int64_t x = x0; x < wo; ++x) gxs[x] = gys[x] = 0;                             \
                for (int64_t c = 0; c < channels && n0 > 0; ++c) {                                 \
                    const T *src = img + (p * channels + c) * h * w;                               \
                    const T *gr = grad + p * gsb + c * gsc + yo * gsy + x0;                         \
                    /* the 2 x 2 blocks into contiguous rows first: the arithmetic vectorises */  \
                    blocks_##SUFFIX(src, w, n0, base + x0, q00, q01, q10, q11);                    \
                    gradient_row_##SUFFIX(n0, q00, q01, q10, q11, gr, wx0 + x0, wx1 + x0, wy0 + x0, \
                                          wy1 + x0, dx0 + x0, dx1 + x0, dy0 + x0, dy1 + x0, gxs + x0, \
                                          gys + x0);                                               \
                }                                                                                  \
            }                                                                                      \
            if (grad_grid) {                                                                       \
                T *gg = grad_grid + (p * ho + yo) * wo * 2;                                        \
                for (int64_t x = 0; x < wo; ++x) {                                                 \
                    gg[2 * x] = (T)((double)gxs[x] * fx[x]);                                       \
                    gg[2 * x + 1] = (T)((double)gys[x] * fy[x]);                                   \
                }                                                                                  \
            }                                                                                      \
            if (grad_mats) {                                                                       \
                /* x = n0 / n2, y = n1 / n2, n = M (xo, yo, 1): per row, sums of q and q xo for     \
                 * q = gx / n2, gy / n2, -(gx x + gy y) / n2; yo and 1 are row constants. */         \
                /* eight partial sums per quantity (lane x mod 8), added up at the end: the     \
                 * loop vectorises, which one running sum (a chain of dependent adds) would not. */ \
                double acc[6][8] = {{0}};                                                          \
                const double *sxs = pos, *sys = pos + wo, *invs = pos + 2 * wo;                    \
                int64_t x = MAT_SUMS_##SUFFIX(wo, gxs, gys, fx, fy, sxs, sys, invs, acc);           \
                for (; x + 8 <= wo; x += 8) {                                                      \
                    for (int k = 0; k < 8; ++k) {                                                  \
                        double inv = invs[x + k], xd = (double)(x + k);                            \
                        double qx = (double)gxs[x + k] * fx[x + k] * inv;                          \
                        double qy = (double)gys[x + k] * fy[x + k] * inv;                          \
                        double sx = inv != 0.0 ? sxs[x + k] : 0.0, sy = inv != 0.0 ? sys[x + k] : 0.0; \
                        double qz = -(qx * sx + qy * sy);                                          \
                        acc[0][k] += qx; acc[1][k] += qy; acc[2][k] += qz;                         \
                        acc[3][k] += qx * xd; acc[4][k] += qy * xd; acc[5][k] += qz * xd;          \
                    }                                                                              \
                }                                                                                  \
                for (; x < wo; ++x) {                                                              \
                    double inv = invs[x], xd = (double)x;                                          \
                    double qx = (double)gxs[x] * fx[x] * inv, qy = (double)gys[x] * fy[x] * inv;   \
                    double sx = inv != 0.0 ? sxs[x] : 0.0, sy = inv != 0.0 ? sys[x] : 0.0;         \
                    double qz = -(qx * sx + qy * sy);                                              \
                    acc[0][0] += qx; acc[1][0] += qy; acc[2][0] += qz;                             \
                    acc[3][0] += qx * xd; acc[4][0] += qy * xd; acc[5][0] += qz * xd;              \
                }                                                                                  \
                double tot[6];                                                                     \
                for (int j = 0; j < 6; ++j)                                                        \
                    tot[j] = ((acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]))                   \
                           + ((acc[j][4] + acc[j][5]) + (acc[j][6] + acc[j][7]));                  \
                double s0 = tot[0], s1 = tot[1], s2 = tot[2], t0 = tot[3], t1 = tot[4], t2 = tot[5]; \
                double *gm = grad_mats + p * 9;                                                    \
                gm[0] += t0; gm[1] += s0 * (double)yo; gm[2] += s0;                                \
                gm[3] += t1; gm[4] += s1 * (double)yo; gm[5] += s1;                                \
                gm[6] += t2; gm[7] += s2 * (double)yo; gm[8] += s2;                                \
            }                                                                                      \
        }                                                                                          \
        if (packed) {                                                                              \
            T *gi = grad_img + p * channels * h * w;                                               \
            if (channels == 2) unpack_##SUFFIX(pk, gi, h * w, 2);                                  \
            else if (channels == 3) unpack_##SUFFIX(pk, gi, h * w, 3);                             \
            else unpack_##SUFFIX(pk, gi, h * w, 4);                                                \
        }                                                                                          \
    }                                                                                              \
    if (pk) zeroed_release(pk, pk_bytes);                                                          \
    free(base);                                                                                    \
    free(wts);                                                                                     \
    free(pos);                                                                                     \
    free(ends);                                                                                    \
    free(sbuf);                                                                                    \
    return 0;                                                                                      \
}

#define SAMPLE_ROWS_f32 SAMPLE_ROWS_F32
#define FUSED_MAT_f32 FUSED_MAT_F32
#define FUSED_MAT_f64 FUSED_MAT_F64
#define TAPS_MAT_f32 TAPS_MAT_F32
#define TAPS_MAT_f64 TAPS_MAT_F64
#define DERIV16_f32 DERIV16_F32
#define GRAD_ROWS_f32 GRAD_ROWS_F32
#define GRAD_ROWS_f64 GRAD_ROWS_F64
#define DERIV16_f64 DERIV16_F64
#define HAVE_DERIV16_f32 HAVE_DERIV16_F32
#define HAVE_DERIV16_f64 HAVE_DERIV16_F64
#define SAMPLE_ROWS_f64 SAMPLE_ROWS_F64
#define MAT_SUMS_f32 MAT_SUMS_F32
#define MAT_SUMS_f64 MAT_SUMS_F64
#define HAVE_PACKED_f32 HAVE_PACKED_F32
#define PRODUCTS_PACKED_f32 PRODUCTS_PACKED_F32
#define PRODUCTS_PACKED_f64 PRODUCTS_PACKED_F64
#define HAVE_PACKED_f64 HAVE_PACKED_F64
#define UNPACK_f32 UNPACK_F32
#define UNPACK_f64 UNPACK_F64
DEFINE_SAMPLER(float, f32)
DEFINE_SAMPLER(double, f64)

/* The sampler's calls run by an OpenMP team: gomp_parallel is GOMP_parallel (what GCC compiles
 * `#pragma omp parallel` to), as PyTorch's libtorch_cpu resolves it: the OpenMP runtime
 * PyTorch already runs its own ops on. Its threads, which PyTorch's last parallel op leaves spinning for a while,
 * then take the pieces at once; threads of another pool would wait for the cores they hold
 * (milliseconds, right after a parallel torch op such as a sum over the output). Every member
 * of the team calls the kernel with the same counter. Returns 1 when some member ran out of
 * memory for its row buffers (the caller raises). */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

#define DEFINE_TEAMS(T, SUFFIX)                                                                    \
struct warp_job_##SUFFIX {                                                                         \
    const T *img, *grad, *grid;                                                                    \
    T *out, *grad_img, *grad_grid;                                                                 \
    double *grad_mats;                                                                             \
    const double *mats;                                                                            \
    int64_t next[2], images, band, channels, h, w, ho, wo, gsb, gsc, gsy;                          \
    int padding, backward, failed;                                                                 \
};                                                                                                 \
static void warp_member_##SUFFIX(void *data) {                                                     \
    struct warp_job_##SUFFIX *j = data;                                                            \
    int code = j->backward                                                                         \
        ? warp_bilinear_backward_##SUFFIX(j->grad, j->img, j->grad_img, j->grad_grid, j->grad_mats, \
                                          j->next, j->images, j->band, j->channels, j->h, j->w,     \
                                          j->ho, j->wo, j->grid, j->mats, j->padding, j->gsb,       \
                                          j->gsc, j->gsy)                                           \
        : warp_bilinear_##SUFFIX(j->img, j->out, j->next, j->images, j->band, j->channels, j->h,    \
                                 j->w, j->ho, j->wo, j->grid, j->mats, j->padding);                 \
    if (code) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);                                   \
}                                                                                                  \
int warp_bilinear_team_##SUFFIX(                                                                   \
    void *gomp_parallel, int64_t threads, const T *img, T *out, int64_t images, int64_t band,      \
    int64_t channels, int64_t h, int64_t w, int64_t ho, int64_t wo, const T *grid,                 \
    const double *mats, int padding) {                                                             \
    struct warp_job_##SUFFIX j = {0};                                                              \
    j.img = img; j.out = out; j.images = images; j.band = band; j.channels = channels;             \
    j.h = h; j.w = w; j.ho = ho; j.wo = wo; j.grid = grid; j.mats = mats; j.padding = padding;     \
    ((gomp_parallel_fn)gomp_parallel)(warp_member_##SUFFIX, &j, (unsigned)threads, 0);             \
    return j.failed;                                                                               \
}                                                                                                  \
int warp_bilinear_backward_team_##SUFFIX(                                                          \
    void *gomp_parallel, int64_t threads, const T *grad, const T *img, T *grad_img, T *grad_grid,  \
    double *grad_mats, int64_t images, int64_t band, int64_t channels, int64_t h, int64_t w,       \
    int64_t ho, int64_t wo, const T *grid, const double *mats, int padding, int64_t gsb,           \
    int64_t gsc, int64_t gsy) {                                                                    \
    struct warp_job_##SUFFIX j = {0};                                                              \
    j.grad = grad; j.img = img; j.grad_img = grad_img; j.grad_grid = grad_grid;                    \
    j.grad_mats = grad_mats; j.images = images; j.band = band; j.channels = channels; j.h = h;     \
    j.w = w; j.ho = ho; j.wo = wo; j.grid = grid; j.mats = mats; j.padding = padding;              \
    j.gsb = gsb; j.gsc = gsc; j.gsy = gsy; j.backward = 1;                                         \
    ((gomp_parallel_fn)gomp_parallel)(warp_member_##SUFFIX, &j, (unsigned)threads, 0);             \
    return j.failed;                                                                               \
}
DEFINE_TEAMS(float, f32)
DEFINE_TEAMS(double, f64)
