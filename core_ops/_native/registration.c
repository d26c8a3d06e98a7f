/* gradcv's fused CPU evaluation of the second-order registration solver's linearisation.
 *
 * Why this file exists: registration/second_order.py evaluates, for every pair of a
 * working set and every proposed homography, the warped source, the photometric fit, the
 * robust residual and the per-pixel products its normal equations are moments of: about
 * 40 elementwise PyTorch passes over the pixels, each of which, on DeTone's 128x128 pairs,
 * costs more in dispatch and memory traffic than its arithmetic. This file does the same
 * arithmetic pair by pair in four passes over planes that stay in cache (sample, fit the
 * photometric model, apply it, residual and products), accumulating the per-pair sums in
 * double. registration/_native_eval.py documents the arguments and calls it; its result
 * equals the PyTorch path's to float rounding, and an identity homography reproduces the
 * source bit for bit (zero residual).
 *
 * Built by setup.py as its own optional plain-C library (gradcv.core_ops._native._registration),
 * loaded with ctypes by core_ops/_native/__init__.py (registration_library()) under the same
 * checks as the filters' kernels. The pairs are taken from a shared counter by the threads
 * of PyTorch's OpenMP team (linearise_f32, given GOMP_parallel) or by the caller's own pool
 * (linearise_shared_f32); when a call has fewer pairs than threads, the team shares the
 * row blocks of its pairs (block_rows) instead, phase by phase (linearise_phase_member).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GRADCV_REGISTRATION_VERSION 4

int gradcv_registration_version(void) { return GRADCV_REGISTRATION_VERSION; }

#include "cpu_clones.h" /* CPU_CLONES: one build, a clone per CPU level */

#if !(defined(__GNUC__) || defined(__clang__))
#error "the linearisation's threads share their pairs through GCC/clang atomics"
#endif

#define LOSS_L2 0
#define LOSS_L1 1
#define LOSS_CHARBONNIER 2
/* Per-pair statistics, in double: the loss numerator sum(inside * err), sum(inside) over
 * pixels and channels, the relaxation numerator sum((robust * eps)^2 * w |g|^2), then the
 * photometric Gram matrix (4 x 4, row-major, the first k x k used) and right-hand side. */
#define STATS 23

struct linearise_job {
    const float *src, *dst, *grad; /* (n, C, h, w), (n, C, h, w), (n, C, 2, h, w) */
    const double *D;               /* (n, 9): G - I, row-major */
    const double *xs, *ys;         /* the level's frame coordinates of its columns, rows */
    double scale_x, scale_y;       /* level pixels per frame unit */
    int64_t n, channels, h, w, terms;
    int loss;
    float eps;
    const float *X, *Y; /* (4, w): x^1..x^4 of the columns; (h, 5): y^0..y^4 of the rows */
    double *moments;    /* (n, 5 + 2 terms, 5, 5): each product's sum_n S(n) y^a x^b */
    double *stats; /* (n, STATS) */
    int64_t *next; /* the next pair (or block) to take, shared by the call's threads */
    int64_t block, blocks; /* rows per block, blocks per pair (block_rows) */
    char *work;            /* the phased evaluation's planes and partial sums (workspace_bytes) */
    int phase, failed;
};

/* Rows per block of a pair's plane. A pair's sums are made block by block (each block's
 * from zero) and the blocks' added in block order, so the numbers depend on the sizes only:
 * the same whether one thread runs the blocks in turn or several share them (when a call
 * has fewer pairs than threads). Planes under BLOCK_MIN_PIXELS are one block; larger ones
 * are cut in blocks of about BLOCK_PIXELS, of at least BLOCK_MIN_ROWS rows, and of at most
 * a quarter of the rows (so at least 4 blocks where the plane has 4 * BLOCK_MIN_ROWS rows,
 * fewer on shorter ones: 20 x 3000 is 2 blocks, a plane of BLOCK_MIN_ROWS rows or fewer one) (each block's column sums of the products, colm_floats, are added to the pair's:
 * about 1 / rows of the block's own work on them). Measured (one evaluation, charbonnier,
 * exposure, B = 1): 192 x 192 planes (4 blocks) took 0.78 ms whole and 0.56 ms in blocks
 * at 2 threads; 512 x 512 ones (16 blocks) 3.36 ms whole and 3.37 ms in blocks at 1 thread
 * (the C call alone). Smaller planes are one block, as the call's threads are one below
 * 2^15 values (registration/_native_eval.py). */
#ifndef BLOCK_PIXELS
#define BLOCK_PIXELS 16384
#endif
#ifndef BLOCK_MIN_PIXELS
#define BLOCK_MIN_PIXELS 32768
#endif
#define BLOCK_MIN_ROWS 16
static int64_t block_rows(int64_t h, int64_t w) {
    if (h * w < BLOCK_MIN_PIXELS) return h;
    int64_t r = (BLOCK_PIXELS + w - 1) / w, quarter = (h + 3) / 4;
    r = r < quarter ? r : quarter;
    r = r > BLOCK_MIN_ROWS ? r : BLOCK_MIN_ROWS;
    return r < h ? r : h;
}

/* Per block, in double: the fit's Gram sums (10) and right-hand side (4); the residual
 * pass's loss numerator, inside count, relaxation numerator, Gram sums and right-hand side
 * (17). Beside them, in float, the block's column sums of the products times y^a
 * (colm_floats): added in block order, then summed over x into the moments in double. */
