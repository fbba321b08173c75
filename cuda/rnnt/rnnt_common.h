// Per-cell math shared by the CPU (C++) and CUDA implementations of the RNN-T loss and
// the mutual-information recursion, plus the plain-old-data parameter blocks that the
// tensor glue (bindings.cpp) hands to both backends.
//
// This header includes no PyTorch header, so the .cu files that include it compile with
// nvcc alone (fast, and checkable without a CUDA build of PyTorch).
//
// Conventions (see speechfm/ops/rnnt.py for the user-facing description):
//   * RNN-T lattice rows: logits (N, T, J, V) with J = U + 1 (full loss) or J = R
//     (pruned loss, row j of frame t is symbol position u = ranges[n, t, j]).
//   * Mutual-information lattice: px (N, S, T + 1) "symbol" edges (s, t) -> (s + 1, t),
//     py (N, S + 1, T) "blank" edges (s, t) -> (s, t + 1), p / alpha and beta
//     (N, S + 1, T + 1), boundary (N, 4) = [s_begin, t_begin, s_end, t_end].
//   * All log-probabilities, alpha, beta and occupancies are in the accumulation type
//     acc_t: double for float64 inputs, float otherwise.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define SFM_HD __host__ __device__ __forceinline__
#else
#define SFM_HD inline
#endif

