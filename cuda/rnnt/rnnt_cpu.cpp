// CPU row passes of the RNN-T loss: the forward log-normaliser / blank / label gather and
// the backward gradient write. Rows are independent and split over threads with
// at::parallel_for; the loops over the vocabulary are written so that the compiler
// vectorises them (fixed-width lane arrays, a branch-free exp, no aliasing between the
// input and output buffers).
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

constexpr int kLanes = 16;    // independent accumulators per reduction (vector width)
constexpr int64_t kChunk = 1024;  // elements converted / written per block in the grad pass

// exp(x) for float without branches or calls, so that loops over it vectorise. Relative
// error ~2e-7 on [-87.3, 88.3]; returns exactly 0 below -87.3 (so exp(-inf) = 0) and
// propagates NaN (every comparison below is false for NaN).
inline float fast_expf(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.3f ? 88.3f : xc;
  const float kn = xc * kLog2e + kShift;
  const float n = kn - kShift;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln(2) / 2
  // Taylor polynomial of degree 7 (truncation error < 1e-8 on |r| <= 0.347).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t kn_bits;
  int32_t shift_bits;
  std::memcpy(&kn_bits, &kn, sizeof(kn_bits));
  std::memcpy(&shift_bits, &kShift, sizeof(shift_bits));
  const int32_t scale_bits = (kn_bits - shift_bits + 127) << 23;  // 2^n, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  const float y = p * scale;
  return x < -87.3f ? 0.0f : y;
}

inline float acc_exp(float x) { return fast_expf(x); }
inline double acc_exp(double x) { return std::exp(x); }

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double,
                                           float>::type;

// Returns a pointer to the row in acc_t, converting into `buffer` when needed.
template <typename scalar_t, typename acc_t>
const acc_t* row_as_acc(const scalar_t* x, int64_t V, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    return x;
  } else {
    buffer.resize(V);
    for (int64_t v = 0; v < V; ++v) buffer[v] = static_cast<acc_t>(x[v]);
    return buffer.data();
  }
}

// log(sum_v exp(x_v)) over a row: a max pass and a sum pass, each with kLanes
// independent accumulators. A row of -inf gives -inf; NaN propagates.
template <typename acc_t>
acc_t row_logsumexp(const acc_t* x, int64_t V) {
  acc_t lane_max[kLanes];
  for (int k = 0; k < kLanes; ++k) lane_max[k] = neg_inf<acc_t>();
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const acc_t xv = x[v + k];
      lane_max[k] = xv > lane_max[k] ? xv : lane_max[k];
    }
  }
  acc_t m = neg_inf<acc_t>();
  for (int k = 0; k < kLanes; ++k) m = lane_max[k] > m ? lane_max[k] : m;
  for (; v < V; ++v) m = x[v] > m ? x[v] : m;
  if (m == neg_inf<acc_t>()) {
    for (int64_t i = 0; i < V; ++i) {
      if (x[i] != x[i]) return x[i];  // NaN row
    }
    return m;
  }
  acc_t lane_sum[kLanes];
  for (int k = 0; k < kLanes; ++k) lane_sum[k] = acc_t(0);
  v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane_sum[k] += acc_exp(x[v + k] - m);
  }
  acc_t sum = acc_t(0);
  for (int k = 0; k < kLanes; ++k) sum += lane_sum[k];
  for (; v < V; ++v) sum += acc_exp(x[v] - m);
  return m + sfm_log(sum);
}

// (n, t, j) of consecutive rows without a division per row.
struct RowCursor {
  int64_t n, t, j, T, J;
  RowCursor(int64_t r, int64_t T_, int64_t J_)
      : n(r / (T_ * J_)), t((r / J_) % T_), j(r % J_), T(T_), J(J_) {}
  void next() {
    if (++j == J) {
      j = 0;
      if (++t == T) {
        t = 0;
        ++n;
      }
    }
  }
};

template <typename scalar_t>
void row_logprobs_impl(const RowParams& p) {
  using acc_t = acc_type<scalar_t>;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* out_blank = static_cast<acc_t*>(p.out_blank);
  auto* out_label = static_cast<acc_t*>(p.out_label);
  auto* denom = static_cast<acc_t*>(p.denom);
  const int64_t rows = p.N * p.T * p.J;
  const int64_t V = p.V;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(V, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer;
    RowCursor c(begin, p.T, p.J);
    for (int64_t r = begin; r < end; ++r, c.next()) {
      const int64_t n = c.n, t = c.t, j = c.j;
      const RowInfo info = row_info(n, t, j, p.T, p.J, p.S, V, p.blank, p.targets,
                                    p.target_lengths, p.logit_lengths, p.ranges);
      if (info.label == kInvalidRow) {
        denom[r] = acc_t(0);
        continue;
      }
      const scalar_t* x = logits + r * V;
      acc_t d = acc_t(0);
      if (p.fused) d = row_logsumexp(row_as_acc<scalar_t, acc_t>(x, V, buffer), V);
      denom[r] = d;
      const acc_t xb = static_cast<acc_t>(x[p.blank]);
      acc_t& ob = out_blank[n * p.ob_sn + t * p.ob_st + j * p.ob_sj];
      ob = p.fused ? log_softmax_entry(xb, d) : xb;
      if (info.label >= 0) {
        const acc_t xl = static_cast<acc_t>(x[info.label]);
        out_label[n * p.ol_sn + t * p.ol_st + j * p.ol_sj] =
            p.fused ? log_softmax_entry(xl, d) : xl;
      } else if (info.label == kBadLabel) {
        ob = quiet_nan<acc_t>();  // poisons the utterance; the Python layer reports why
      }
    }
  });
}