#define PART_GRAM 0
#define PART_RES 14
#define PART 32 /* 31 used; 32 keeps the planes after them 16-byte aligned, as malloc gives */
static int64_t colm_floats(int64_t w, int64_t terms) { return (15 + 3 * (2 + 2 * terms)) * w; }
/* The first of product q's rows in the column sums: 5 row powers (y^0..y^4) for the
 * products of two gradients (q < 3), 3 (y^0..y^2) for the others (see residual_rows). */
static inline int64_t colm_row(int64_t q) { return q < 3 ? 5 * q : 15 + 3 * (q - 3); }
/* The floats of one thread's row temporaries (see the phases' layouts). */
static int64_t row_floats(int64_t w, int64_t terms) { return (16 + 5 + 2 * terms) * w + 16; }

/* Solves the k x k system (M + ridge I) c = e by Gaussian elimination with partial
 * pivoting (photometric_solve's numbers to rounding); c = 0 where not finite. */
static void photometric_solve(const double *M, const double *e, int64_t k, double *c) {
    double a[4][5] = {{0}};
    double trace = 0.0;
    for (int64_t i = 0; i < k; i++) trace += M[i * 4 + i];
    double ridge = 1e-9 * trace + 1e-30;
    for (int64_t i = 0; i < k; i++) {
        for (int64_t j = 0; j < k; j++) a[i][j] = M[i * 4 + j] + (i == j ? ridge : 0.0);
        a[i][k] = e[i];
    }
    for (int64_t col = 0; col < k; col++) {
        int64_t pivot = col;
        for (int64_t i = col + 1; i < k; i++)
            if (fabs(a[i][col]) > fabs(a[pivot][col])) pivot = i;
        if (pivot != col)
            for (int64_t j = 0; j <= k; j++) {
                double t = a[col][j];
                a[col][j] = a[pivot][j];
                a[pivot][j] = t;
            }
        for (int64_t i = col + 1; i < k; i++) {
            double f = a[i][col] / a[col][col];
            for (int64_t j = col; j <= k; j++) a[i][j] -= f * a[col][j];
        }
    }
    for (int64_t i = k - 1; i >= 0; i--) {
        double s = a[i][k];
        for (int64_t j = i + 1; j < k; j++) s -= a[i][j] * c[j];
        c[i] = s / a[i][i];
    }
    for (int64_t i = 0; i < k; i++)
        if (!isfinite(c[i])) c[i] = 0.0;
}

/* The photometric columns of one row of warped (gain, bias, curve, blur; the first k);
 * pad: w + 2 floats of scratch for the row with its replicated ends. */
static inline void columns_row(const float *up, const float *row, const float *down, int64_t w, int64_t k,
                               float *phi0, float *phi2, float *phi3, float *pad) {
#pragma omp simd
    for (int64_t x = 0; x < w; x++) {
        float v = row[x];
        float c = v - 0.5f;
        phi0[x] = c;
        phi2[x] = c * c;
    }
    if (k > 3) {
        /* ((up + down) + left) + right - 4 v, replicated borders (laplacian()'s order) */
        memcpy(pad + 1, row, sizeof(float) * (size_t)w);
        pad[0] = row[0];
        pad[w + 1] = row[w - 1];
#pragma omp simd
        for (int64_t x = 0; x < w; x++)
            phi3[x] = (((up[x] + down[x]) + pad[x]) + pad[x + 2]) - 4.0f * row[x];
    }
}

/* A pair's planes: warped (C, h, w), fitted (C, h, w; warped itself without a
 * photometric model), inside (h, w). */
struct planes {
    float *warped, *fitted, *inside;
};

static struct planes pair_planes(const struct linearise_job *j, float *base) {
    const int64_t hw = j->h * j->w;
    struct planes p = {base, j->terms ? base + j->channels * hw : base, base + 2 * j->channels * hw};
    return p;
}

/* 1. rows y0..y1 of warped = src at G p (bilinear, border clamp), inside = the position
 * lies in the image */
