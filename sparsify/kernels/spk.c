/* spk.c: sparse-weight x dense-activation kernels for sparsify (see sparsify/kernels/__init__.py).
 *
 * One layout, two knobs. A weight W (rows x cols, fp32) is stored as a *blocked CSR*:
 * rows are cut into panels of P rows, columns into blocks of KB columns, and the nonzeros
 * are ordered by (panel, column block, row, column). ptr has npanels * nkb * P + 1 entries;
 * the nonzeros of row r (in panel p, local row q) inside column block k are
 *     idx/val[ptr[(p * nkb + k) * P + q] .. ptr[(p * nkb + k) * P + q + 1])
 * Plain CSR is the case nkb == 1. Missing rows of the last panel are empty segments.
 *
 * The one compute core (tile_*) computes, for a panel of rows and a tile of T consecutive
 * "columns" of the dense operand (T = NV vectors of VW floats),
 *     Yt[q][0:T] = sum_{j in row q} val[j] * X[off(j) + 0 : off(j) + T]
 * with off(j) = idx[j] * T (matrix product: X is the tile's slice of the activation,
 * transposed and packed contiguously, (cols, T)),
 * or off(j) = colmap[idx[j]] (convolution: X holds shifted input planes, see spk_conv2d).
 * The T outputs of a row live in registers while the row's nonzeros stream by (U groups of
 * accumulators so U * NV independent FMA chains hide the FMA latency); the column blocks
 * keep the slice of X that a block's nonzeros read small enough to stay in L1/L2.
 *
 * Determinism: every output element is computed by one thread in an order fixed by the
 * layout and the batch size alone, so results are bitwise identical for any thread count.
 *
 * Vector code uses GCC/Clang vector extensions: one source that compiles to AVX-512
 * (VW = 16), AVX/AVX2 (VW = 8) or 128-bit SSE/NEON/scalar code (VW = 4).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
#define SPK_ISA "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define VW 8
#define SPK_ISA "avx2+fma"
#elif defined(__AVX__)
#define VW 8
#define SPK_ISA "avx"
#else
#define VW 4
#define SPK_ISA "generic-128bit"
#endif

#define SPK_ABI 9

typedef float vf __attribute__((vector_size(VW * 4)));

static inline vf ldu(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void stu(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* Two-source lane shuffle with constant lane indices (b's lanes are numbered VW..2VW-1). */
typedef int32_t vi __attribute__((vector_size(VW * 4)));
#if defined(__clang__)
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

/* ---- fused activation: y = min(max(y, lo), hi) ---------------------------------------
 * act: NULL (no activation) or {lo, hi}; ReLU is {0, inf}, ReLU6 {0, 6}. A NaN stays NaN (no
 * comparison with it is true), as torch's relu/hardtanh keep it, so a fused layer returns
 * exactly what the layer followed by its activation returns. */
typedef struct {
    float lo, hi;
} span;

static inline span act_span(const float *act) {
    span a = {-__builtin_inff(), __builtin_inff()};
    if (act) {
        a.lo = act[0];
        a.hi = act[1];
    }
    return a;
}

static inline float clamps(float v, span a) {
    v = v < a.lo ? a.lo : v;
    return v > a.hi ? a.hi : v;
}

static inline vf clampv(vf v, span a) {
    const vf lo = (vf){0} + a.lo, hi = (vf){0} + a.hi;
    const vi below = v < lo, above = v > hi;
    v = (vf)(((vi)v & ~below) | ((vi)lo & below));
    return (vf)(((vi)v & ~above) | ((vi)hi & above));
}

/* In-register transpose of the VW x VW block r[0..VW) (r[i] = row i): log2(VW) stages; stage
 * h swaps the off-diagonal h x h blocks of every 2h x 2h block, pairing rows i and i + h.
 * VW * log2(VW) shuffles for VW * VW floats, where a scalar transpose moves them one by one. */
#define TSTAGE(h, ...)                                                                      \
    for (int i = 0; i < VW; i++)                                                            \
        if (!(i & (h))) {                                                                   \
            const vf a = r[i], b = r[i + (h)];                                              \
            __VA_ARGS__                                                                     \
        }
static inline void transpose_block(vf *r) {
#if VW == 16
    TSTAGE(8, r[i] = SHUF(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
                r[i + 8] =
                    SHUF(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);)
    TSTAGE(4, r[i] = SHUF(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
                r[i + 4] = SHUF(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);)
    TSTAGE(2, r[i] = SHUF(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
                r[i + 2] = SHUF(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);)
    TSTAGE(1, r[i] = SHUF(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
                r[i + 1] = SHUF(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);)
#elif VW == 8
    TSTAGE(4, r[i] = SHUF(a, b, 0, 1, 2, 3, 8, 9, 10, 11);
                r[i + 4] = SHUF(a, b, 4, 5, 6, 7, 12, 13, 14, 15);)
    TSTAGE(2, r[i] = SHUF(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
                r[i + 2] = SHUF(a, b, 2, 3, 10, 11, 6, 7, 14, 15);)
    TSTAGE(1, r[i] = SHUF(a, b, 0, 8, 2, 10, 4, 12, 6, 14);
                r[i + 1] = SHUF(a, b, 1, 9, 3, 11, 5, 13, 7, 15);)
#else
    TSTAGE(2, r[i] = SHUF(a, b, 0, 1, 4, 5);
                r[i + 2] = SHUF(a, b, 2, 3, 6, 7);)
    TSTAGE(1, r[i] = SHUF(a, b, 0, 4, 2, 6);
                r[i + 1] = SHUF(a, b, 1, 5, 3, 7);)
#endif
}

const char *spk_isa(void) { return SPK_ISA; }
int spk_vector_width(void) { return VW; }
int spk_abi(void) { return SPK_ABI; }
int spk_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
int spk_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- compute core -------------------------------------------------------------------- */

/* OFFSET(j): where nonzero j's slice of X starts. MAPPED selects the conv form. */
#define DEF_TILE(NAME, NV, U, MAPPED)                                                       \
    static void NAME(const int64_t *ptr, const int32_t *idx, const float *val, int nkb,      \
                     int P, int rows, const float *X, const int32_t *colmap, float *yt) {   \
        for (int kb = 0; kb < nkb; kb++) {                                                  \
            const int64_t *pk = ptr + (int64_t)kb * P;                                      \
            for (int q = 0; q < rows; q++) {                                                \
                const int64_t s = pk[q], e = pk[q + 1];                                     \
                float *yq = yt + (int64_t)q * (NV * VW);                                    \
                if (s == e) {                                                               \
                    if (kb == 0)                                                            \
                        for (int n = 0; n < NV; n++) stu(yq + n * VW, (vf){0});             \
                    continue;                                                               \
                }                                                                           \
                vf acc[U][NV];                                                              \
                _Pragma("GCC unroll 8") for (int u = 0; u < U; u++)                         \
                _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) acc[u][n] = (vf){0};   \
                if (kb > 0)                                                                 \
                    _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) acc[0][n] =        \
                        ldu(yq + n * VW);                                                   \
                int64_t j = s;                                                              \
                for (; j + U <= e; j += U) {                                                \
                    _Pragma("GCC unroll 8") for (int u = 0; u < U; u++) {                   \
                        const float *xp =                                                   \
                            X + (MAPPED ? (int64_t)colmap[idx[j + u]]                       \
                                        : (int64_t)idx[j + u] * (NV * VW));                 \
                        const float v = val[j + u];                                         \
                        _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) acc[u][n] +=   \
                            v * ldu(xp + n * VW);                                           \
                    }                                                                       \
                }                                                                           \
                for (; j < e; j++) {                                                        \
                    const float *xp = X + (MAPPED ? (int64_t)colmap[idx[j]]                 \
                                                  : (int64_t)idx[j] * (NV * VW));           \
                    const float v = val[j];                                                 \
                    _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) acc[0][n] +=       \
                        v * ldu(xp + n * VW);                                               \
                }                                                                           \
                _Pragma("GCC unroll 8") for (int u = 1; u < U; u++)                         \
                _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) acc[0][n] += acc[u][n];\
                _Pragma("GCC unroll 8") for (int n = 0; n < NV; n++) stu(yq + n * VW,       \
                                                                         acc[0][n]);        \
            }                                                                               \
        }                                                                                   \
    }

/* U * NV >= 8 independent accumulator chains: 2 FMA ports x 4 cycles latency */
DEF_TILE(tile1, 1, 8, 0)
DEF_TILE(tile2, 2, 4, 0)
DEF_TILE(tile4, 4, 2, 0)
DEF_TILE(tile8, 8, 1, 0)
DEF_TILE(tile1m, 1, 8, 1)
DEF_TILE(tile2m, 2, 4, 1)
DEF_TILE(tile4m, 4, 2, 1)
DEF_TILE(tile8m, 8, 1, 1)