template <typename scalar_t>
void logits_grad_impl(const GradParams& p) {
  using acc_t = acc_type<scalar_t>;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* grad = static_cast<scalar_t*>(p.grad);
  const auto* denom = static_cast<const acc_t*>(p.denom);
  const auto* occ_blank = static_cast<const acc_t*>(p.occ_blank);
  const auto* occ_label = static_cast<const acc_t*>(p.occ_label);
  const auto* scale = static_cast<const acc_t*>(p.scale);
  const acc_t clamp = static_cast<acc_t>(p.clamp);
  const int64_t rows = p.N * p.T * p.J;
  const int64_t V = p.V;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(V, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    // Values go through a local buffer so that the vectorised loop never writes memory
    // it reads from (the gradient may be written in place of the logits).
    acc_t buffer[kChunk];
    RowCursor c(begin, p.T, p.J);
    for (int64_t r = begin; r < end; ++r, c.next()) {
      const int64_t n = c.n, t = c.t, j = c.j;
      const RowInfo info = row_info(n, t, j, p.T, p.J, p.S, V, p.blank, p.targets,
                                    p.target_lengths, p.logit_lengths, p.ranges);
      scalar_t* out = grad + r * V;
      const scalar_t* x = logits + r * V;
      acc_t ob = acc_t(0);
      acc_t ol = acc_t(0);
      if (info.label != kInvalidRow) {
        ob = occ_blank[n * p.gb_sn + t * p.gb_st + j * p.gb_sj];
        if (info.label >= 0) ol = occ_label[n * p.gl_sn + t * p.gl_st + j * p.gl_sj];
        if (info.label == kBadLabel) ob = quiet_nan<acc_t>();
      }
      const acc_t occ = ob + ol;
      const acc_t s = scale[n];
      const acc_t d = denom[r];
      const int64_t blank = p.blank;
      const int64_t label = info.label;
      // Rows with no probability mass (padding, unreachable cells, infeasible
      // utterances) are plain zeros; `occ == 0` is false for NaN.
      const bool zero_row = info.label == kInvalidRow || occ == acc_t(0);
      const bool softmax = p.fused && !zero_row;
      // The two entries with a path term, computed before any write (in place, the
      // chunk holding them may be overwritten before they are reached).
      acc_t g_blank = acc_t(0);
      acc_t g_label = acc_t(0);
      if (!zero_row) {
        const acc_t eb = softmax ? acc_exp(static_cast<acc_t>(x[blank]) - d) * occ : acc_t(0);
        g_blank = clamp_grad(logit_grad(eb, true, false, ob, ol), clamp) * s;
        if (label >= 0) {
          const acc_t el = softmax ? acc_exp(static_cast<acc_t>(x[label]) - d) * occ : acc_t(0);
          g_label = clamp_grad(logit_grad(el, false, true, ob, ol), clamp) * s;
        }
      }
      for (int64_t v0 = 0; v0 < V; v0 += kChunk) {
        const int64_t len = std::min<int64_t>(kChunk, V - v0);
        if (softmax && clamp > acc_t(0)) {
          for (int64_t k = 0; k < len; ++k) {
            const acc_t e = acc_exp(static_cast<acc_t>(x[v0 + k]) - d) * occ;
            buffer[k] = clamp_grad(e, clamp) * s;
          }
        } else if (softmax) {
          const acc_t os = occ * s;
          for (int64_t k = 0; k < len; ++k) {
            buffer[k] = acc_exp(static_cast<acc_t>(x[v0 + k]) - d) * os;
          }
        } else {
          for (int64_t k = 0; k < len; ++k) buffer[k] = acc_t(0);
        }
        if (!zero_row) {
          if (blank >= v0 && blank < v0 + len) buffer[blank - v0] = g_blank;
          if (label >= v0 && label < v0 + len) buffer[label - v0] = g_label;
        }
        for (int64_t k = 0; k < len; ++k) out[v0 + k] = static_cast<scalar_t>(buffer[k]);
      }
    }
  });
}

}  // namespace

void row_logprobs_cpu(const RowParams& p) {
  switch (p.dtype) {
    case Dtype::kFloat32: return row_logprobs_impl<float>(p);
    case Dtype::kFloat64: return row_logprobs_impl<double>(p);
    case Dtype::kFloat16: return row_logprobs_impl<c10::Half>(p);
    case Dtype::kBFloat16: return row_logprobs_impl<c10::BFloat16>(p);
  }
}

void logits_grad_cpu(const GradParams& p) {
  switch (p.dtype) {
    case Dtype::kFloat32: return logits_grad_impl<float>(p);
    case Dtype::kFloat64: return logits_grad_impl<double>(p);
    case Dtype::kFloat16: return logits_grad_impl<c10::Half>(p);
    case Dtype::kBFloat16: return logits_grad_impl<c10::BFloat16>(p);
  }
}

}  // namespace sfm