CPU_CLONES
static void sample_rows(const struct linearise_job *j, int64_t i, int64_t y0, int64_t y1, struct planes P, float *rows) {
    const int64_t C = j->channels, h = j->h, w = j->w, hw = h * w;
    float *warped = P.warped, *inside = P.inside;
    float *wx = rows + 3 * w, *wy = rows + 4 * w;
    int32_t *o00 = (int32_t *)(rows + 5 * w), *dx1 = (int32_t *)(rows + 6 * w), *dy1 = (int32_t *)(rows + 7 * w);
    const double *D = j->D + 9 * i;
    const float *src = j->src + i * C * hw;
    const double cx = 0.5 * (double)(w - 1), cy = 0.5 * (double)(h - 1);
    const double lastx = (double)(w - 1), lasty = (double)(h - 1), right = (double)w - 0.5, bottom = (double)h - 0.5;
    const double scale_x = j->scale_x, scale_y = j->scale_y;
    for (int64_t y = y0; y < y1; y++) {
        const double py = j->ys[y];
        const double ry0 = py * D[1], ry1 = py * D[4], ry2 = py * D[7];
#pragma omp simd
        for (int64_t x = 0; x < w; x++) {
            const double px = j->xs[x];
            double ex = ry0 + (px * D[0] + D[2]), ey = ry1 + (px * D[3] + D[5]), ez = ry2 + (px * D[6] + D[8]);
            const double den0 = 1.0 + ez;
            const double den = den0 > 1e-6 ? den0 : 1.0;
            double sx = (ex - px * ez) / den, sy = (ey - py * ez) / den;
            double ix = (double)x + sx * scale_x, iy = (double)y + sy * scale_y;
            /* outside (or behind the camera, or NaN): sampled at the image centre, as the
             * PyTorch path's grid of zeros is */
            const double in = (den0 > 1e-6 && ix >= -0.5 && ix <= right && iy >= -0.5 && iy <= bottom) ? 1.0 : 0.0;
            ix = in != 0.0 ? ix : cx;
            iy = in != 0.0 ? iy : cy;
            ix = ix > 0.0 ? ix : 0.0;
            ix = ix < lastx ? ix : lastx;
            iy = iy > 0.0 ? iy : 0.0;
            iy = iy < lasty ? iy : lasty;
            const double fx0 = floor(ix), fy0 = floor(iy);
            wx[x] = (float)(ix - fx0);
            wy[x] = (float)(iy - fy0);
            const int32_t x0 = (int32_t)fx0, y0 = (int32_t)fy0;
            o00[x] = y0 * (int32_t)w + x0;
            dx1[x] = fx0 < lastx ? 1 : 0;
            dy1[x] = fy0 < lasty ? (int32_t)w : 0;
            inside[y * w + x] = (float)in;
        }
        /* scalar reads through a pointer: written as indexed reads, GCC vectorises this loop
         * with AVX-512 gathers, which measured slower here (40 pairs of 128², 8.6 -> 9.9 ms) */
        for (int64_t c = 0; c < C; c++) {
            const float *img = src + c * hw;
            float *out = warped + c * hw + y * w;
            for (int64_t x = 0; x < w; x++) {
                const float *p = img + o00[x];
                float a = p[0], b = p[dx1[x]], cc = p[dy1[x]], d = p[dy1[x] + dx1[x]];
                float fx = wx[x], fy = wy[x];
                out[x] = (1.0f - fy) * ((1.0f - fx) * a + fx * b) + fy * ((1.0f - fx) * cc + fx * d);
            }
        }
    }

}

/* 2. rows y0..y1's share of the photometric fit on the inside pixels, ΦᵀMΦ and
 * ΦᵀM (dst - warped): g[0..9] the Gram's upper triangle, g[10..13] the right-hand side */
CPU_CLONES
static void gram_rows(const struct linearise_job *j, int64_t i, int64_t y0, int64_t y1, struct planes P, float *rows, double *g) {
    const int64_t C = j->channels, h = j->h, w = j->w, hw = h * w, k = j->terms;
    const float *warped = P.warped, *inside = P.inside, *dst = j->dst + i * C * hw;
    float *phi0 = rows, *phi2 = rows + w, *phi3 = rows + 2 * w, *lap = rows + 8 * w;
    double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s11 = 0, s12 = 0, s13 = 0, s22 = 0, s23 = 0, s33 = 0;
    double e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    for (int64_t c = 0; c < C; c++) {
        const float *plane = warped + c * hw;
        for (int64_t y = y0; y < y1; y++) {
            const float *row = plane + y * w;
            columns_row(plane + (y > 0 ? y - 1 : 0) * w, row, plane + (y < h - 1 ? y + 1 : h - 1) * w, w, k, phi0, phi2, phi3, lap);
            const float *m = inside + y * w, *t = dst + c * hw + y * w;
            if (k == 2) {
#pragma omp simd reduction(+ : s00, s01, s11, e0, e1)
                for (int64_t x = 0; x < w; x++) {
                    double mm = m[x], p0 = phi0[x], rd = (double)(t[x] - row[x]);
                    s00 += mm * p0 * p0; s01 += mm * p0; s11 += mm;
                    e0 += mm * p0 * rd; e1 += mm * rd;
                }
            } else if (k == 3) {
#pragma omp simd reduction(+ : s00, s01, s02, s11, s12, s22, e0, e1, e2)
                for (int64_t x = 0; x < w; x++) {
                    double mm = m[x], p0 = phi0[x], p2 = phi2[x], rd = (double)(t[x] - row[x]);
                    double m0 = mm * p0, m2 = mm * p2;
                    s00 += m0 * p0; s01 += m0; s02 += m0 * p2; s11 += mm; s12 += m2; s22 += m2 * p2;
                    e0 += m0 * rd; e1 += mm * rd; e2 += m2 * rd;
                }
            } else {
#pragma omp simd reduction(+ : s00, s01, s02, s03, s11, s12, s13, s22, s23, s33, e0, e1, e2, e3)
                for (int64_t x = 0; x < w; x++) {
                    double mm = m[x], p0 = phi0[x], p2 = phi2[x], p3 = phi3[x], rd = (double)(t[x] - row[x]);
                    double m0 = mm * p0, m2 = mm * p2, m3 = mm * p3;
                    s00 += m0 * p0; s01 += m0; s02 += m0 * p2; s03 += m0 * p3;
                    s11 += mm; s12 += m2; s13 += m3;
                    s22 += m2 * p2; s23 += m2 * p3; s33 += m3 * p3;
                    e0 += m0 * rd; e1 += mm * rd; e2 += m2 * rd; e3 += m3 * rd;
                }
            }
        }
    }
    g[0] = s00; g[1] = s01; g[2] = s02; g[3] = s03; g[4] = s11; g[5] = s12; g[6] = s13; g[7] = s22; g[8] = s23; g[9] = s33;
    g[10] = e0; g[11] = e1; g[12] = e2; g[13] = e3;
}