static void run_tile(int nv, int mapped, const int64_t *ptr, const int32_t *idx,
                     const float *val, int nkb, int P, int rows, const float *X,
                     const int32_t *colmap, float *yt) {
    if (mapped) {
        switch (nv) {
        case 8: tile8m(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        case 4: tile4m(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        case 2: tile2m(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        default: tile1m(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        }
    } else {
        switch (nv) {
        case 8: tile8(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        case 4: tile4(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        case 2: tile2(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        default: tile1(ptr, idx, val, nkb, P, rows, X, colmap, yt); break;
        }
    }
}

/* Tiles over [0, width) (width a multiple of VW): nfull tiles of nvmax vectors, then the
 * rest in at most three 4/2/1-vector tiles. */
typedef struct {
    int64_t nfull, ntiles, rem_t0[4];
    int nvmax, rem_nv[4];
} tiling;

static tiling make_tiling(int64_t width, int nvmax) {
    tiling t;
    t.nvmax = nvmax;
    t.nfull = width / ((int64_t)nvmax * VW);
    int64_t p = t.nfull * nvmax * VW;
    int n = 0;
    for (int nv = nvmax >> 1; nv >= 1; nv >>= 1)
        if (width - p >= (int64_t)nv * VW) {
            t.rem_t0[n] = p;
            t.rem_nv[n] = nv;
            p += (int64_t)nv * VW;
            n++;
        }
    t.ntiles = t.nfull + n;
    return t;
}

static inline void tile_at(const tiling *t, int64_t i, int64_t *p0, int *nv) {
    if (i < t->nfull) {
        *p0 = i * t->nvmax * VW;
        *nv = t->nvmax;
    } else {
        *p0 = t->rem_t0[i - t->nfull];
        *nv = t->rem_nv[i - t->nfull];
    }
}

/* scratch for one (P, nvmax * VW) output tile; C11 wants the size a multiple of 64 */
static float *tile_alloc(int P, int nvmax) {
    size_t bytes = (size_t)P * nvmax * VW * sizeof(float);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* this thread's tile scratch (tile_alloc); on failure *err = -1 and NULL (its work is skipped) */
static float *thread_tile(int P, int nvmax, int *err) {
    float *yt = tile_alloc(P, nvmax);
    if (!yt) {
#pragma omp atomic write
        *err = -1;
    }
    return yt;
}

static int clamp_nv(int nvmax) {
    if (nvmax >= 8) return 8;
    if (nvmax >= 4) return 4;
    if (nvmax >= 2) return 2;
    return 1;
}

static int nthreads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

/* ---- matrix product, batch >= 2 ----------------------------------------------------------
 * transposed == 0: x (batch, cols), y (batch, rows); transposed == 1: x (cols, batch),
 * y (rows, batch); all row-major; bias: (rows,) or NULL; act: the fused activation (see
 * act_span) or NULL. xt: scratch of
 * cols * round_up(batch, VW) floats, filled with the activation packed tile by tile.
 * Returns 0, or -1 on allocation failure. */
static int spmm_core(int64_t rows, int64_t cols, int P, int nkb, const int64_t *ptr,
                     const int32_t *idx, const float *val, const float *x, int transposed,
                     int64_t batch, float *y, const float *bias, const float *act, float *xt,
                     int nvmax, int threads) {
    const int nt = nthreads(threads);
    const span a = act_span(act);
    const int64_t bpad = (batch + VW - 1) / VW * VW;
    nvmax = clamp_nv(nvmax);

    const tiling tl = make_tiling(bpad, nvmax);
    const int64_t ntiles = tl.ntiles;
    const int64_t nchunks = (cols + 63) / 64;

    /* transpose x into xt, tile by tile: tile (b0, T) holds x[b0:b0+T, :]^T as a
     * contiguous (cols, T) block at xt + b0 * cols (rows past the batch are zeros) */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t w = 0; w < ntiles * nchunks; w++) {
        int nv;
        int64_t b0;
        tile_at(&tl, w / nchunks, &b0, &nv);
        const int T = nv * VW;
        const int64_t c0 = (w % nchunks) * 64;
        const int64_t c1 = c0 + 64 < cols ? c0 + 64 : cols;
        float *dst = xt + b0 * cols;
        const int64_t nb = batch - b0 < T ? batch - b0 : T;
        if (transposed) { /* x is (cols, batch): copy row slices, no transposition */
            for (int64_t c = c0; c < c1; c++) {
                memcpy(dst + c * T, x + c * batch + b0, (size_t)nb * sizeof(float));
                for (int64_t b = nb; b < T; b++) dst[c * T + b] = 0.0f;
            }
            continue;
        }
        /* VW x VW blocks transposed in registers; the columns past the last full block
         * (cols % VW, last chunk only) one by one */
        const int64_t cv = c0 + (c1 - c0) / VW * VW;
        for (int b = 0; b < T; b += VW) {
            for (int64_t c = c0; c < cv; c += VW) {
                /* lanes past the batch are never written out; zeros keep them finite, so
                 * the tile meets no NaN or denormal slow path */
                vf r[VW];
                for (int i = 0; i < VW; i++)
                    r[i] = b + i < nb ? ldu(x + (b0 + b + i) * cols + c) : (vf){0};
                transpose_block(r);
                for (int k = 0; k < VW; k++) stu(dst + (c + k) * T + b, r[k]);
            }
            for (int64_t c = cv; c < c1; c++)
                for (int i = 0; i < VW; i++)
                    dst[c * T + b + i] = b + i < nb ? x[(b0 + b + i) * cols + c] : 0.0f;
        }
    }

    const int64_t npanels = (rows + P - 1) / P;
    /* small layers: cut panels into row chunks so every thread gets work (a row's result
     * does not depend on the chunking, so this keeps results identical across threads) */
    int64_t nsub = 1;
    while (nt > 1 && npanels * ntiles * nsub < 4 * nt && P / (nsub * 2) >= 8) nsub *= 2;
    const int64_t sub = (P + nsub - 1) / nsub;
    const int64_t nwork = npanels * nsub * ntiles;
    int err = 0;

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *yt = thread_tile(P, nvmax, &err);
#pragma omp for schedule(dynamic, 1)
        for (int64_t w = 0; w < nwork; w++) {
            if (!yt) continue;
            const int64_t p = w / (ntiles * nsub);
            const int64_t qa = (w / ntiles) % nsub * sub;
            const int64_t r0 = p * P + qa;
            const int64_t pend = (p + 1) * P < rows ? (p + 1) * P : rows;
            if (r0 >= pend) continue;
            const int nr = (int)(pend - r0 < sub ? pend - r0 : sub);
            int nv;
            int64_t b0;
            tile_at(&tl, w % ntiles, &b0, &nv);
            run_tile(nv, 0, ptr + p * nkb * (int64_t)P + qa, idx, val, nkb, P, nr,
                     xt + b0 * cols, NULL, yt);
            const int T = nv * VW;
            const int64_t nb = batch - b0 < T ? batch - b0 : T;
            if (transposed) { /* y is (rows, batch): tile rows are contiguous runs */
                for (int q = 0; q < nr; q++) {
                    float *yr = y + (r0 + q) * batch + b0;
                    const float bq = bias ? bias[r0 + q] : 0.0f;
                    for (int64_t b = 0; b < nb; b++)
                        yr[b] = clamps(yt[(int64_t)q * T + b] + bq, a);
                }
                continue;
            }
            /* the (nr, T) tile into y's (batch, rows) layout: VW x VW blocks transposed in
             * registers, the rows past the last full block (nr % VW) one by one */
            const int qv = nr / VW * VW;
            for (int q0 = 0; q0 < qv; q0 += VW) {
                const vf bv = bias ? ldu(bias + r0 + q0) : (vf){0};
                for (int64_t b = 0; b < nb; b += VW) {
                    vf r[VW];
                    for (int i = 0; i < VW; i++) r[i] = ldu(yt + (int64_t)(q0 + i) * T + b);
                    transpose_block(r);
                    const int64_t kn = nb - b < VW ? nb - b : VW;
                    for (int64_t k = 0; k < kn; k++)
                        stu(y + (b0 + b + k) * rows + r0 + q0, clampv(r[k] + bv, a));
                }
            }
            for (int q = qv; q < nr; q++) {
                const float bq = bias ? bias[r0 + q] : 0.0f;
                for (int64_t b = 0; b < nb; b++)
                    y[(b0 + b) * rows + r0 + q] = clamps(yt[(int64_t)q * T + b] + bq, a);
            }
        }
        free(yt);
    }
    return err;
}

/* Y = X W^T: x (batch, cols) row-major -> y (batch, rows) row-major.
 * xt: scratch of cols * round_up(batch, VW) floats. */
int spk_spmm(int64_t rows, int64_t cols, int P, int nkb, const int64_t *ptr,
             const int32_t *idx, const float *val, const float *x, int64_t batch, float *y,
             const float *bias, const float *act, float *xt, int nvmax, int threads) {
    return spmm_core(rows, cols, P, nkb, ptr, idx, val, x, 0, batch, y, bias, act, xt, nvmax,
                     threads);
}

/* Y^T = W X^T: x (cols, batch) -> y (rows, batch), both row-major; no transpositions, so
 * a chain of layers can keep activations as (features, batch). Same scratch as spk_spmm. */
int spk_spmm_t(int64_t rows, int64_t cols, int P, int nkb, const int64_t *ptr,
               const int32_t *idx, const float *val, const float *x, int64_t batch, float *y,
               const float *bias, const float *act, float *xt, int nvmax, int threads) {
    return spmm_core(rows, cols, P, nkb, ptr, idx, val, x, 1, batch, y, bias, act, xt, nvmax,
                     threads);
}

/* ---- y = W x (batch 1): dot product per row, gathers from x --------------------------- */
static inline float dot_seg(const int32_t *idx, const float *val, int64_t s, int64_t e,
                            const float *x) {
    int64_t j = s;
    float sum = 0.0f;
#if defined(SPK_NO_GATHER)
#elif defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; j + 32 <= e; j += 32) {
        __m512i i0 = _mm512_loadu_si512((const void *)(idx + j));
        __m512i i1 = _mm512_loadu_si512((const void *)(idx + j + 16));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + j), _mm512_i32gather_ps(i0, x, 4), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + j + 16), _mm512_i32gather_ps(i1, x, 4), a1);
    }
    sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; j + 16 <= e; j += 16) {
        __m256i i0 = _mm256_loadu_si256((const __m256i *)(idx + j));
        __m256i i1 = _mm256_loadu_si256((const __m256i *)(idx + j + 8));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(val + j), _mm256_i32gather_ps(x, i0, 4), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(val + j + 8), _mm256_i32gather_ps(x, i1, 4), a1);
    }
    __m256 a = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    sum = _mm_cvtss_f32(h);
#endif
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (; j + 4 <= e; j += 4) {
        s0 += val[j] * x[idx[j]];
        s1 += val[j + 1] * x[idx[j + 1]];
        s2 += val[j + 2] * x[idx[j + 2]];
        s3 += val[j + 3] * x[idx[j + 3]];
    }
    for (; j < e; j++) s0 += val[j] * x[idx[j]];
    return sum + ((s0 + s1) + (s2 + s3));
}

/* x: (cols,), y: (rows,), bias: (rows,) or NULL, act: see act_span. */
int spk_spmv(int64_t rows, int64_t cols, int P, int nkb, const int64_t *ptr,
             const int32_t *idx, const float *val, const float *x, float *y, const float *bias,
             const float *act, int threads) {
    (void)cols;
    const int nt = nthreads(threads);
    const span a = act_span(act);
    const int64_t npanels = (rows + P - 1) / P;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t p = 0; p < npanels; p++) {
        const int64_t r0 = p * P;
        const int nr = (int)(rows - r0 < P ? rows - r0 : P);
        const int64_t *pp = ptr + p * nkb * (int64_t)P;
        for (int q = 0; q < nr; q++) y[r0 + q] = bias ? bias[r0 + q] : 0.0f;
        for (int kb = 0; kb < nkb; kb++) {
            const int64_t *pk = pp + (int64_t)kb * P;
            for (int q = 0; q < nr; q++) y[r0 + q] += dot_seg(idx, val, pk[q], pk[q + 1], x);
        }
        if (act)
            for (int q = 0; q < nr; q++) y[r0 + q] = clamps(y[r0 + q], a);
    }
    return 0;
}