namespace sfm {

// ---------------------------------------------------------------------------------------
// Scalar math with float and double overloads usable on host and device.
// ---------------------------------------------------------------------------------------
template <typename T>
SFM_HD T neg_inf();
template <>
SFM_HD float neg_inf<float>() {
  return -INFINITY;
}
template <>
SFM_HD double neg_inf<double>() {
  return -static_cast<double>(INFINITY);
}

template <typename T>
SFM_HD T quiet_nan();
template <>
SFM_HD float quiet_nan<float>() {
  return NAN;
}
template <>
SFM_HD double quiet_nan<double>() {
  return static_cast<double>(NAN);
}

SFM_HD float sfm_exp(float x) { return expf(x); }
SFM_HD double sfm_exp(double x) { return exp(x); }
SFM_HD float sfm_log(float x) { return logf(x); }
SFM_HD double sfm_log(double x) { return log(x); }
SFM_HD float sfm_log1p(float x) { return log1pf(x); }
SFM_HD double sfm_log1p(double x) { return log1p(x); }

// The exp / log1p that the cell math below uses. `DeviceMath` is the library's
// (CUDA and the default); the CPU kernels pass branch-free polynomial versions
// (cpu_math.h) so that loops over cells vectorise. Same formulas either way.
struct DeviceMath {
  SFM_HD static float exp(float x) { return sfm_exp(x); }
  SFM_HD static double exp(double x) { return sfm_exp(x); }
  // Only called with x in [0, 1] (x = exp(d), d <= 0) or NaN.
  SFM_HD static float log1p(float x) { return sfm_log1p(x); }
  SFM_HD static double log1p(double x) { return sfm_log1p(x); }
};

// log(exp(a) + exp(b)) without overflow. (-inf, -inf) gives -inf rather than NaN, and a
// NaN in either argument propagates: the `a > b` comparisons are false for NaN, so either
// m is -inf and a + b is NaN, or the difference d below is NaN. Written as a select
// rather than an early return so that a loop over cells is branch-free.
template <typename T, typename M = DeviceMath>
SFM_HD T log_add(T a, T b) {
  const T m = a > b ? a : b;
  const T d = a > b ? b - a : a - b;  // <= 0, or NaN
  const T r = m + M::log1p(M::exp(d));
  return m == neg_inf<T>() ? a + b : r;
}

// One lattice cell: log(exp(from_a + w_a) + exp(from_b + w_b)).
template <typename T, typename M = DeviceMath>
SFM_HD T cell(T from_a, T w_a, T from_b, T w_b) {
  return log_add<T, M>(from_a + w_a, from_b + w_b);
}

// Posterior probability that a path uses the edge src -> dst with log-weight w:
// exp(alpha(src) + w + beta(dst) - loglik). An utterance with no feasible path
// (loglik = -inf) has no gradient; NaN propagates.
template <typename T, typename M = DeviceMath>
SFM_HD T edge_occupancy(T alpha_src, T w, T beta_dst, T loglik) {
  const T occ = M::exp(alpha_src + w + beta_dst - loglik);
  return loglik == neg_inf<T>() ? T(0) : occ;
}

// x - denom for log-softmax, with -inf - (-inf) = -inf (a row whose logits are all -inf
// has denom = -inf; none of its entries is reachable).
template <typename T>
SFM_HD T log_softmax_entry(T x, T denom) {
  if (x == neg_inf<T>()) return x;
  return x - denom;
}

// Gradient clamp applied to the per-utterance gradient before the incoming gradient
// scales it. clamp <= 0 disables it; NaN stays NaN.
template <typename T>
SFM_HD T clamp_grad(T g, T clamp) {
  if (clamp > T(0)) {
    if (g < -clamp) return -clamp;
    if (g > clamp) return clamp;
  }
  return g;
}

// d cost / d logit_v (unscaled, unclamped) for the fused log-softmax:
//   softmax_v * (occ_blank + occ_label) - [v == blank] occ_blank - [v == label] occ_label,
// where softmax_term = softmax_v * (occ_blank + occ_label) was computed by the caller
// (0 when the row carries no probability mass, so exp((-inf) - (-inf)) never appears).
template <typename T>
SFM_HD T logit_grad(T softmax_term, bool is_blank, bool is_label, T occ_blank, T occ_label) {
  T g = softmax_term;
  if (is_blank) g -= occ_blank;
  if (is_label) g -= occ_label;
  return g;
}

// ---------------------------------------------------------------------------------------
// RNN-T row bookkeeping.
// ---------------------------------------------------------------------------------------
// A row (n, t, j) of the logits is valid when t < T_n and its symbol position
// u (= j, or ranges[n, t, j]) satisfies 0 <= u <= U_n. A valid row with u < U_n carries
// the label targets[n, u]; the row u = U_n only has the blank.
constexpr int64_t kNoLabel = -1;     // valid row, u == U_n: blank only
constexpr int64_t kInvalidRow = -2;  // padding: t >= T_n, u < 0 or u > U_n
constexpr int64_t kBadLabel = -3;    // the label is out of [0, V), equals blank, or u >= S

struct RowInfo {
  int64_t u;      // symbol position of the row
  int64_t label;  // >= 0, or one of the codes above
};

SFM_HD RowInfo row_info(int64_t n, int64_t t, int64_t j, int64_t T, int64_t J, int64_t S,
                        int64_t V, int64_t blank, const int64_t* targets,
                        const int64_t* target_lengths, const int64_t* logit_lengths,
                        const int64_t* ranges) {
  RowInfo info;
  info.u = ranges != nullptr ? ranges[(n * T + t) * J + j] : j;
  const int64_t Tn = logit_lengths[n];
  const int64_t Un = target_lengths[n];
  if (t >= Tn || info.u < 0 || info.u > Un) {
    info.label = kInvalidRow;
  } else if (info.u == Un) {
    info.label = kNoLabel;
  } else if (info.u >= S) {
    info.label = kBadLabel;  // target_lengths[n] exceeds the targets tensor
  } else {
    const int64_t y = targets[n * S + info.u];
    info.label = (y < 0 || y >= V || y == blank) ? kBadLabel : y;
  }
  return info;
}

// ---------------------------------------------------------------------------------------
// Parameter blocks (raw pointers, sizes and element strides; no PyTorch types).
// ---------------------------------------------------------------------------------------
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Row pass of the forward: log-normaliser of each row and the blank / label log-probs.
struct RowParams {
  const void* logits;  // (N, T, J, V) contiguous, `dtype`
  Dtype dtype;
  int64_t N, T, J, V;
  const int64_t* targets;         // (N, S) contiguous
  int64_t S;
  const int64_t* target_lengths;  // (N,)
  const int64_t* logit_lengths;   // (N,)
  const int64_t* ranges;          // (N, T, J) contiguous, or nullptr (u = j)
  int64_t blank;
  bool fused;  // logits are unnormalised (log-softmax fused) or already log-probs
  // Outputs in acc_t. Only entries of valid rows are written (callers pre-fill -inf).
  void* out_blank;  // element (n, t, j) at n * ob_sn + t * ob_st + j * ob_sj
  int64_t ob_sn, ob_st, ob_sj;
  void* out_label;  // element (n, t, j) at n * ol_sn + t * ol_st + j * ol_sj; label rows only
  int64_t ol_sn, ol_st, ol_sj;
  void* denom;  // (N, T, J) contiguous acc_t (written for every row; 0 when !fused)
  // CPU only (the CUDA kernels require the defaults):
  bool dense;   // also write -inf to out_blank / out_label of invalid rows and labelless rows
  void* probs;  // nullptr, or (N, T, J, V) contiguous in the logits' dtype (float32 or
                // float64): receives the softmax of each valid row (fused only)
};

// Row pass of the backward: writes every element of grad (N, T, J, V) exactly once.
struct GradParams {
  const void* logits;  // (N, T, J, V) contiguous (read only when fused)
  void* grad;          // (N, T, J, V) contiguous, may alias logits
  Dtype dtype;
  int64_t N, T, J, V;
  const int64_t* targets;
  int64_t S;
  const int64_t* target_lengths;
  const int64_t* logit_lengths;
  const int64_t* ranges;
  int64_t blank;
  bool fused;
  const void* denom;      // (N, T, J) contiguous acc_t
  const void* occ_blank;  // (n, t, j) at n * gb_sn + t * gb_st + j * gb_sj
  int64_t gb_sn, gb_st, gb_sj;
  const void* occ_label;  // read for label rows only
  int64_t gl_sn, gl_st, gl_sj;
  const void* scale;  // (N,) acc_t: incoming gradient of each utterance's cost
  double clamp;       // <= 0: no clamp
  // CPU only (the CUDA kernels require the default false): grad already holds the
  // softmax of each valid row (RowParams::probs) and is turned into the gradient in place.
  bool grad_holds_probs;
};

// Mutual-information recursion, forward and backward.
struct MIParams {
  Dtype dtype;  // kFloat32 or kFloat64 (px, py, alpha, beta, loglik, grads)
  int64_t N, S, T;
  const void* px;  // (N, S, T + 1): element (n, s, t) at n * px_sn + s * (T + 1) + t
  int64_t px_sn;
  const void* py;  // (N, S + 1, T): element (n, s, t) at n * py_sn + s * T + t
  int64_t py_sn;
  const int64_t* boundary;  // (N, 4) contiguous [s_begin, t_begin, s_end, t_end]
  void* alpha;              // (N, S + 1, T + 1) contiguous
  void* beta;               // (N, S + 1, T + 1) contiguous, or nullptr
  void* loglik;             // (N,)
  const void* scale;        // (N,) or nullptr (= 1), backward only
  void* px_grad;            // (N, S, T + 1) contiguous, backward only
  void* py_grad;            // (N, S + 1, T) contiguous, backward only
};

// Reads and checks the boundary of utterance n. Returns false for an impossible
// rectangle (the utterance then gets a NaN log-likelihood and NaN gradients).
SFM_HD bool read_boundary(const int64_t* boundary, int64_t n, int64_t S, int64_t T,
                          int64_t* sb, int64_t* tb, int64_t* se, int64_t* te) {
  *sb = boundary[4 * n + 0];
  *tb = boundary[4 * n + 1];
  *se = boundary[4 * n + 2];
  *te = boundary[4 * n + 3];
  return 0 <= *sb && *sb <= *se && *se <= S && 0 <= *tb && *tb <= *te && *te <= T;
}

// Gradients of one cell (s, t) of the MI lattice (the occupancies of its two outgoing
// edges), given the cell's alpha and the beta of the two successors. Cells outside the
// boundary rectangle get 0.
template <typename T>
SFM_HD void mi_cell_grads(int64_t s, int64_t t, int64_t sb, int64_t tb, int64_t se,
                          int64_t te, T alpha, T px, T beta_up, T py, T beta_right, T loglik,
                          T scale, T* px_grad, T* py_grad) {
  const bool in_rect = s >= sb && s <= se && t >= tb && t <= te;
  *px_grad = (in_rect && s < se) ? edge_occupancy(alpha, px, beta_up, loglik) * scale : T(0);
  *py_grad = (in_rect && t < te) ? edge_occupancy(alpha, py, beta_right, loglik) * scale : T(0);
}

}  // namespace sfm