/* The blocks' sums q0..q0+count of a pair's partials (blocks of PART each), added in
 * block order. */
static void add_blocks(const struct linearise_job *j, const double *part, int64_t q0, int64_t count, double *out) {
    const int64_t stride = PART;
    for (int64_t q = 0; q < count; q++) out[q] = part[q0 + q];
    for (int64_t b = 1; b < j->blocks; b++)
        for (int64_t q = 0; q < count; q++) out[q] += part[b * stride + q0 + q];
}

/* The pair's photometric fit from its blocks' Gram sums: Dm the Gram matrix (4 x 4), coef
 * the coefficients (zeros without a photometric model). */
static void solve_pair(const struct linearise_job *j, const double *part, double *Dm, double *coef) {
    memset(Dm, 0, 16 * sizeof(double));
    memset(coef, 0, 4 * sizeof(double));
    if (!j->terms) return;
    double g[14];
    add_blocks(j, part, PART_GRAM, 14, g);
    double sym[16] = {g[0], g[1], g[2], g[3], g[1], g[4], g[5], g[6], g[2], g[5], g[7], g[8], g[3], g[6], g[8], g[9]};
    memcpy(Dm, sym, sizeof sym);
    photometric_solve(Dm, g + 10, j->terms, coef);
}

/* 3. rows y0..y1 of fitted = warped + sum_j c_j phi_j (apply_photometric's order, in float) */
CPU_CLONES
static void fitted_rows(const struct linearise_job *j, int64_t y0, int64_t y1, struct planes P, const double *coef, float *rows) {
    const int64_t C = j->channels, h = j->h, w = j->w, hw = h * w, k = j->terms;
    const float *warped = P.warped;
    float *fitted = P.fitted;
    float *phi0 = rows, *phi2 = rows + w, *phi3 = rows + 2 * w, *lap = rows + 8 * w;
    const float c0 = (float)coef[0], c1 = (float)coef[1], c2 = (float)coef[2], c3 = (float)coef[3];
    for (int64_t c = 0; c < C; c++) {
        const float *plane = warped + c * hw;
        for (int64_t y = y0; y < y1; y++) {
            const float *row = plane + y * w;
            columns_row(plane + (y > 0 ? y - 1 : 0) * w, row, plane + (y < h - 1 ? y + 1 : h - 1) * w, w, k, phi0, phi2, phi3, lap);
            float *out = fitted + c * hw + y * w;
#pragma omp simd
            for (int64_t x = 0; x < w; x++) {
                float s = c0 * phi0[x];
                s = s + c1;
                if (k > 2) s = s + c2 * phi2[x];
                if (k > 3) s = s + c3 * phi3[x];
                out[x] = row[x] + s;
            }
        }
    }
}

/* 4. rows y0..y1's share of the residual, loss, robust weights, ESM gradient and the
 * products' moments, a row at a time in simple loops over row buffers (each vectorises):
 * the 17 sums at part + PART_RES, the column sums into colm (colm_floats). */