/* d[v] = xr[v + off] where 0 <= v + off < W, else 0, for v in [0, Wa) (Wa a multiple of VW);
 * xr NULL: a padding row, all zeros. On AVX-512 one masked load per vector, which reads
 * no lane outside the row; elsewhere lane by lane. */
static inline void shift_row(float *d, int64_t Wa, const float *xr, int64_t W, int64_t off) {
    for (int64_t v0 = 0; v0 < Wa; v0 += VW) {
        const int64_t c0 = v0 + off; /* the column lane 0 reads */
        if (!xr || c0 >= W || c0 + VW <= 0) {
            stu(d + v0, (vf){0});
            continue;
        }
#if VW == 16
        const int lo = c0 < 0 ? (int)-c0 : 0, hi = W - c0 < VW ? (int)(W - c0) : VW;
        const __mmask16 m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        const float *src = (const float *)((uintptr_t)xr + (uintptr_t)(c0 * 4)); /* lanes < lo: masked */
        stu(d + v0, (vf)_mm512_maskz_loadu_ps(m, src));
#else
        for (int k = 0; k < VW; k++) {
            const int64_t c = c0 + k;
            d[v0 + k] = c >= 0 && c < W ? xr[c] : 0.0f;
        }
#endif
    }
}

/* colmap[(ic * kh + i) * kw + j] = scale * (where tap (i, j) of channel ic starts in the
 * stride phases: phase (i*dh % sh, j*dw % sw) of channel ic, planes of Hq * Wq, moved by
 * i*dh / sh rows and j*dw / sw columns); scale VW: the lanes layout, a vector per float. */
static void phase_colmap(int32_t *colmap, int64_t IC, int kh, int kw, int sh, int sw, int dh,
                         int dw, int64_t Hq, int64_t Wq, int64_t scale) {
    for (int64_t ic = 0; ic < IC; ic++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const int64_t a = (int64_t)i * dh % sh, b = (int64_t)j * dw % sw;
                const int64_t off = ((ic * sh + a) * sw + b) * Hq * Wq +
                                    (int64_t)i * dh / sh * Wq + (int64_t)j * dw / sw;
                colmap[(ic * kh + i) * kw + j] = (int32_t)(off * scale);
            }
}

/* dst[0:n] = act(src[0:n] + b), whole vectors then lane by lane */
static inline void bias_act_row(float *dst, const float *src, int64_t n, float b, span a) {
    const vf bv = (vf){0} + b;
    int64_t m = 0;
    for (; m + VW <= n; m += VW) stu(dst + m, clampv(ldu(src + m) + bv, a));
    for (; m < n; m++) dst[m] = clamps(src[m] + b, a);
}

/* ---- 2-D convolution (groups = 1) as implicit GEMM over the sparse filters ---------------
 * W: (OC, IC * kh * kw) in the blocked layout, column c = (ic * kh + i) * kw + j.
 * Per image the zero-padded input is split into sh * sw stride phases
 *     ph[ic][a][b][u][v] = xpad[ic][u * sh + a][v * sw + b],   u < Hq, v < Wq,
 * so tap (i, j) of channel ic reads phase (i*dh % sh, j*dw % sw) shifted by
 * (i*dh / sh) rows and (j*dw / sw) columns: one constant offset colmap[c] per column.
 * Output position (oh, ow) is computed at "wide" index oh * Wq + ow (ow < Wq; the columns
 * ow >= Wo are computed and dropped), so every nonzero adds val * (a contiguous run of the
 * phase plane) to a contiguous run of wide outputs: the matrix-product core with the
 * spatial positions as the dense dimension and no im2col.
 * A 1x1 conv with stride 1 and no padding ("direct") needs no phases: its input planes are
 * already the (IC, H * W) operand, read in place; only a last tile that would read past the
 * end of a plane (H * W not a multiple of VW) takes its columns from a zero-padded copy of
 * those columns (IC * T floats of scratch), so no load leaves x.
 * x: (N, IC, H, W); y: (N, OC, Ho, Wo); act: the fused activation (act_span) or NULL;
 * scratch: phase_floats floats (see Python); colmap: 2 * IC * kh * kw int32 scratch, filled
 * here. Returns 0; -1: out of memory; -3: a stride above 64; -4: scratch too small. */
int spk_conv2d(int64_t OC, int64_t IC, int kh, int kw, int P, int nkb, const int64_t *ptr,
               const int32_t *idx, const float *val, const float *x, int64_t N, int64_t H,
               int64_t W, int sh, int sw, int ph, int pw, int dh, int dw, int64_t Ho,
               int64_t Wo, float *y, const float *bias, const float *act, float *scratch,
               int64_t Hq, int64_t Wq, int64_t phase_floats, int32_t *colmap, int nvmax,
               int threads) {
    const int nt = nthreads(threads);
    const span a = act_span(act);
    nvmax = clamp_nv(nvmax);
    const int64_t plane = Hq * Wq;
#ifdef SPK_NO_DIRECT /* the copy-everything path, kept buildable for A/B timing */
    const int direct = 0;
#else
    const int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 &&
                       Hq == H && Wq == W;
#endif
    /* stride 1 with taps side by side: one zero-padded copy of the input rows per column
     * shift j * dw, each row starting on a vector boundary and Wa = Wo rounded up to whole
     * vectors long, so that every tap's load is aligned (split loads cost ~1.35x per
     * computed position: results/probes/2026-12-04-lanes/tap_alignment.txt); paid for with
     * kw copies and the positions up to Wa, so taken where Wa is at most 15% over Wq */
    const int64_t Wa = (Wo + VW - 1) / VW * VW;
#ifdef SPK_NO_ALIGNED_TAPS /* the one-copy layout everywhere, for A/B timing */
    const int aligned = 0;
#else
    const int aligned = !direct && sh == 1 && sw == 1 && kw > 1 && Wa * 100 <= Wq * 115 &&
                        IC * kw * Hq * Wa <= phase_floats && IC * kw * Hq * Wa <= INT32_MAX;
#endif
    const int64_t Wr = aligned ? Wa : Wq; /* row length of the wide positions */
    if (!aligned) phase_colmap(colmap, IC, kh, kw, sh, sw, dh, dw, Hq, Wq, 1);
    for (int64_t ic = 0; ic < (aligned ? IC : 0); ic++) /* copy j of channel ic, row i * dh */
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++)
                colmap[(ic * kh + i) * kw + j] =
                    (int32_t)(((ic * kw + j) * Hq + (int64_t)i * dh) * Wa);
    /* phases some tap reads (a strided 1x1 conv reads one of sh * sw) */
    char need_h[64] = {0}, need_w[64] = {0};
    if (sh > 64 || sw > 64) return -3;
    for (int i = 0; i < kh; i++) need_h[(int64_t)i * dh % sh] = 1;
    for (int j = 0; j < kw; j++) need_w[(int64_t)j * dw % sw] = 1;
    const int64_t wide = Ho * Wr;
    const int64_t wpad = (wide + VW - 1) / VW * VW;
    const tiling tl = make_tiling(wpad, nvmax);
    const int64_t ntiles = tl.ntiles;
    const int64_t npanels = (OC + P - 1) / P;
    const int64_t nwork = npanels * ntiles;
    const int64_t Hp = H + 2 * (int64_t)ph, Wp = W + 2 * (int64_t)pw;
    int64_t tail_q0 = 0; /* direct: the last tile, if it reads past a plane, comes from scratch */
    int tail_nv = 0;
    tile_at(&tl, ntiles - 1, &tail_q0, &tail_nv);
    const int64_t tail_T = (int64_t)tail_nv * VW;
    const int tail = direct && tail_q0 + tail_T > plane;
    if (tail) {
        if (IC * tail_T > phase_floats) return -4;
        for (int64_t ic = 0; ic < IC; ic++) colmap[IC + ic] = (int32_t)(ic * tail_T);
    }
    int err = 0;

    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * IC * H * W;
        float *yn = y + n * OC * Ho * Wo;
        if (tail) {
            const int64_t keep = plane - tail_q0;
            for (int64_t ic = 0; ic < IC; ic++) {
                float *d = scratch + ic * tail_T;
                memcpy(d, xn + ic * plane + tail_q0, (size_t)keep * sizeof(float));
                memset(d + keep, 0, (size_t)(tail_T - keep) * sizeof(float));
            }
        }
        /* aligned: kw shifted copies of each padded input row */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t ic = 0; ic < (aligned ? IC : 0); ic++)
            for (int j = 0; j < kw; j++)
                for (int64_t u = 0; u < Hq; u++) {
                    const int64_t r = u - ph; /* row in the unpadded image */
                    shift_row(scratch + ((ic * kw + j) * Hq + u) * Wa, Wa,
                              r < 0 || r >= H ? NULL : xn + (ic * H + r) * W, W,
                              (int64_t)j * dw - pw);
                }
        /* stride phases of the padded image; the slack after the planes stays zero */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && !direct && !aligned)
        for (int64_t ic = 0; ic < (direct || aligned ? 0 : IC); ic++) {
            for (int a = 0; a < sh; a++)
                for (int b = 0; b < sw; b++) {
                    if (!(need_h[a] && need_w[b])) continue; /* no tap reads this phase */
                    float *dst = scratch + ((ic * sh + a) * sw + b) * plane;
                    for (int64_t u = 0; u < Hq; u++) {
                        const int64_t yy = u * sh + a - ph; /* row in the unpadded image */
                        float *d = dst + u * Wq;
                        if (u * sh + a >= Hp || yy < 0 || yy >= H) {
                            memset(d, 0, (size_t)Wq * sizeof(float));
                            continue;
                        }
                        const float *src = xn + (ic * H + yy) * W;
                        if (sw == 1) {
                            const int64_t lo = pw < Wq ? pw : Wq;
                            const int64_t hi = pw + W < Wq ? pw + W : Wq;
                            memset(d, 0, (size_t)lo * sizeof(float));
                            memcpy(d + lo, src, (size_t)(hi - lo) * sizeof(float));
                            if (hi < Wq) memset(d + hi, 0, (size_t)(Wq - hi) * sizeof(float));
                        } else {
                            /* columns v with 0 <= v * sw + b - pw < W (and inside Wp) */
                            int64_t lo = pw - b > 0 ? (pw - b + sw - 1) / sw : 0;
                            int64_t hi = (pw + W - b + sw - 1) / sw; /* first v past the image */
                            const int64_t hp = (Wp - b + sw - 1) / sw;
                            if (hi > hp) hi = hp;
                            if (hi > Wq) hi = Wq;
                            if (lo > hi) lo = hi;
                            for (int64_t v = 0; v < lo; v++) d[v] = 0.0f;
                            const float *sv = src + lo * sw + b - pw;
                            for (int64_t v = lo; v < hi; v++) d[v] = sv[(v - lo) * sw];
                            for (int64_t v = hi; v < Wq; v++) d[v] = 0.0f;
                        }
                    }
                }
        }
        const int64_t used = IC * sh * sw * plane;
        if (n == 0 && !direct && !aligned && phase_floats > used)
            memset(scratch + used, 0, (size_t)(phase_floats - used) * sizeof(float));

