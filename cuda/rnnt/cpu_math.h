// Branch-free float math for the CPU kernels, written so that loops over it vectorise
// (no calls, no data-dependent branches), and `FastMath`, the math policy that the CPU
// kernels pass to the cell formulas of rnnt_common.h. float64 keeps the C library's
// functions: that path exists for exact checks, not speed.
//
// Accuracy (float): exp, log1p on [0, 1] and log ~2e-7 relative. Host only (included by the .cpp kernels, never by the .cu files).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "rnnt_common.h"

namespace sfm {
namespace cpu {

inline int32_t float_bits(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

inline float bits_float(int32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

// exp(x) for x <= 88 (every caller passes x <= 0 up to rounding: x - max, x - log-
// normaliser, log_add's -|a - b|, occupancy exponents). Returns exactly 0 below -87.3
// (so exp(-inf) = 0) and propagates NaN. About 15 vector instructions: x = n ln2 + r,
// exp(r) by a degree-5 polynomial fitted for relative error (1.1e-7 on |r| <= ln2 / 2;
// 1.8e-7 with float rounding), 2^n built in the exponent field; below -87.3, where 2^n
// leaves the exponent range, the result is selected away at the end rather than the
// argument clamped first.
inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float kn = x * kLog2e + kShift;
  const float n = kn - kShift;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln(2) / 2
  float p = 8.312525049496408e-3f;
  p = p * r + 4.189011343158714e-2f;
  p = p * r + 1.6667114464234864e-1f;
  p = p * r + 4.999923178892114e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = bits_float((float_bits(kn) - float_bits(kShift) + 127) << 23);
  return x < -87.3f ? 0.0f : p * scale;
}

// 2 * atanh(f) = log((1 + f) / (1 - f)) for |f| <= 1/3, as an odd series in f.
inline float atanh2_series(float f) {
  const float f2 = f * f;
  float p = 2.0f / 15.0f;
  p = p * f2 + 2.0f / 13.0f;
  p = p * f2 + 2.0f / 11.0f;
  p = p * f2 + 2.0f / 9.0f;
  p = p * f2 + 2.0f / 7.0f;
  p = p * f2 + 2.0f / 5.0f;
  p = p * f2 + 2.0f / 3.0f;
  p = p * f2 + 2.0f;
  return f * p;
}

// log(1 + x) for x in [0, 1] (the only use: log_add's log1p(exp(-|a - b|))), through
// log(1 + x) = 2 atanh(x / (2 + x)): no cancellation for small x. NaN propagates.
inline float fast_log1p_unit(float x) { return atanh2_series(x / (2.0f + x)); }

// log(x) for positive normal x (0 and subnormals are not handled); NaN and +inf
// propagate. x = 2^e m with m in [sqrt(1/2), sqrt(2)), found without a branch by
// offsetting the bits by those of sqrt(1/2).
inline float fast_log(float x) {
  constexpr float kLn2 = 0.693147180559945309f;
  constexpr int32_t kSqrtHalf = 0x3f3504f3;  // bits of sqrt(1/2)
  const int32_t b = float_bits(x) - kSqrtHalf;
  const float e = static_cast<float>(b >> 23);
  const float m = bits_float((b & 0x007fffff) + kSqrtHalf);
  const float y = e * kLn2 + atanh2_series((m - 1.0f) / (m + 1.0f));
  return x != x || x == INFINITY ? x : y;
}

// The math policy of the CPU kernels (see DeviceMath in rnnt_common.h).
struct FastMath {
  static float exp(float x) { return fast_exp(x); }
  static double exp(double x) { return std::exp(x); }
  static float log1p(float x) { return fast_log1p_unit(x); }
  static double log1p(double x) { return std::log1p(x); }
  // Positive normal x only (a sum of exponentials, a clamped product).
  static float log(float x) { return fast_log(x); }
  static double log(double x) { return std::log(x); }
};

// ---------------------------------------------------------------------------------------
// Row reductions (the log-softmax normaliser of a row of logits).
// ---------------------------------------------------------------------------------------
constexpr int kLanes = 16;  // accumulators per reduction (one or two vectors)

// Row reductions keep kLanes independent accumulators (the `omp simd` lane loops are one
// or two vector instructions each; the pragma, honoured with -fopenmp or
// -fopenmp-simd, tells the compiler that the lanes are independent) and combine them
// as a tree at the end (4 dependent steps instead of 16). A row's tail is handled as
// the last full block [V - kLanes, V), overlapping the previous one, with the lanes
// already counted masked out: it stays vectorised (a row of V = 100 would otherwise
// spend as long in its 4 scalar exps as in the other 96) and never copies the tail into
// a buffer (scalar stores followed by a vector load of the same bytes stall the load).
// Rows shorter than kLanes take the scalar path.
template <typename A>
A tree_sum(A (&lane)[kLanes]) {
  for (int w = kLanes / 2; w > 0; w /= 2) {
#pragma omp simd
    for (int k = 0; k < w; ++k) lane[k] += lane[k + w];
  }
  return lane[0];
}

template <typename A>
A tree_max(A (&lane)[kLanes]) {
  for (int w = kLanes / 2; w > 0; w /= 2) {
#pragma omp simd
    for (int k = 0; k < w; ++k) lane[k] = lane[k + w] > lane[k] ? lane[k + w] : lane[k];
  }
  return lane[0];
}

// max over a row. NaN entries are skipped (the exp-sum pass then gives NaN, or, if the
// max is -inf, the caller's NaN scan does).
template <typename A>
A row_max(const A* __restrict x, int64_t V) {
  if (V < kLanes) {
    A m = neg_inf<A>();
    for (int64_t v = 0; v < V; ++v) m = x[v] > m ? x[v] : m;
    return m;
  }
  A lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = neg_inf<A>();
  // Blocks at 0, kLanes, ... and a last one ending at V (max does not mind overlaps).
  for (int64_t v0 = 0;; v0 += kLanes) {
    const int64_t v = v0 + kLanes <= V ? v0 : V - kLanes;
#pragma omp simd
    for (int k = 0; k < kLanes; ++k) lane[k] = x[v + k] > lane[k] ? x[v + k] : lane[k];
    if (v + kLanes >= V) break;
  }
  return tree_max(lane);
}

// sum_v exp(x_v - m) for finite m, also storing the terms into out when kStore.
template <typename A, bool kStore>
A row_exp_sum(const A* __restrict x, int64_t V, A m, A* __restrict out) {
  if (V < kLanes) {
    A sum = A(0);
    for (int64_t v = 0; v < V; ++v) {
      const A e = FastMath::exp(x[v] - m);
      if (kStore) out[v] = e;
      sum += e;
    }
    return sum;
  }
  A lane[kLanes];
  for (int k = 0; k < kLanes; ++k) lane[k] = A(0);
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
#pragma omp simd
    for (int k = 0; k < kLanes; ++k) {
      const A e = FastMath::exp(x[v + k] - m);
      if (kStore) out[v + k] = e;
      lane[k] += e;
    }
  }
  if (v < V) {
    const int64_t skip = v - (V - kLanes);  // lanes of the last block already counted
    const A* xt = x + (V - kLanes);
    A* ot = kStore ? out + (V - kLanes) : nullptr;
#pragma omp simd
    for (int k = 0; k < kLanes; ++k) {
      const A e = FastMath::exp(xt[k] - m);
      if (kStore) ot[k] = e;  // the overlap rewrites the same values
      lane[k] += k < skip ? A(0) : e;
    }
  }
  return tree_sum(lane);
}

}  // namespace cpu
}  // namespace sfm