CPU_CLONES
static void residual_rows(const struct linearise_job *j, int64_t i, int64_t y0, int64_t y1, struct planes P, float *rows, double *part, float *colm) {
    const int64_t C = j->channels, h = j->h, w = j->w, hw = h * w, k = j->terms;
    const int64_t K = 5 + 2 * k;
    const float *warped = P.warped, *fitted = P.fitted, *inside = P.inside;
    const float *dst = j->dst + i * C * hw, *grad = j->grad + i * C * 2 * hw;
    float *phi0 = rows, *phi2 = rows + w, *phi3 = rows + 2 * w, *lap = rows + 8 * w;
    /* 4. residual, loss, robust weights, ESM gradient and the products' planes, a row at a
     * time in simple loops over row buffers (each vectorises). */
    double loss_num = 0, total = 0, relax = 0;
    double s00 = 0, s01 = 0, s02 = 0, s03 = 0, s11 = 0, s12 = 0, s13 = 0, s22 = 0, s23 = 0, s33 = 0;
    double e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    const float eps = j->eps, eps2 = j->eps * j->eps;
    float *fp = rows + 9 * w + 3; /* fitted's row with its replicated ends at -1 and w */
    float *rr = fp + w + 1, *gxr = rr + w, *gyr = gxr + w, *wtr = gyr + w, *wgxr = wtr + w, *wgyr = wgxr + w;
    float *prod = wgyr + w;               /* (K, w): the row's products, summed over channels */
    /* colm (colm_floats): the block's sum over rows of y^a times the products, set by its first row */
    for (int64_t y = y0; y < y1; y++) {
        for (int64_t c = 0; c < C; c++) {
            const float *fplane = fitted + c * hw, *wplane = warped + c * hw;
            const float *f = fplane + y * w, *fu = fplane + (y > 0 ? y - 1 : 0) * w, *fd = fplane + (y < h - 1 ? y + 1 : h - 1) * w;
            const float *t = dst + c * hw + y * w, *m = inside + y * w;
            const float *gdx = grad + (c * 2) * hw + y * w, *gdy = grad + (c * 2 + 1) * hw + y * w;
            memcpy(fp, f, sizeof(float) * (size_t)w);
            fp[-1] = f[0];
            fp[w] = f[w - 1];
#pragma omp simd
            for (int64_t x = 0; x < w; x++) {
                rr[x] = f[x] - t[x];
                gxr[x] = ((fp[x + 1] - fp[x - 1]) + gdx[x]) * 0.25f;
                gyr[x] = ((fd[x] - fu[x]) + gdy[x]) * 0.25f;
            }
            if (j->loss == LOSS_CHARBONNIER) {
#pragma omp simd reduction(+ : loss_num, total, relax)
                for (int64_t x = 0; x < w; x++) {
                    float r = rr[x], sq = r * r, root = sqrtf(sq + eps2), in = m[x];
                    float rw = 1.0f / root, wt = in * rw, gx = gxr[x], gy = gyr[x];
                    float wgx = wt * gx, wgy = wt * gy, re = rw * eps;
                    wtr[x] = wt; wgxr[x] = wgx; wgyr[x] = wgy;
                    loss_num += (double)((sq / (root + eps)) * in);
                    total += (double)in;
                    relax += (double)((re * re) * (wgx * gx + wgy * gy));
                }
            } else if (j->loss == LOSS_L1) {
#pragma omp simd reduction(+ : loss_num, total)
                for (int64_t x = 0; x < w; x++) {
                    float r = rr[x], err = fabsf(r), in = m[x];
                    float wt = in * (1.0f / (err > eps ? err : eps));
                    wtr[x] = wt; wgxr[x] = wt * gxr[x]; wgyr[x] = wt * gyr[x];
                    loss_num += (double)(err * in);
                    total += (double)in;
                }
            } else {
#pragma omp simd reduction(+ : loss_num, total)
                for (int64_t x = 0; x < w; x++) {
                    float r = rr[x], in = m[x];
                    wtr[x] = in; wgxr[x] = in * gxr[x]; wgyr[x] = in * gyr[x];
                    loss_num += (double)((r * r) * in);
                    total += (double)in;
                }
            }
            float *out[13];
            for (int64_t q = 0; q < K; q++) out[q] = prod + q * w;
            if (c == 0) {
#pragma omp simd
                for (int64_t x = 0; x < w; x++) {
                    float wgx = wgxr[x], wgy = wgyr[x], gy = gyr[x], r = rr[x];
                    out[0][x] = wgx * gxr[x]; out[1][x] = wgx * gy; out[2][x] = wgy * gy;
                    out[3][x] = wgx * r; out[4][x] = wgy * r;
                }
            } else {
#pragma omp simd
                for (int64_t x = 0; x < w; x++) {
                    float wgx = wgxr[x], wgy = wgyr[x], gy = gyr[x], r = rr[x];
                    out[0][x] += wgx * gxr[x]; out[1][x] += wgx * gy; out[2][x] += wgy * gy;
                    out[3][x] += wgx * r; out[4][x] += wgy * r;
                }
            }
            if (!k) continue;
            const float *row = wplane + y * w;
            columns_row(wplane + (y > 0 ? y - 1 : 0) * w, row, wplane + (y < h - 1 ? y + 1 : h - 1) * w, w, k, phi0, phi2, phi3, lap);
            /* the products with the columns: gain, bias (the weighted gradient itself), curve, blur */
            const float *col[4] = {phi0, NULL, phi2, phi3};
            for (int64_t q = 0; q < k; q++) {
                float *ox = out[5 + 2 * q], *oy = out[6 + 2 * q];
                const float *p = col[q];
                if (c == 0 && !p) {
                    memcpy(ox, wgxr, sizeof(float) * (size_t)w);
                    memcpy(oy, wgyr, sizeof(float) * (size_t)w);
                } else if (!p) {
#pragma omp simd
                    for (int64_t x = 0; x < w; x++) { ox[x] += wgxr[x]; oy[x] += wgyr[x]; }
                } else if (c == 0) {
#pragma omp simd
                    for (int64_t x = 0; x < w; x++) { ox[x] = wgxr[x] * p[x]; oy[x] = wgyr[x] * p[x]; }
                } else {
#pragma omp simd
                    for (int64_t x = 0; x < w; x++) { ox[x] += wgxr[x] * p[x]; oy[x] += wgyr[x] * p[x]; }
                }
            }
            /* ΦᵀWr, and ΦᵀWΦ where the weights are not the inside mask's */
            if (k == 2) {
#pragma omp simd reduction(+ : s00, s01, s11, e0, e1)
                for (int64_t x = 0; x < w; x++) {
                    double ww = wtr[x], p0 = phi0[x], r = rr[x], w0 = ww * p0;
                    e0 += w0 * r; e1 += ww * r;
                    s00 += w0 * p0; s01 += w0; s11 += ww;
                }
            } else if (k == 3) {
#pragma omp simd reduction(+ : s00, s01, s02, s11, s12, s22, e0, e1, e2)
                for (int64_t x = 0; x < w; x++) {
                    double ww = wtr[x], p0 = phi0[x], p2 = phi2[x], r = rr[x], w0 = ww * p0, w2 = ww * p2;
                    e0 += w0 * r; e1 += ww * r; e2 += w2 * r;
                    s00 += w0 * p0; s01 += w0; s02 += w0 * p2; s11 += ww; s12 += w2; s22 += w2 * p2;
                }
            } else {
#pragma omp simd reduction(+ : s00, s01, s02, s03, s11, s12, s13, s22, s23, s33, e0, e1, e2, e3)
                for (int64_t x = 0; x < w; x++) {
                    double ww = wtr[x], p0 = phi0[x], p2 = phi2[x], p3 = phi3[x], r = rr[x];
                    double w0 = ww * p0, w2 = ww * p2, w3 = ww * p3;
                    e0 += w0 * r; e1 += ww * r; e2 += w2 * r; e3 += w3 * r;
                    s00 += w0 * p0; s01 += w0; s02 += w0 * p2; s03 += w0 * p3; s11 += ww; s12 += w2; s13 += w3;
                    s22 += w2 * p2; s23 += w2 * p3; s33 += w3 * p3;
                }
            }
        }
        /* the row's share of the moments sum_n S(n) y^a x^b: y^a now, x^b at the end. The
         * normal equations read a + b <= 4 of the products of two gradients (0-2) and
         * a + b <= 2 of the others: y^3 and y^4 of those are not made. */
        const float *Y = j->Y + 5 * y;
        const float y1 = Y[1], y2 = Y[2], y3 = Y[3], y4 = Y[4];
        for (int64_t q = 0; q < K; q++) {
            const float *p = prod + q * w;
            float *cm = colm + colm_row(q) * w;
            if (y == y0) {
#pragma omp simd
                for (int64_t x = 0; x < w; x++) {
                    float v = p[x];
                    cm[x] = v;
                    cm[w + x] = v * y1;
                    cm[2 * w + x] = v * y2;
                }
                if (q < 3) {
#pragma omp simd
                    for (int64_t x = 0; x < w; x++) {
                        float v = p[x];
                        cm[3 * w + x] = v * y3;
                        cm[4 * w + x] = v * y4;
                    }
                }
                continue;
            }
#pragma omp simd
            for (int64_t x = 0; x < w; x++) {
                float v = p[x];
                cm[x] += v;
                cm[w + x] += v * y1;
                cm[2 * w + x] += v * y2;
            }
            if (q < 3) { /* a second pass over the row, still in L1 */
#pragma omp simd
                for (int64_t x = 0; x < w; x++) {
                    float v = p[x];
                    cm[3 * w + x] += v * y3;
                    cm[4 * w + x] += v * y4;
                }
            }
        }
    }
    double *r = part + PART_RES;
    r[0] = loss_num; r[1] = total; r[2] = relax;
    r[3] = s00; r[4] = s01; r[5] = s02; r[6] = s03; r[7] = s11; r[8] = s12; r[9] = s13; r[10] = s22; r[11] = s23; r[12] = s33;
    r[13] = e0; r[14] = e1; r[15] = e2; r[16] = e3;
}