#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            float *yt = thread_tile(P, nvmax, &err);
#pragma omp for schedule(dynamic, 1)
            for (int64_t w = 0; w < nwork; w++) {
                if (!yt) continue;
                const int64_t p = w / ntiles;
                const int64_t r0 = p * P;
                const int nr = (int)(OC - r0 < P ? OC - r0 : P);
                int nv;
                int64_t q0;
                tile_at(&tl, w % ntiles, &q0, &nv);
                const int from_tail = tail && w % ntiles == ntiles - 1;
                const float *X = !direct ? scratch + q0 : from_tail ? scratch : xn + q0;
                run_tile(nv, 1, ptr + p * nkb * (int64_t)P, idx, val, nkb, P, nr, X,
                         from_tail ? colmap + IC : colmap, yt);
                const int T = nv * VW;
                /* the tile covers wide positions [q0, q0 + T): runs of one output row each;
                 * copy the part of each run with ow < Wo */
                if (Wr == Wo) { /* wide positions are output positions: one run per row */
                    const int64_t keep = Ho * Wo - q0 < T ? Ho * Wo - q0 : T;
                    for (int q = 0; q < nr; q++)
                        bias_act_row(yn + (r0 + q) * Ho * Wo + q0, yt + (int64_t)q * T, keep,
                                     bias ? bias[r0 + q] : 0.0f, a);
                    continue;
                }
                const int64_t oh0 = q0 / Wr, ow0 = q0 % Wr;
                for (int q = 0; q < nr; q++) {
                    float *yo = yn + (r0 + q) * Ho * Wo;
                    const float bq = bias ? bias[r0 + q] : 0.0f;
                    const float *src = yt + (int64_t)q * T;
                    int64_t oh = oh0, ow = ow0;
                    for (int k = 0; k < T && oh < Ho;) {
                        const int64_t run = Wr - ow < T - k ? Wr - ow : T - k;
                        const int64_t keep = Wo - ow < run ? (Wo - ow > 0 ? Wo - ow : 0) : run;
                        bias_act_row(yo + oh * Wo + ow, src + k, keep, bq, a);
                        k += (int)run;
                        ow += run;
                        if (ow == Wr) {
                            ow = 0;
                            oh++;
                        }
                    }
                }
            }
            free(yt);
        }
        if (err) return err;
    }
    return err;
}

/* p[0:n] = v[0:n], 0 < n <= VW */
static inline void st_first(float *p, vf v, int n) {
#if VW == 16
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    if (n == VW) {
        stu(p, v);
        return;
    }
    float t[VW];
    stu(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
#endif
}

/* ---- convolution with the batch in the vector lanes ------------------------------------
 * spk_conv2d's tiles run over "wide" positions of one image: on a small plane the columns
 * past Wo are computed and thrown away (an 8x8 output read from 12-wide rows: a third of the
 * work), and a tap's shift puts most vector loads across two cache lines. Here VW images at a
 * time are interleaved into scratch as (IC, sh, sw, Hq, Wq, VW): spk_conv2d's zero-padded
 * stride phases with every float widened to the VW images' values. A tile is then NV
 * consecutive output positions of one output row, each one aligned vector of VW images, run
 * by the same tile code (colmap scaled by VW): no position past Wo and no split load. Images
 * past N in the last group are zeros. Same arguments and returns as spk_conv2d; scratch:
 * IC * sh * sw * Hq * Wq * VW floats (64-byte aligned). */
int spk_conv2d_lanes(int64_t OC, int64_t IC, int kh, int kw, int P, int nkb, const int64_t *ptr,
                     const int32_t *idx, const float *val, const float *x, int64_t N, int64_t H,
                     int64_t W, int sh, int sw, int ph, int pw, int dh, int dw, int64_t Ho,
                     int64_t Wo, float *y, const float *bias, const float *act, float *scratch,
                     int64_t Hq, int64_t Wq, int64_t phase_floats, int32_t *colmap, int nvmax,
                     int threads) {
    const int nt = nthreads(threads);
    const span a = act_span(act);
    nvmax = clamp_nv(nvmax);
    if (sh > 64 || sw > 64) return -3;
    const int64_t plane = Hq * Wq, block = (int64_t)sh * sw * plane * VW; /* one channel */
    if (IC * block > phase_floats) return -4;
    phase_colmap(colmap, IC, kh, kw, sh, sw, dh, dw, Hq, Wq, VW);
    const tiling tl = make_tiling(Wo * VW, nvmax); /* segments of one output row */
    const int64_t ntiles = tl.ntiles, npanels = (OC + P - 1) / P;
    const int64_t nwork = npanels * Ho, chw = IC * H * W, ohw = OC * Ho * Wo;
    int err = 0;

    for (int64_t n0 = 0; n0 < N; n0 += VW) {
        const int64_t nb = N - n0 < VW ? N - n0 : VW;
        const float *xg = x + n0 * chw;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t ic = 0; ic < IC; ic++) {
            float *base = scratch + ic * block;
            /* the padding and the phase rows past the image stay zero from the first group on:
             * later groups write the same interior positions */
            if (n0 == 0) memset(base, 0, (size_t)block * sizeof(float));
            /* the plane read flat, VW floats of VW images at a time (a plane narrower than
             * a vector still moves in whole vectors), each transposed in registers so vector
             * k holds the images' values at flat index f + k */
            const float *xc = xg + ic * H * W;
            const int64_t hw = H * W, fv = hw / VW * VW;
            int64_t r = 0, c = 0; /* (row, column) of flat index f + k */
            for (int64_t f = 0; f < hw; f += VW) {
                vf rr[VW];
                const int full = f < fv;
                if (full) {
                    for (int l = 0; l < VW; l++)
                        rr[l] = l < nb ? ldu(xc + l * chw + f) : (vf){0};
                    transpose_block(rr);
                }
                for (int k = 0; k < VW && f + k < hw; k++) {
                    const int64_t rp = r + ph, cp = c + pw;
                    float *d = base + (sh == 1 && sw == 1
                                           ? rp * Wq + cp
                                           : (rp % sh * sw + cp % sw) * plane + rp / sh * Wq +
                                                 cp / sw) * VW;
                    if (full) {
                        stu(d, rr[k]);
                    } else {
                        for (int l = 0; l < VW; l++) d[l] = l < nb ? xc[l * chw + f + k] : 0.0f;
                    }
                    if (++c == W) {
                        c = 0;
                        r++;
                    }
                }
            }
        }

#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            float *yt = thread_tile(P, nvmax, &err);
            /* one work item: a whole output row of a panel, so two threads never write
             * parts of one cache line (a tile's 8 positions are half a line) */
#pragma omp for schedule(dynamic, 1)
            for (int64_t w = 0; w < nwork; w++) {
                if (!yt) continue;
                const int64_t p = w / Ho, oh = w % Ho;
                const int64_t r0 = p * P;
                const int nr = (int)(OC - r0 < P ? OC - r0 : P);
                for (int64_t t = 0; t < ntiles; t++) {
                int nv;
                int64_t f0;
                tile_at(&tl, t, &f0, &nv);
                const int64_t ow0 = f0 / VW;
                run_tile(nv, 1, ptr + p * nkb * (int64_t)P, idx, val, nkb, P, nr,
                         scratch + (oh * Wq + ow0) * VW, colmap, yt);
                const int T = nv * VW;
                for (int q = 0; q < nr; q++) {
                    /* (positions, images) -> per image a run of positions: a register
                     * transpose, the positions past nv zeros and never stored */
                    const vf bq = (vf){0} + (bias ? bias[r0 + q] : 0.0f);
                    float *yo = y + n0 * ohw + (r0 + q) * Ho * Wo + oh * Wo + ow0;
                    for (int m0 = 0; m0 < nv; m0 += VW) { /* nv > VW on narrow builds */
                        const int mv = nv - m0 < VW ? nv - m0 : VW;
                        vf rr[VW];
                        for (int m = 0; m < VW; m++)
                            rr[m] = m < mv ? ldu(yt + (int64_t)q * T + (m0 + m) * VW) : (vf){0};
                        transpose_block(rr);
                        if (act)
                            for (int64_t l = 0; l < nb; l++)
                                st_first(yo + l * ohw + m0, clampv(rr[l] + bq, a), mv);
                        else
                            for (int64_t l = 0; l < nb; l++) st_first(yo + l * ohw + m0, rr[l] + bq, mv);
                    }
                }
                }
            }
            free(yt);
        }
        if (err) return err;
    }
    return err;
}

/* spk_conv2d with its shape and weight arguments packed once per layer and input shape:
 * p = {OC, IC, kh, kw, P, nkb, ptr, idx, val, N, H, W, sh, sw, ph, pw, dh, dw, Ho, Wo, Hq, Wq,
 * phase_floats, nvmax, lanes} (addresses as int64), so a call passes 8 arguments instead of 30
 * (the ctypes conversion of each costs more than a small conv's arithmetic); lanes != 0 runs
 * spk_conv2d_lanes. */
int spk_conv2d_plan(const int64_t *p, const float *x, float *y, const float *bias,
                    const float *act, float *scratch, int32_t *colmap, int threads) {
    return (p[24] ? spk_conv2d_lanes : spk_conv2d)(p[0], p[1], (int)p[2], (int)p[3], (int)p[4], (int)p[5],
                      (const int64_t *)(intptr_t)p[6], (const int32_t *)(intptr_t)p[7],
                      (const float *)(intptr_t)p[8], x, p[9], p[10], p[11], (int)p[12],
                      (int)p[13], (int)p[14], (int)p[15], (int)p[16], (int)p[17], p[18], p[19], y,
                      bias, act, scratch, p[20], p[21], p[22], colmap, (int)p[23], threads);
}

/* ---- depthwise convolution (dense): y = conv2d(x, w, bias, groups = C) ---------------- */

