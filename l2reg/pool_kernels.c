/* The model's 2x2, stride-2 max-pool on channels_last tensors (N, H, W, C in memory), float32 and
   float64, for l2reg/ops.py (which builds this file with the C compiler and calls it through ctypes).

   Equal to the bit to PyTorch's CPU kernels (tests/unit/test_ops.py):
   - forward: each window's first maximum in scan order (top-left, top-right, bottom-left,
     bottom-right), a NaN taken as the maximum, as aten's `val > max || isnan(val)`; it also writes
     the winner's position in its window (0-3, one byte) instead of aten's int64 flat index.
   - backward: each input gets 0 + g at its window's winner (aten zero-fills, then adds: -0.0
     becomes +0.0) and +0.0 elsewhere; an odd last row or column (A2: 11x11) gets +0.0.
   Why (docs/performance.md, ninth session): one pass that writes each input's gradient once,
   instead of a zero-fill plus a scatter, and 1-byte positions instead of 8-byte indices; the selects
   are integer bit masks and the channel loops `omp simd`, so that gcc vectorizes them (a float `?:`
   it did not, and inside OpenMP's outlined loops it judged them not worth it without the pragma;
   the pragma changes no arithmetic: each element is computed alone).
   Portable C (no -march): the same .so runs on any x86-64 or ARM CPU of the cache's machine. */
#include <stdint.h>
#include <string.h>

#define FORWARD(NAME, T) \
void NAME(const T* restrict x, T* restrict out, int8_t* restrict pos, int64_t N, int64_t C, int64_t H, int64_t W) { \
  const int64_t oH = H / 2, oW = W / 2; \
  _Pragma("omp parallel for collapse(2)") \
  for (int64_t n = 0; n < N; n++) for (int64_t oh = 0; oh < oH; oh++) { \
    for (int64_t ow = 0; ow < oW; ow++) { \
      const T* restrict p0 = x + ((n * H + 2 * oh) * W + 2 * ow) * C; const T* restrict p1 = p0 + C; \
      const T* restrict p2 = p0 + W * C; const T* restrict p3 = p2 + C; \
      T* restrict o = out + ((n * oH + oh) * oW + ow) * C; int8_t* restrict q = pos + ((n * oH + oh) * oW + ow) * C; \
      _Pragma("omp simd") \
      for (int64_t c = 0; c < C; c++) { \
        T m = p0[c]; int8_t k = 0; T v; \
        v = p1[c]; if (v > m || v != v) { m = v; k = 1; } \
        v = p2[c]; if (v > m || v != v) { m = v; k = 2; } \
        v = p3[c]; if (v > m || v != v) { m = v; k = 3; } \
        o[c] = m; q[c] = k; \
      } \
    } \
  } \
}

/* U: the unsigned integer of T's width; the selects are bit masks so that the compiler vectorizes them.
   GRAD(c): the pooled gradient of channel c (a contiguous row when gs1 == 1: the vectorizable case). */
#define SCATTER_WINDOW(T, U, GRAD) \
  _Pragma("omp simd") \
  for (int64_t c = 0; c < C; c++) { \
    const T gv = (T)0 + GRAD(c); U bits; memcpy(&bits, &gv, sizeof bits); const int32_t k = q[c]; \
    a[c] = bits & -(U)(k == 0); a[C + c] = bits & -(U)(k == 1); \
    b[c] = bits & -(U)(k == 2); b[C + c] = bits & -(U)(k == 3); \
  }
#define CONTIGUOUS(c) gp[c]
#define STRIDED(c) gp[(c) * gs1]

#define BACKWARD(NAME, T, U) \
void NAME(const T* restrict g, const int64_t* gstride, const int8_t* restrict pos, T* restrict gin_t, \
          int64_t N, int64_t C, int64_t H, int64_t W) { \
  const int64_t oH = H / 2, oW = W / 2, gs0 = gstride[0], gs1 = gstride[1], gs2 = gstride[2], gs3 = gstride[3]; \
  U* restrict gin = (U*)gin_t; \
  _Pragma("omp parallel for collapse(2)") \
  for (int64_t n = 0; n < N; n++) for (int64_t oh = 0; oh < oH; oh++) { \
    U* restrict r0 = gin + ((n * H + 2 * oh) * W) * C; U* restrict r1 = r0 + W * C; \
    for (int64_t ow = 0; ow < oW; ow++) { \
      const int8_t* restrict q = pos + ((n * oH + oh) * oW + ow) * C; \
      const T* restrict gp = g + n * gs0 + oh * gs2 + ow * gs3; \
      U* restrict a = r0 + 2 * ow * C; U* restrict b = r1 + 2 * ow * C; \
      if (gs1 == 1) { SCATTER_WINDOW(T, U, CONTIGUOUS) } else { SCATTER_WINDOW(T, U, STRIDED) } \
    } \
    if (W & 1) { memset(r0 + (W - 1) * C, 0, C * sizeof(U)); memset(r1 + (W - 1) * C, 0, C * sizeof(U)); } \
  } \
  if (H & 1) for (int64_t n = 0; n < N; n++) memset(gin + ((n * H + H - 1) * W) * C, 0, W * C * sizeof(U)); \
}

FORWARD(pool_fwd_f32, float)
FORWARD(pool_fwd_f64, double)
BACKWARD(pool_bwd_f32, float, uint32_t)
BACKWARD(pool_bwd_f64, double, uint64_t)