/* dst += src, count floats (a block's column sums added to the pair's) */
CPU_CLONES
static void add_colm(float *dst, const float *src, int64_t count) {
#pragma omp simd
    for (int64_t x = 0; x < count; x++) dst[x] += src[x];
}

/* The pair's moments sum_n S(n) y^a x^b from its column sums. */
CPU_CLONES
static void reduce_moments(const struct linearise_job *j, int64_t i, const float *colm) {
    const int64_t w = j->w, K = 5 + 2 * j->terms;
    double *moments = j->moments + i * K * 25;
    for (int64_t q = 0; q < K; q++)
        for (int64_t a = 0; a < 5; a++) {
            double *o = moments + q * 25 + a * 5;
            if (q >= 3 && a >= 3) { /* not made (see residual_rows) */
                o[0] = o[1] = o[2] = o[3] = o[4] = 0.0;
                continue;
            }
            const float *cm = colm + (colm_row(q) + a) * w;
            double m0 = 0, m1 = 0, m2 = 0, m3 = 0, m4 = 0;
#pragma omp simd reduction(+ : m0, m1, m2, m3, m4)
            for (int64_t x = 0; x < w; x++) {
                double v = cm[x];
                m0 += v; m1 += v * j->X[x]; m2 += v * j->X[w + x]; m3 += v * j->X[2 * w + x]; m4 += v * j->X[3 * w + x];
            }
            o[0] = m0; o[1] = m1; o[2] = m2; o[3] = m3; o[4] = m4;
        }
}

/* The pair's moments and statistics from its blocks' sums and its column sums colm (Dm:
 * the fit's Gram matrix). */
static void finish_pair(const struct linearise_job *j, int64_t i, const double *part, const double *Dm, const float *colm) {
    double r[17];
    add_blocks(j, part, PART_RES, 17, r);
    reduce_moments(j, i, colm);
    double *stats = j->stats + i * STATS;
    stats[0] = r[0];
    stats[1] = r[1];
    stats[2] = r[2];
    if (j->loss != LOSS_L2) { /* the reweighted Gram matrix; least squares keeps the fit's (the same weights) */
        double sym[16] = {r[3], r[4], r[5], r[6], r[4], r[7], r[8], r[9], r[5], r[8], r[10], r[11], r[6], r[9], r[11], r[12]};
        memcpy(stats + 3, sym, sizeof sym);
    } else {
        memcpy(stats + 3, Dm, 16 * sizeof(double));
    }
    stats[19] = r[13]; stats[20] = r[14]; stats[21] = r[15]; stats[22] = r[16];
}