/* Lanes 0, 2, 4, ... (odd: 1, 3, 5, ...) of the 2 VW floats a:c (a stride-2 row copy) */
#if VW == 16
#define EVEN_LANES(a, c) SHUF(a, c, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define ODD_LANES(a, c) SHUF(a, c, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#elif VW == 8
#define EVEN_LANES(a, c) SHUF(a, c, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD_LANES(a, c) SHUF(a, c, 1, 3, 5, 7, 9, 11, 13, 15)
#else
#define EVEN_LANES(a, c) SHUF(a, c, 0, 2, 4, 6)
#define ODD_LANES(a, c) SHUF(a, c, 1, 3, 5, 7)
#endif

/* In a short copy loop: stops the compiler from turning the loop into a memcpy/memset call,
 * whose fixed cost exceeds a row of a small plane. */
#define KEEP_LOOP() __asm__ volatile("" ::: "memory")

/* d[v] = x[v * sw + b - pw] where that column exists in row xr, else fill (0 for a
 * convolution, -inf for max pooling), for v in [0, Ws) (Ws a multiple of VW with Ws - VW >=
 * every v inside the image; xr NULL: a padding row, all fill). Zeros and the copy go in whole vectors (stride 2: two loads and an even-lane
 * shuffle); only a copy shorter than one vector goes lane by lane. Written out because a
 * plain loop becomes a memcpy/memset call per row, which costs more than the row on the
 * small planes of a mobile net. */
static inline void pad_row(float *d, int64_t Ws, const float *xr, int64_t W, int b, int sw,
                           int pw, const float *xend, float fill) {
    const vf fv = (vf){0} + fill;
    if (!xr) {
        for (int64_t v0 = 0; v0 < Ws; v0 += VW) stu(d + v0, fv);
        return;
    }
    /* v with 0 <= v * sw + b - pw < W: [lo, hi) (strides 1 and 2 without a division) */
#define DIV_SW(a) (sw == 1 ? (a) : sw == 2 ? (a) / 2 : (a) / sw)
    int64_t lo = pw > b ? DIV_SW(pw - b + sw - 1) : 0;
    int64_t hi = DIV_SW(W + pw - b + sw - 1);
#undef DIV_SW
    if (hi > Ws) hi = Ws;
    if (lo > hi) lo = hi;
    const float *xs = xr + lo * sw + b - pw; /* column of v = lo */
    float *dst = d + lo;
    const int64_t n = hi - lo;
    int64_t t = 0;
    for (; t + VW <= lo; t += VW) stu(d + t, fv); /* head: [0, lo), then the copy */
    if (t < lo) stu(d + t, fv);                   /* overwrites what it spills over */
    int64_t i = 0;
    if (n > 0 && n < VW && sw <= 2 && xs + sw * VW <= xend) {
        /* a row shorter than a vector: one (stride 2: two) whole loads that stay inside x;
         * the lanes past hi are garbage until the tail zeros below overwrite them */
        const vf a = ldu(xs);
        stu(dst, sw == 1 ? a : EVEN_LANES(a, ldu(xs + VW)));
        i = n;
    }
    if (sw == 1) {
        for (; i + VW <= n; i += VW) {
            stu(dst + i, ldu(xs + i));
            KEEP_LOOP();
        }
        if (i < n && n >= VW) { /* the last vector moved back to end at n */
            stu(dst + n - VW, ldu(xs + n - VW));
            i = n;
        }
    } else if (sw == 2) {
        /* the vector ending at n reads one float past the last column it keeps (column
         * 2n - 1): allowed while that is still inside x */
        const int64_t m = xs + 2 * n <= xend ? n : n - 1;
        for (; i + VW <= m; i += VW) {
            const vf a = ldu(xs + 2 * i), c = ldu(xs + 2 * i + VW);
            stu(dst + i, EVEN_LANES(a, c));
            KEEP_LOOP();
        }
        if (i < m && m >= VW) { /* the last vector moved back to end at m */
            const vf a = ldu(xs + 2 * (m - VW)), c = ldu(xs + 2 * (m - VW) + VW);
            stu(dst + m - VW, EVEN_LANES(a, c));
            i = m;
        }
    }
    for (; i < n; i++) {
        dst[i] = xs[i * sw];
        KEEP_LOOP();
    }
    for (t = hi; t + VW <= Ws; t += VW) stu(d + t, fv); /* tail: [hi, Ws) */
    stu(d + Ws - VW, fv); /* starts at or past hi (see above) */
}

/* A 1x1 conv's output channel computed on the fly (spk_expand_dw): CSR row [s, e) of
 * (eidx, eval), bias b, clamp a; rows of the input are hw floats apart. */
typedef struct {
    int64_t hw, s, e;
    const int32_t *eidx;
    const float *eval;
    float b;
    span a;
} expansion;

/* the expanded values of columns v .. v + VW - 1 of one input row */
static inline vf expand_vec(const float *xr, const expansion *x, int64_t v) {
    vf acc = (vf){0} + x->b;
    for (int64_t k = x->s; k < x->e; k++) acc += ldu(xr + x->eidx[k] * x->hw + v) * x->eval[k];
    return clampv(acc, x->a);
}

/* Stride 2, W >= 2 VW: one input row (ex NULL: xr's own values; else its expansion) into
 * the stencil's two phase rows d[0], d[1] (phase p, slot k holds column 2k + p - pw; `fill`
 * where that is padding), each 2 VW columns split into even and odd in registers: one pass
 * instead of pad_row's two loads and a shuffle per phase and vector. A row's last 2 VW move
 * back to an even start; an odd W's last column, left over, goes alone (its sum in the same
 * order). The same values as pad_row's copy. */
static inline void split_row_s2(float *d[2], int64_t Ws, const float *xr, int64_t W, int pw,
                                const expansion *ex, float fill) {
    const vf fv = (vf){0} + fill;
    int64_t lo[2], hi[2];
    for (int p = 0; p < 2; p++) {
        lo[p] = (pw - p + 1) / 2 > 0 ? (pw - p + 1) / 2 : 0; /* first k with a column >= 0 */
        hi[p] = (W + pw - p + 1) / 2;                      /* one past the last column < W */
        for (int64_t k = 0; k < lo[p]; k += VW) stu(d[p] + k, fv);
    }
    const int pe = pw & 1, po = (pw + 1) & 1; /* the phases of even and odd columns */
    for (int64_t c0 = 0; c0 < W - 1; c0 += 2 * VW) {
        const int64_t c = c0 + 2 * VW > W ? (W - 2 * VW) & ~(int64_t)1 : c0;
        const vf u = ex ? expand_vec(xr, ex, c) : ldu(xr + c);
        const vf v = ex ? expand_vec(xr, ex, c + VW) : ldu(xr + c + VW);
        stu(d[pe] + (c + pw - pe) / 2, EVEN_LANES(u, v));
        stu(d[po] + (c + 1 + pw - po) / 2, ODD_LANES(u, v));
    }
    if (W & 1) { /* column W - 1 (even) */
        float val = xr[W - 1];
        if (ex) {
            val = ex->b;
            for (int64_t k = ex->s; k < ex->e; k++) val += xr[ex->eidx[k] * ex->hw + W - 1] * ex->eval[k];
            val = clamps(val, ex->a);
        }
        d[pe][(W - 1 + pw - pe) / 2] = val;
    }
    for (int p = 0; p < 2; p++) { /* Ws - VW >= every hi (pad_row's row length) */
        for (int64_t k = hi[p]; k + VW <= Ws; k += VW) stu(d[p] + k, fv);
        stu(d[p] + Ws - VW, fv);
    }
}

/* -DSPK_NO_SPLIT_S2: stride-2 rows through pad_row (and the fused kernel's row buffer), for
 * A/B timing */
#ifdef SPK_NO_SPLIT_S2
#define SPLIT_S2 0
#else
#define SPLIT_S2 1
#endif

/* One output plane of a depthwise conv from its padded, phase-split copy `buf`: output row
 * oy starts at buf + oy * rstride; tap t of VW consecutive outputs is one unaligned load at
 * offset toff[t]. Outputs go in jobs of VW columns of one row, JOBS jobs at a time, so JOBS
 * independent FMA chains overlap (one chain of ntaps dependent FMAs per vector would leave
 * the core waiting on FMA latency). A row's last vector is moved back to end at Wo when
 * Wo >= VW (it recomputes a few outputs of the vector before it, with the same taps in the
 * same order, so the same values), so only planes narrower than VW store partial vectors.
 * Each output is bias + its taps in the order t = 0, 1, ...: the job grouping does not
 * change any result. */
#define DW_JOBS 4
static inline __attribute__((always_inline)) void
dw_plane(const float *buf, int64_t rstride, const int64_t *toff, int ntaps, const float *wk,
         float bo, span a, int64_t Ho, int64_t Wo, float *yp, int op_max) {
    const int64_t npos = Wo >= VW ? (Wo + VW - 1) / VW : 1;
    const int64_t njobs = Ho * npos;
    int64_t oy = 0, pi = 0; /* the next job's row and position in the row */
    for (int64_t j0 = 0; j0 < njobs; j0 += DW_JOBS) {
        const float *q[DW_JOBS];
        float *dst[DW_JOBS];
        const int nj = njobs - j0 < DW_JOBS ? (int)(njobs - j0) : DW_JOBS;
        for (int k = 0; k < DW_JOBS; k++) {
            if (k < nj) {
                int64_t ox = pi * VW;
                if (ox + VW > Wo && Wo >= VW) ox = Wo - VW;
                q[k] = buf + oy * rstride + ox;
                dst[k] = yp + oy * Wo + ox;
                if (++pi == npos) {
                    pi = 0;
                    oy++;
                }
            } else { /* past the last job: recompute job 0, store nothing */
                q[k] = q[0];
                dst[k] = NULL;
            }
        }
        vf acc[DW_JOBS];
        if (op_max) { /* max over the taps; a NaN tap wins, as in torch */
            for (int k = 0; k < DW_JOBS; k++) acc[k] = (vf){0} - __builtin_inff();
            for (int t = 0; t < ntaps; t++) {
                const int64_t ot = toff[t];
                for (int k = 0; k < DW_JOBS; k++) {
                    const vf v = ldu(q[k] + ot);
                    const vi take = (v > acc[k]) | (v != v);
                    acc[k] = (vf)(((vi)v & take) | ((vi)acc[k] & ~take));
                }
            }
        } else {
            for (int k = 0; k < DW_JOBS; k++) acc[k] = (vf){0} + bo;
            for (int t = 0; t < ntaps; t++) {
                const vf wt = (vf){0} + wk[t];
                const int64_t ot = toff[t];
                for (int k = 0; k < DW_JOBS; k++) acc[k] += wt * ldu(q[k] + ot);
            }
            for (int k = 0; k < DW_JOBS; k++) acc[k] = clampv(acc[k], a);
        }
        for (int k = 0; k < nj; k++) {
            /* a whole vector also where the row is shorter, except on the plane's last row:
             * the spill lands in the next row, which a later job of this plane rewrites */
            if (Wo >= VW || dst[k] + VW <= yp + (Ho - 1) * Wo) {
                stu(dst[k], acc[k]);
            } else {
                float tmp[VW];
                stu(tmp, acc[k]);
                for (int64_t i = 0; i < Wo; i++) {
                    dst[k][i] = tmp[i];
                    KEEP_LOOP();
                }
            }
        }
    }
}