static int64_t block_end(const struct linearise_job *j, int64_t b) {
    int64_t y1 = (b + 1) * j->block;
    return y1 < j->h ? y1 : j->h;
}

/* One pair on this thread, its blocks in turn, on scratch: its blocks' partial sums, its
 * planes, the row temporaries, the pair's column sums and a block's. */
static void linearise_pair(struct linearise_job *j, int64_t i, double *part, float *planes, float *rows, float *colm, float *block_colm) {
    const int64_t stride = PART;
    struct planes P = pair_planes(j, planes);
    double Dm[16], coef[4];
    for (int64_t b = 0; b < j->blocks; b++) sample_rows(j, i, b * j->block, block_end(j, b), P, rows);
    if (j->terms)
        for (int64_t b = 0; b < j->blocks; b++) gram_rows(j, i, b * j->block, block_end(j, b), P, rows, part + b * stride + PART_GRAM);
    solve_pair(j, part, Dm, coef);
    if (j->terms)
        for (int64_t b = 0; b < j->blocks; b++) fitted_rows(j, b * j->block, block_end(j, b), P, coef, rows);
    for (int64_t b = 0; b < j->blocks; b++) {
        residual_rows(j, i, b * j->block, block_end(j, b), P, rows, part + b * stride, b ? block_colm : colm);
        if (b) add_colm(colm, block_colm, colm_floats(j->w, j->terms));
    }
    finish_pair(j, i, part, Dm, colm);
}

/* The working set's pairs, taken one at a time from the job's counter until none is left
 * (every thread of a call runs this). Returns 1 when its scratch could not be allocated. */
static int linearise_member(struct linearise_job *j) {
    const int64_t hw = j->h * j->w, parts = j->blocks * PART, cf = colm_floats(j->w, j->terms);
    const int64_t floats = (2 * j->channels + 1) * hw + row_floats(j->w, j->terms) + (j->blocks > 1 ? 2 : 1) * cf;
    double *scratch = malloc(sizeof(double) * (size_t)parts + sizeof(float) * (size_t)floats);
    if (!scratch) return 1;
    float *planes = (float *)(scratch + parts), *rows = planes + (2 * j->channels + 1) * hw;
    float *colm = rows + row_floats(j->w, j->terms), *block_colm = colm + cf;
    for (;;) {
        int64_t i = __atomic_fetch_add(j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->n) break;
        linearise_pair(j, i, scratch, planes, rows, colm, block_colm);
    }
    free(scratch);
    return 0;
}

/* The phased evaluation's workspace: every pair's blocks' partial sums, planes and column
 * sums. */
static int64_t workspace(const struct linearise_job *j, double **part, float **planes, float **colm) {
    const int64_t parts = j->n * j->blocks * PART, plane_floats = j->n * (2 * j->channels + 1) * j->h * j->w;
    if (part) {
        *part = (double *)j->work;
        *planes = (float *)(j->work + sizeof(double) * (size_t)parts);
        *colm = *planes + plane_floats;
    }
    return (int64_t)sizeof(double) * parts + (int64_t)sizeof(float) * (plane_floats + j->n * j->blocks * colm_floats(j->w, j->terms));
}

/* One phase of the phased evaluation, for when a call has fewer pairs than threads: the
 * (pair, block) units of phases 0 (sample), 1 (fit's sums), 2 (fitted) and 3 (residual and
 * moments), or the pairs of phase 4 (the blocks' sums added), taken from the job's counter.
 * Each phase reads what the one before wrote of neighbouring blocks (the Laplacian and the
 * ESM gradient read the rows above and below), so the caller joins the threads between
 * phases. Returns 1 when its row temporaries could not be allocated. */
static int linearise_phase_member(struct linearise_job *j) {
    const int64_t stride = PART, units = j->phase == 4 ? j->n : j->n * j->blocks;
    const int64_t pair_floats = (2 * j->channels + 1) * j->h * j->w, cf = colm_floats(j->w, j->terms);
    double *part;
    float *planes, *colms;
    workspace(j, &part, &planes, &colms);
    if (!j->terms && (j->phase == 1 || j->phase == 2)) return 0;
    float *rows = j->phase == 4 ? NULL : malloc(sizeof(float) * (size_t)row_floats(j->w, j->terms));
    if (j->phase != 4 && !rows) return 1;
    for (;;) {
        int64_t u = __atomic_fetch_add(j->next, 1, __ATOMIC_RELAXED);
        if (u >= units) break;
        double Dm[16], coef[4];
        if (j->phase == 4) {
            float *colm = colms + u * j->blocks * cf;
            for (int64_t b = 1; b < j->blocks; b++) add_colm(colm, colm + b * cf, cf);
            solve_pair(j, part + u * j->blocks * stride, Dm, coef);
            finish_pair(j, u, part + u * j->blocks * stride, Dm, colm);
            continue;
        }
        const int64_t i = u / j->blocks, b = u % j->blocks, y0 = b * j->block, y1 = block_end(j, b);
        struct planes P = pair_planes(j, planes + i * pair_floats);
        double *pp = part + i * j->blocks * stride;
        if (j->phase == 0) {
            sample_rows(j, i, y0, y1, P, rows);
        } else if (j->phase == 1) {
            gram_rows(j, i, y0, y1, P, rows, pp + b * stride + PART_GRAM);
        } else if (j->phase == 2) {
            solve_pair(j, pp, Dm, coef);
            fitted_rows(j, y0, y1, P, coef, rows);
        } else {
            residual_rows(j, i, y0, y1, P, rows, pp + b * stride, colms + u * cf);
        }
    }
    free(rows);
    return 0;
}

static void linearise_team_member(void *data) {
    struct linearise_job *j = data;
    if ((j->work ? linearise_phase_member(j) : linearise_member(j))) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
}

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

/* 1 for sizes the kernel cannot take: a model of one column (the Gram's branches are for
 * 0, 2, 3 and 4), no channel (the moments would be read from unwritten rows), empty planes, or planes of 2^31 values or more (int32 offsets). The
 * caller (registration/_native_eval.py) refuses them with typed errors before this. */
static int check(int64_t n, int64_t channels, int64_t h, int64_t w, int64_t terms) {
    return terms < 0 || terms == 1 || terms > 4 || channels < 1 || h <= 0 || w <= 0 || n < 0 || h * w >= 2147483648LL;
}

#define FILL_JOB                                                                                   \
    struct linearise_job j = {0};                                                                  \
    j.src = src; j.dst = dst; j.grad = grad; j.D = D; j.xs = xs; j.ys = ys;                        \
    j.scale_x = scale_x; j.scale_y = scale_y; j.n = n; j.channels = channels; j.h = h; j.w = w;    \
    j.terms = terms; j.loss = loss; j.eps = (float)eps; j.X = X; j.Y = Y; j.moments = moments;     \
    j.stats = stats; j.block = block_rows(h, w); j.blocks = (h + j.block - 1) / j.block

/* The bytes of workspace linearise_f32's phases take for these sizes, or 0 where a pair is
 * one block (only whole pairs are shared between threads then): what a test reads to know
 * that a plane is cut in blocks. */
int64_t linearise_workspace_bytes(int64_t n, int64_t channels, int64_t h, int64_t w, int64_t terms) {
    if (check(n, channels, h, w, terms)) return 0;
    struct linearise_job j = {0};
    j.n = n; j.channels = channels; j.h = h; j.w = w; j.terms = terms;
    j.block = block_rows(h, w);
    j.blocks = (h + j.block - 1) / j.block;
    return j.blocks > 1 ? workspace(&j, NULL, NULL, NULL) : 0;
}

/* The evaluation of n pairs (see struct linearise_job for the arguments), on `threads`
 * threads of PyTorch's OpenMP team when gomp_parallel (GOMP_parallel) is given, else on
 * this thread alone: whole pairs per thread, or, with fewer pairs than threads and pairs
 * of several blocks, the phases of linearise_phase_member, one team per phase. Returns 1
 * when a thread ran out of memory for its scratch planes (or the sizes are invalid). */
int linearise_f32(void *gomp_parallel, int64_t threads, const float *src, const float *dst, const float *grad,
                  const double *D, const double *xs, const double *ys, double scale_x, double scale_y,
                  int64_t n, int64_t channels, int64_t h, int64_t w, int64_t terms, int loss, double eps,
                  const float *X, const float *Y, double *moments, double *stats) {
    if (check(n, channels, h, w, terms)) return 1;
    if (n == 0) return 0;
    int64_t next = 0;
    FILL_JOB;
    j.next = &next;
    const int whole = n >= threads || j.blocks == 1;
    if (!gomp_parallel || threads <= 1 || (whole && n == 1)) return linearise_member(&j);
    if (whole) {
        ((gomp_parallel_fn)gomp_parallel)(linearise_team_member, &j, (unsigned)(threads < n ? threads : n), 0);
        return j.failed;
    }
    j.work = malloc((size_t)workspace(&j, NULL, NULL, NULL));
    if (!j.work) return 1;
    const int64_t units = n * j.blocks;
    for (j.phase = 0; j.phase < 4 && !j.failed; j.phase++) {
        if (!terms && (j.phase == 1 || j.phase == 2)) continue;
        next = 0;
        ((gomp_parallel_fn)gomp_parallel)(linearise_team_member, &j, (unsigned)(threads < units ? threads : units), 0);
    }
    if (!j.failed) {
        next = 0;
        linearise_phase_member(&j); /* phase 4, on this thread: n additions of a few hundred sums */
    }
    free(j.work);
    return j.failed;
}

/* The same, as one of the threads of the caller's pool: every thread calls it with the
 * same arguments and the same counter `next` (starting at 0), and takes whole pairs from
 * it. The pool does not share a pair's blocks: run as five phases, each a hand-off to the
 * pool and a join, one pair on two threads measured no faster than on one (512^2 and
 * 1024^2), and slower below (192^2: +15-20 %); the blocks' arithmetic is the same, so the
 * bits are the team's. */
int linearise_shared_f32(int64_t *next, const float *src, const float *dst, const float *grad,
                         const double *D, const double *xs, const double *ys, double scale_x, double scale_y,
                         int64_t n, int64_t channels, int64_t h, int64_t w, int64_t terms, int loss, double eps,
                         const float *X, const float *Y, double *moments, double *stats) {
    if (check(n, channels, h, w, terms)) return 1;
    FILL_JOB;
    j.next = next;
    return linearise_member(&j);
}