/* 3x3, the common case: a constant tap count, so the tap loop unrolls */
static void dw_plane9(const float *buf, int64_t rstride, const int64_t *toff, const float *wk,
                      float bo, span a, int64_t Ho, int64_t Wo, float *yp) {
    dw_plane(buf, rstride, toff, 9, wk, bo, a, Ho, Wo, yp, 0);
}

static void dw_plane_any(const float *buf, int64_t rstride, const int64_t *toff, int ntaps,
                         const float *wk, float bo, span a, int64_t Ho, int64_t Wo, float *yp) {
    dw_plane(buf, rstride, toff, ntaps, wk, bo, a, Ho, Wo, yp, 0);
}

/* output channel o of a depthwise conv (weights w[o * ntaps ...], bias[o] or 0) */
static void dw_channel(const float *buf, int64_t rstride, const int64_t *toff, int ntaps,
                       const float *w, const float *bias, int64_t o, span a, int64_t Ho,
                       int64_t Wo, float *yp) {
    const float *wk = w + o * ntaps;
    const float bo = bias ? bias[o] : 0.0f;
    if (ntaps == 9)
        dw_plane9(buf, rstride, toff, wk, bo, a, Ho, Wo, yp);
    else
        dw_plane_any(buf, rstride, toff, ntaps, wk, bo, a, Ho, Wo, yp);
}

static void mp_plane9(const float *buf, int64_t rstride, const int64_t *toff, int64_t Ho,
                      int64_t Wo, float *yp) {
    const span none = act_span(NULL);
    dw_plane(buf, rstride, toff, 9, NULL, 0.0f, none, Ho, Wo, yp, 1);
}

static void mp_plane_any(const float *buf, int64_t rstride, const int64_t *toff, int ntaps,
                         int64_t Ho, int64_t Wo, float *yp) {
    const span none = act_span(NULL);
    dw_plane(buf, rstride, toff, ntaps, NULL, 0.0f, none, Ho, Wo, yp, 1);
}

/* The stencil's tap offsets in its phase-split buffer (phases of `plane` floats, rows of Ws):
 * tap (i, j) of output column ox reads buf[toff[i * kw + j] + ox] (+ oy * sh * Ws). A new
 * array (free it), or NULL out of memory. */
static int64_t *tap_offsets(int kh, int kw, int dh, int dw, int sw, int64_t plane, int64_t Ws) {
    int64_t *toff = malloc((size_t)kh * kw * sizeof(int64_t));
    if (toff)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const int64_t c = (int64_t)j * dw;
                toff[i * kw + j] = (c % sw) * plane + (int64_t)i * dh * Ws + c / sw;
            }
    return toff;
}

static inline void expand_row(float *t, const float *xr, int64_t W, const expansion *ex) {
    for (int64_t v0 = 0; v0 < W; v0 += VW) {
        const int64_t v = v0 + VW > W ? W - VW : v0; /* the last vector moved back */
        stu(t + v, expand_vec(xr, ex, v));
    }
}

/* A stencil's planes made on the fly by a 1x1 conv (spk_expand_dw): plane (n, e) is row e of
 * the CSR (eptr, eidx, eval) applied to image n's IC channels, plus eb[e] (or 0), clamped by ea */
typedef struct {
    int64_t IC;
    const int64_t *eptr;
    const int32_t *eidx;
    const float *eval;
    const float *eb;
    span ea;
} expand_src;

/* Row r of the stencil's padded, phase-split buffer (phases `plane` floats apart, rows Ws)
 * from input row xr (NULL: a padding row) of W columns, or from its expansion ex (then t is a
 * row buffer of W + 2 VW floats): stride 1 with ex, summed straight into the row; stride 2
 * on rows of two vectors or more, split in registers (split_row_s2); else through pad_row
 * (from t after the expansion). */
static inline void fill_row(float *buf, int64_t r, int64_t plane, int64_t Ws, const float *xr,
                            int64_t W, int sw, int pw, const float *xend, float fill,
                            const expansion *ex, float *t) {
    float *d = buf + r * Ws;
    if (xr && ex && sw == 1) {
        /* zeros, the row at pw, zeros (the last store moved back to end at Ws, which is
         * >= pw + W + VW) */
        for (int64_t c = 0; c < pw; c += VW) stu(d + c, (vf){0});
        expand_row(d + pw, xr, W, ex);
        for (int64_t c = pw + W; c + VW <= Ws; c += VW) stu(d + c, (vf){0});
        stu(d + Ws - VW, (vf){0});
        return;
    }
    if (xr && sw == 2 && W >= 2 * VW && SPLIT_S2) {
        float *dd[2] = {d, d + plane};
        split_row_s2(dd, Ws, xr, W, pw, ex, fill);
        return;
    }
    if (xr && ex) {
        expand_row(t, xr, W, ex);
        xr = t;
        xend = t + W + 2 * VW;
    }
    for (int b = 0; b < sw; b++) pad_row(d + b * plane, Ws, xr, W, b, sw, pw, xend, fill);
}

/* y = conv2d(x, w, bias, groups = C)
 * x: (N, C, H, W); w: (C * M, 1, kh, kw) (M = depth multiplier: output channel o reads input
 * channel o / M); y: (N, C * M, Ho, Wo); bias: (C * M,) or NULL; act: the fused activation
 * (act_span) or NULL. Zero padding.
 *   y[n, o, oy, ox] = bias[o] + sum_{i, j} w[o, 0, i, j] * x[n, o / M, oy*sh - ph + i*dh,
 *                                                               ox*sw - pw + j*dw]
 * A stencil, memory-bound. Each thread copies its input plane once into a zero-padded,
 * column-phase-split buffer: phase b holds padded columns b, b + sw, b + 2 sw, ... so that
 * for every stride the tap (i, j) of VW consecutive outputs is one contiguous unaligned load
 * (phase (j*dw) % sw, offset (j*dw) / sw), with no bounds tests and VW floats of zero slack
 * at the end of each row for the last, partial vector. The VW sums stay in a register over
 * all kh * kw taps (one store). Tap order fixed: results do not depend on the thread count.
 * Parallel over the (n, o) planes. Returns 0, or -1 if the buffer cannot be allocated. */
static int stencil2d(int64_t N, int64_t C, int64_t M, int64_t H, int64_t W, int kh, int kw,
                     int sh, int sw, int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo,
                     const float *x, const float *w, const float *bias, const float *act,
                     float *y, int threads, int op_max, const expand_src *es) {
    const int nt = nthreads(threads);
    const span a = act_span(act);
    const float fill = op_max ? -__builtin_inff() : 0.0f; /* what padding reads as */
    const int64_t hw = H * W;
    /* with es: the expanded row, with a vector of slack: pad_row loads whole vectors */
    const size_t tbytes = ((size_t)(W + 2 * VW) * sizeof(float) + 63) / 64 * 64;
    const int64_t OC = C * M;
    const int64_t Hp = H + 2 * (int64_t)ph, Wp = W + 2 * (int64_t)pw;
    /* phase row length: a whole number of vectors, with at least VW floats of slack */
    const int64_t Wq = (Wp + sw - 1) / sw, Ws = (Wq + VW - 1) / VW * VW + VW;
    const int64_t plane = Hp * Ws;
    const size_t bytes = ((size_t)sw * plane * sizeof(float) + 63) / 64 * 64;
    /* tap (i, j) of output column ox reads buf[toff[i * kw + j] + ox] (+ oy * sh * Ws) */
    const int ntaps = kh * kw;
    int64_t *toff = tap_offsets(kh, kw, dh, dw, sw, plane, Ws);
    if (!toff) return -1;
    const float *xend = x + N * (es ? es->IC : C) * hw; /* no load may pass it */
    int err = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *buf = aligned_alloc(64, bytes), *t = es ? aligned_alloc(64, tbytes) : NULL;
        int64_t filled = -1; /* the (n, c) plane in buf: M output channels reuse it */
        if (!buf || (es && !t)) {
#pragma omp atomic write
            err = -1;
        }
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < N * OC; pl++) {
            if (!buf || (es && !t)) continue;
            const int64_t n = pl / OC, o = pl % OC, src = n * C + o / M;
            if (src != filled) {
                /* the plane's rows: channel src of x, or image n's expansion by row o */
                const float *xp = es ? x + n * es->IC * hw : x + src * hw;
                expansion ex;
                if (es)
                    ex = (expansion){hw,         es->eptr[o], es->eptr[o + 1], es->eidx,
                                     es->eval,   es->eb ? es->eb[o] : 0.0f,    es->ea};
                for (int64_t r = 0; r < Hp; r++) {
                    const int64_t iy = r - ph;
                    fill_row(buf, r, plane, Ws, iy < 0 || iy >= H ? NULL : xp + iy * W, W, sw, pw,
                             xend, fill, es ? &ex : NULL, t);
                }
                filled = src;
            }
            float *yp = y + pl * Ho * Wo;
            if (op_max) {
                if (ntaps == 9)
                    mp_plane9(buf, sh * Ws, toff, Ho, Wo, yp);
                else
                    mp_plane_any(buf, sh * Ws, toff, ntaps, Ho, Wo, yp);
                continue;
            }
            dw_channel(buf, sh * Ws, toff, ntaps, w, bias, o, a, Ho, Wo, yp);
        }
        free(buf);
        free(t);
    }
    free(toff);
    return err;
}

static int stencil2d_lanes(int64_t NP, int64_t C, int64_t H, int64_t W, int kh, int kw, int sh,
                           int sw, int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo,
                           const float *x, const float *w, const float *bias, const float *act,
                           float *y, int threads, int op_max);
static int lanes_pay_stencil(int64_t NP, int64_t H, int64_t W, int ph, int pw, int64_t Wo);

int spk_dwconv2d(int64_t N, int64_t C, int64_t M, int64_t H, int64_t W, int kh, int kw,
                 int sh, int sw, int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo,
                 const float *x, const float *w, const float *bias, const float *act, float *y,
                 int threads) {
    if (M == 1 && lanes_pay_stencil(N * C, H, W, ph, pw, Wo))
        return stencil2d_lanes(N * C, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x, w, bias,
                               act, y, threads, 0);
    return stencil2d(N, C, M, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x, w, bias, act, y,
                     threads, 0, NULL);
}

/* y = dwconv(clamp(expand(x))): a 1x1 conv (sparse, E x IC, CSR eptr/eidx/eval, bias eb,
 * fused activation ea) whose output goes only into a depthwise conv (multiplier 1, the
 * arguments of spk_dwconv2d), computed plane by plane without ever writing the expanded
 * tensor: expanded channel e of image n is made one row at a time,
 *   t[ix] = eact(eb[e] + sum_k eval[k] * x[n, eidx[k], iy, ix])   (k in eptr[e] .. eptr[e+1])
 * straight into the stencil's padded, phase-split buffer (stencil2d with the expansion as
 * its row source), which the depthwise stencil then reads as ever. On an inverted-residual block the expanded tensor is the
 * largest in the net (E = 6 IC); writing it and reading it back cost more than its sums at
 * batch 1 (results/probes/2026-12-04-fused/). x: (N, IC, H, W); y: (N, E, Ho, Wo). The
 * sums add the nonzeros in CSR order, the taps in stencil2d's order. Needs W >= VW (a row
 * is whole vectors, the last one moved back). Parallel over the (n, e) planes. Returns 0,
 * -1 (out of memory) or -2 (W < VW). */
int spk_expand_dw(int64_t N, int64_t IC, int64_t E, int64_t H, int64_t W, const int64_t *eptr,
                  const int32_t *eidx, const float *eval, const float *eb, const float *ea,
                  int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int64_t Ho,
                  int64_t Wo, const float *w, const float *bias, const float *act,
                  const float *x, float *y, int threads) {
    if (W < VW) return -2;
    const expand_src es = {IC, eptr, eidx, eval, eb, act_span(ea)};
    return stencil2d(N, E, 1, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x, w, bias, act, y,
                     threads, 0, &es);
}

/* Floats of depthwise output a band of dw_project keeps for all E channels (512 KB: half of
 * this CPU's L2, so the band stays there while the projection reads it). */
#define PROJECT_BAND_FLOATS (128 * 1024)

/* y = project(dwconv(h)): a depthwise conv (multiplier 1, the arguments of spk_dwconv2d;
 * h = x, or with es the 1x1 expansion of x as in spk_expand_dw) whose output goes only into
 * a 1x1 conv (sparse, CO x E, CSR pptr/pidx/pval, bias pb, fused activation pa), without
 * writing the depthwise output: image by image, R output rows at a time (R chosen so the
 * band's E x R x Wo floats stay in L2), each channel's R rows are computed from the padded
 * input rows they read (refilled per band: (R - 1) * sh + (kh - 1) * dh + 1 rows for R * sh,
 * the overlap computed twice) into the band buffer D, then
 *   y[n, c, oy, ox] = pa(pb[c] + sum_k pval[k] * D[pidx[k], oy - oy0, ox])  (k in pptr[c] ..)
 * for the band's rows, which are contiguous in y (NCHW). An inverted-residual block's
 * depthwise output is written and read back once per image otherwise (3-15 MB at batch 8 on
 * mobilenet_v2's 112-28 pixel blocks). Sums: each depthwise output in stencil2d's tap order,
 * each projection in CSR order. Any Wo; with es, W >= VW (an expanded row is whole vectors,
 * the last moved back). Parallel over the (n, band) pairs. Returns 0 or -1
 * (out of memory). */
static int dw_project(int64_t N, int64_t E, int64_t H, int64_t W, int kh, int kw, int sh, int sw,
                      int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo, const float *x,
                      const float *w, const float *bias, const float *act, const expand_src *es,
                      int64_t CO, const int64_t *pptr, const int32_t *pidx, const float *pval,
                      const float *pb, const float *pa, float *y, int threads) {
    const int nt = nthreads(threads);
    const span a = act_span(act), pspan = act_span(pa);
    const int64_t hw = H * W;
    const int64_t Hp = H + 2 * (int64_t)ph, Wp = W + 2 * (int64_t)pw;
    const int64_t Wq = (Wp + sw - 1) / sw, Ws = (Wq + VW - 1) / VW * VW + VW;
    int64_t R = PROJECT_BAND_FLOATS / (E * Wo > 0 ? E * Wo : 1);
    if (R < 1) R = 1;
    if (R > Ho) R = Ho;
    const int64_t nbands = (Ho + R - 1) / R;
    const int64_t rows = (R - 1) * sh + (int64_t)(kh - 1) * dh + 1; /* padded rows a band reads */
    const int64_t plane = rows * Ws;
    const size_t bytes = ((size_t)sw * plane * sizeof(float) + 63) / 64 * 64;
    /* many small planes, one band: the depthwise conv of an image's E planes runs VW planes
     * at a time in the vector lanes (stencil2d_lanes, as spk_dwconv2d there: one plane per
     * vector leaves most lanes empty on 7x7 planes), into D planes packed back to back */
    const int lanes = !es && nbands == 1 && lanes_pay_stencil(E, H, W, ph, pw, Wo);
    /* a channel's band in D: whole vectors, or packed for the lanes stencil */
    const int64_t Ls = lanes ? Ho * Wo : (R * Wo + VW - 1) / VW * VW;
    /* + VW: a band under one vector is still read as one (its other lanes thrown away) */
    const size_t dbytes = ((size_t)(E * Ls + VW) * sizeof(float) + 63) / 64 * 64;
    const size_t tbytes = ((size_t)(W + 2 * VW) * sizeof(float) + 63) / 64 * 64;
    const int ntaps = kh * kw;
    int64_t *toff = tap_offsets(kh, kw, dh, dw, sw, plane, Ws);
    if (!toff) return -1;
    const float *xend = x + N * (es ? es->IC : E) * hw;
    int err = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *buf = aligned_alloc(64, bytes), *D = aligned_alloc(64, dbytes);
        float *t = es ? aligned_alloc(64, tbytes) : NULL;
        const int ok = buf && D && (!es || t);
        if (!ok) {
#pragma omp atomic write
            err = -1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < N * nbands; job++) {
            if (!ok) continue;
            const int64_t n = job / nbands, oy0 = job % nbands * R;
            const int64_t nr = Ho - oy0 < R ? Ho - oy0 : R; /* output rows in this band */
            const int64_t r0 = oy0 * sh, nrows = (nr - 1) * sh + (int64_t)(kh - 1) * dh + 1;
            const int64_t L = nr * Wo;
            if (lanes) {
                const int rc = stencil2d_lanes(E, E, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo,
                                               x + n * E * hw, w, bias, act, D, 1, 0);
                if (rc) {
#pragma omp atomic write
                    err = rc;
                    continue;
                }
            }
            for (int64_t e = 0; e < (lanes ? 0 : E); e++) {
                const float *xp = es ? x + n * es->IC * hw : x + (n * E + e) * hw;
                expansion ex;
                if (es)
                    ex = (expansion){hw,         es->eptr[e], es->eptr[e + 1], es->eidx,
                                     es->eval,   es->eb ? es->eb[e] : 0.0f,    es->ea};
                for (int64_t r = 0; r < nrows; r++) {
                    const int64_t iy = r0 + r - ph;
                    fill_row(buf, r, plane, Ws, iy < 0 || iy >= H ? NULL : xp + iy * W, W, sw,
                             pw, xend, 0.0f, es ? &ex : NULL, t);
                }
                dw_channel(buf, sh * Ws, toff, ntaps, w, bias, e, a, nr, Wo, D + e * Ls);
            }
            /* the projection of the band: L contiguous outputs per channel c */
            float *yb = y + n * CO * Ho * Wo + oy0 * Wo;
            for (int64_t c = 0; c < CO; c++) {
                const float bc = pb ? pb[c] : 0.0f;
                float *yc = yb + c * Ho * Wo;
                for (int64_t q0 = 0; q0 < L; q0 += 4 * VW) {
                    const int nv = L - q0 >= 4 * VW ? 4 : (int)((L - q0 + VW - 1) / VW);
                    /* the band's last vector moved back to end at L (same sums) */
                    int64_t q[4];
                    for (int v = 0; v < 4; v++) {
                        q[v] = q0 + v * VW;
                        if (q[v] + VW > L && L >= VW) q[v] = L - VW;
                    }
                    vf acc[4] = {(vf){0} + bc, (vf){0} + bc, (vf){0} + bc, (vf){0} + bc};
                    for (int64_t k = pptr[c]; k < pptr[c + 1]; k++) {
                        const float *dk = D + pidx[k] * Ls;
                        const vf pv = (vf){0} + pval[k];
                        for (int v = 0; v < nv; v++) acc[v] += pv * ldu(dk + q[v]);
                    }
                    for (int v = 0; v < nv; v++) {
                        const vf r = clampv(acc[v], pspan);
                        if (L >= VW) {
                            stu(yc + q[v], r);
                        } else { /* a band narrower than a vector */
                            float tmp[VW];
                            stu(tmp, r);
                            for (int64_t i = 0; i < L; i++) {
                                yc[i] = tmp[i];
                                KEEP_LOOP();
                            }
                        }
                    }
                }
            }
        }
        free(buf);
        free(D);
        free(t);
    }
    free(toff);
    return err;
}

/* y = max_pool2d(x, (kh, kw), stride, padding, dilation), torch's MaxPool2d with
 * ceil_mode=False: x (N, C, H, W) -> y (N, C, Ho, Wo),
 *   y[n, c, oy, ox] = max_{i, j} x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
 * with the padding read as -inf and a NaN in a window giving NaN (torch's rule). The same
 * stencil as spk_dwconv2d, a max in place of the weighted sum. */
/* The stencil with VW planes in the vector lanes, for many small planes: the per-plane
 * stencil's per-plane and per-row setup and its partial vectors cost more than the arithmetic
 * on an 8x8 output. VW planes are interleaved, padding = fill, into a (Hp, Wp, VW) buffer
 * (register transposes of VW planes x VW flat positions); every tap is then one aligned
 * vector load and one max (op_max) or one FMA with the VW planes' own weights, and VW outputs
 * of flat order are transposed back to the planes. Plane p is channel p % C of its image
 * (depth multiplier 1): its weights w[p % C], bias[p % C]. The max follows the stencil's NaN
 * rule; the sums add the taps in the stencil's order. */
static int stencil2d_lanes(int64_t NP, int64_t C, int64_t H, int64_t W, int kh, int kw, int sh,
                           int sw, int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo,
                           const float *x, const float *w, const float *bias, const float *act,
                           float *y, int threads, int op_max) {
    const int nt = nthreads(threads);
    const span a = act_span(act);
    const int64_t Hp = H + 2 * (int64_t)ph, Wp = W + 2 * (int64_t)pw, hw = H * W, ohw = Ho * Wo;
    const int ntaps = kh * kw;
    const size_t bytes = ((size_t)Hp * Wp * VW * sizeof(float) + 63) / 64 * 64;
    const vf fill = (vf){0} + (op_max ? -__builtin_inff() : 0.0f);
    int err = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *buf = aligned_alloc(64, bytes);
        /* the lanes' weights, one vector per tap (aligned: vf accesses assume it) */
        vf *wv = op_max ? NULL : aligned_alloc(64, ((size_t)ntaps * sizeof(vf) + 63) / 64 * 64);
        if (!buf || (!op_max && !wv)) {
#pragma omp atomic write
            err = -1;
        }
        if (buf) /* the padding: fill from here on (the interior is rewritten per group) */
            for (int64_t i = 0; i < Hp * Wp; i++) stu(buf + i * VW, fill);
#pragma omp for schedule(static)
        for (int64_t p0 = 0; p0 < NP; p0 += VW) {
            if (!buf || (!op_max && !wv)) continue;
            const int64_t np = NP - p0 < VW ? NP - p0 : VW;
            vf bv = (vf){0};
            if (!op_max)
                for (int l = 0; l < VW; l++) {
                    const int64_t c = (p0 + l) % C;
                    for (int t = 0; t < ntaps; t++) wv[t][l] = l < np ? w[c * ntaps + t] : 0.0f;
                    bv[l] = l < np && bias ? bias[c] : 0.0f;
                }
            const float *xg = x + p0 * hw;
            int64_t r = 0, c = 0;
            for (int64_t f = 0; f < hw; f += VW) {
                vf rr[VW];
                const int full = f + VW <= hw;
                if (full) {
                    for (int l = 0; l < VW; l++) rr[l] = l < np ? ldu(xg + l * hw + f) : fill;
                    transpose_block(rr);
                }
                for (int k = 0; k < VW && f + k < hw; k++) {
                    float *d = buf + ((r + ph) * Wp + c + pw) * VW;
                    if (full) {
                        stu(d, rr[k]);
                    } else {
                        for (int l = 0; l < VW; l++) d[l] = l < np ? xg[l * hw + f + k] : fill[0];
                    }
                    if (++c == W) {
                        c = 0;
                        r++;
                    }
                }
            }
            int64_t oh = 0, ow = 0;
            for (int64_t f = 0; f < ohw; f += VW) {
                vf rr[VW];
                const int nk = ohw - f < VW ? (int)(ohw - f) : VW;
                for (int k = 0; k < VW; k++) {
                    vf acc = op_max ? fill : bv;
                    if (k < nk) {
                        const float *q = buf + (oh * sh * Wp + ow * sw) * VW;
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                const vf v = ldu(q + ((int64_t)i * dh * Wp + (int64_t)j * dw) * VW);
                                if (op_max) { /* a NaN tap wins, as in torch */
                                    const vi take = (v > acc) | (v != v);
                                    acc = (vf)(((vi)v & take) | ((vi)acc & ~take));
                                } else {
                                    acc += wv[i * kw + j] * v;
                                }
                            }
                        if (!op_max && act) acc = clampv(acc, a);
                        if (++ow == Wo) {
                            ow = 0;
                            oh++;
                        }
                    }
                    rr[k] = acc;
                }
                transpose_block(rr);
                for (int64_t l = 0; l < np; l++) st_first(y + (p0 + l) * ohw + f, rr[l], nk);
            }
        }
        free(buf);
        free(wv);
    }
    return err;
}

/* planes in the lanes where there are a vector's worth of them, an output row fills at most
 * half a vector (the per-plane stencil's vectors are then mostly empty: 2-3.6x on 7x7 and 8x8
 * outputs; on 12-28 wide rows the two are within ~25% either way, the transposes in and out
 * costing about what the empty lanes do: results/probes/2026-12-04-lanes/) and a plane's
 * interleaved copy stays in L2; -DSPK_NO_STENCIL_LANES: never, for A/B timing */
static int lanes_pay_stencil(int64_t NP, int64_t H, int64_t W, int ph, int pw, int64_t Wo) {
#ifdef SPK_NO_STENCIL_LANES
    (void)NP, (void)H, (void)W, (void)ph, (void)pw, (void)Wo;
    return 0;
#else
    /* AVX-512: also rows of 9-16 outputs (mobilenet_v2's 14x14 planes, and 28 -> 14 at
     * stride 2: 1.37-1.58x per layer, results/probes/2026-12-04-replay/dw_lanes.txt); the
     * 28- and 56-wide rows gained nothing there */
    return NP >= VW && (2 * Wo <= VW || (VW == 16 && Wo <= 16)) &&
           (H + 2 * (int64_t)ph) * (W + 2 * (int64_t)pw) * VW * (int64_t)sizeof(float) <= (1 << 19);
#endif
}

int spk_maxpool2d(int64_t N, int64_t C, int64_t H, int64_t W, int kh, int kw, int sh, int sw,
                  int ph, int pw, int dh, int dw, int64_t Ho, int64_t Wo, const float *x,
                  float *y, int threads) {
    if (lanes_pay_stencil(N * C, H, W, ph, pw, Wo))
        return stencil2d_lanes(N * C, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x, NULL,
                               NULL, NULL, y, threads, 1);
    return stencil2d(N, C, 1, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, x, NULL, NULL, NULL,
                     y, threads, 1, NULL);
}

/* spk_dwconv2d (op 0), spk_maxpool2d (op 1), spk_expand_dw (op 2) or dw_project (op 3) with
 * the shape arguments packed once per layer and input shape:
 * p = {op, N, C, M, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, eptr, eidx, eval, IC, pptr,
 * pidx, pval, CO} (op 2: C is IC, M is E; op 3: C = M = E, eptr 0 for no expansion; the CSR
 * addresses as int64), so a call converts 11 ctypes arguments instead of 17-30 (~5 us, a
 * fifth of a small depthwise conv's call). eb, ea: the expansion's bias and activation (ops
 * 2, 3); pb, pa: the projection's (op 3); w, bias, act unused by op 1. Returns what the kernel returns (0 at once for an
 * empty output), -4 for an unknown op. */
int spk_stencil_plan(const int64_t *p, const float *x, const float *w, const float *bias,
                     const float *act, float *y, const float *eb, const float *ea,
                     const float *pb, const float *pa, int threads) {
    const int kh = (int)p[6], kw = (int)p[7], sh = (int)p[8], sw = (int)p[9];
    const int ph = (int)p[10], pw = (int)p[11], dh = (int)p[12], dw = (int)p[13];
    if (p[1] == 0 || (p[0] == 2 ? p[3] : p[0] == 3 ? p[23] : p[2]) == 0) return 0; /* empty */
    switch (p[0]) {
    case 0:
        return spk_dwconv2d(p[1], p[2], p[3], p[4], p[5], kh, kw, sh, sw, ph, pw, dh, dw, p[14],
                            p[15], x, w, bias, act, y, threads);
    case 1:
        return spk_maxpool2d(p[1], p[2], p[4], p[5], kh, kw, sh, sw, ph, pw, dh, dw, p[14], p[15],
                             x, y, threads);
    case 2:
        return spk_expand_dw(p[1], p[2], p[3], p[4], p[5], (const int64_t *)(intptr_t)p[16],
                             (const int32_t *)(intptr_t)p[17], (const float *)(intptr_t)p[18],
                             eb, ea, kh, kw, sh, sw, ph, pw, dh, dw, p[14], p[15], w, bias, act,
                             x, y, threads);
    case 3: {
        const expand_src es = {p[19], (const int64_t *)(intptr_t)p[16],
                               (const int32_t *)(intptr_t)p[17], (const float *)(intptr_t)p[18],
                               eb, act_span(ea)};
        return dw_project(p[1], p[3], p[4], p[5], kh, kw, sh, sw, ph, pw, dh, dw, p[14], p[15],
                          x, w, bias, act, p[16] ? &es : NULL, p[23],
                          (const int64_t *)(intptr_t)p[20], (const int32_t *)(intptr_t)p[21],
                          (const float *)(intptr_t)p[22], pb, pa, y, threads);
    }
    }
    return -4;
}

/* Sum of n floats, read once (a memory-bandwidth probe for the benchmark). */
float spk_read_bandwidth_probe(const float *a, int64_t n, int threads) {
    const int nt = nthreads(threads);
    float total = 0.0f;
#pragma omp parallel for num_threads(nt) reduction(+ : total) schedule(static) if (nt > 1)
    for (int64_t c = 0; c < n; c += 4096) {
        const int64_t e = c + 4096 < n ? c + 4096 : n;
        vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        int64_t i = c;
        for (; i + 4 * VW <= e; i += 4 * VW) {
            s0 += ldu(a + i);
            s1 += ldu(a + i + VW);
            s2 += ldu(a + i + 2 * VW);
            s3 += ldu(a + i + 3 * VW);
        }
        vf s = (s0 + s1) + (s2 + s3);
        float t = 0.0f;
        for (int k = 0; k < VW; k++) t += s[k];
        for (; i < e; i++) t += a[i];
        total += t;
    }
    return total;
}

/* iters x 12 independent vector FMAs, operands in registers: the core's FMA peak
 * (2 * VW * 12 * iters flops), a compute probe for the benchmark. */
float spk_fma_peak_probe(int64_t iters) {
    vf m = {0}, c = {0};
    for (int k = 0; k < VW; k++) {
        m[k] = 0.999999f;
        c[k] = 1e-7f;
    }
    vf a0 = m, a1 = m * 2, a2 = m * 3, a3 = m * 4, a4 = m * 5, a5 = m * 6;
    vf a6 = m * 7, a7 = m * 8, a8 = m * 9, a9 = m * 10, a10 = m * 11, a11 = m * 12;
    for (int64_t i = 0; i < iters; i++) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
        a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
        a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5));
        __asm__ volatile("" : "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    vf s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
    float t = 0.0f;
    for (int k = 0; k < VW; k++) t += s[k];
    return t;
}
