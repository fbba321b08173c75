// CPU row passes of the RNN-T loss and the fused CPU loss.
//
// Row pass (forward): for each row (n, t, j) of the logits, the log-normaliser (a max
// pass and an exp-sum pass, each with kLanes independent accumulators and the tail as
// one padded block, so that both loops vectorise fully) and the blank / label
// log-probabilities. With RowParams::probs the exp pass also stores the softmax row, so
// that the backward needs no second exp over the logits: it scales that row in place.
//
// Row pass (backward): writes each gradient row once, zeros included.
//
// Fused loss (rnnt_loss_cpu_forward): the forward row pass into compact (N, T, J)
// arrays, then, per utterance, the lattice (lattice_cpu.h): scatter of the rows into
// anti-diagonal arrays, alpha, and, when a gradient is wanted, beta and the edge
// occupancies, gathered back per row. The backward is the backward row pass.
//
// Rows, and utterances, are split over threads with cpu::parallel_chunks
// (cpu_parallel.h).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_math.h"
#include "cpu_parallel.h"
#include "lattice_cpu.h"
#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

using cpu::DiagLattice;
using cpu::FastMath;
using cpu::row_exp_sum;
using cpu::row_max;

template <typename scalar_t>
using acc_type = typename std::conditional<std::is_same<scalar_t, double>::value, double,
                                           float>::type;

// Rows are handled kGroup at a time, one phase (max, exp-sum, log, outputs) for all
// rows of the group after the other: each row alone is a serial chain of dependent
// steps (the reductions, the exp polynomial, the log), and the chains of different rows
// can only overlap in the processor when they sit next to each other in the code.
constexpr int kGroup = 8;

// Rows per chunk of work (~32k elements, a multiple of the row group).
int64_t row_chunk(int64_t V) {
  const int64_t rows = std::max<int64_t>(1, 32768 / std::max<int64_t>(V, 1));
  return (rows + kGroup - 1) / kGroup * kGroup;
}

// Returns the row in acc_t: the row itself, or a conversion into `buffer`.
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
  constexpr bool kAcc = std::is_same<scalar_t, acc_t>::value;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* out_blank = static_cast<acc_t*>(p.out_blank);
  auto* out_label = static_cast<acc_t*>(p.out_label);
  auto* denom = static_cast<acc_t*>(p.denom);
  // The softmax rows are stored only where they have the accumulation type.
  acc_t* probs = kAcc ? static_cast<acc_t*>(p.probs) : nullptr;
  const int64_t V = p.V;
  cpu::parallel_chunks(0, p.N * p.T * p.J, row_chunk(V), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(kAcc ? 0 : kGroup * V);
    RowCursor c(begin, p.T, p.J);
    for (int64_t r0 = begin; r0 < end; r0 += kGroup) {
      const int G = static_cast<int>(std::min<int64_t>(kGroup, end - r0));
      RowInfo info[kGroup];
      int64_t ob_at[kGroup], ol_at[kGroup];
      const acc_t* x[kGroup];
      acc_t m[kGroup], sum[kGroup];
      for (int g = 0; g < G; ++g, c.next()) {
        info[g] = row_info(c.n, c.t, c.j, p.T, p.J, p.S, V, p.blank, p.targets,
                           p.target_lengths, p.logit_lengths, p.ranges);
        ob_at[g] = c.n * p.ob_sn + c.t * p.ob_st + c.j * p.ob_sj;
        ol_at[g] = c.n * p.ol_sn + c.t * p.ol_st + c.j * p.ol_sj;
        const scalar_t* row = logits + (r0 + g) * V;
        if constexpr (kAcc) {
          x[g] = row;
        } else {
          acc_t* b = buffer.data() + g * V;
          if (info[g].label != kInvalidRow) {
            for (int64_t v = 0; v < V; ++v) b[v] = static_cast<acc_t>(row[v]);
          }
          x[g] = b;
        }
      }
      if (p.fused) {
        for (int g = 0; g < G; ++g) {
          m[g] = info[g].label != kInvalidRow ? row_max(x[g], V) : acc_t(0);
        }
        for (int g = 0; g < G; ++g) {
          const bool live = info[g].label != kInvalidRow && m[g] != neg_inf<acc_t>();
          acc_t* pr = probs != nullptr ? probs + (r0 + g) * V : nullptr;
          if (!live) {
            sum[g] = acc_t(1);
          } else if (pr != nullptr) {
            sum[g] = row_exp_sum<acc_t, true>(x[g], V, m[g], pr);
          } else {
            sum[g] = row_exp_sum<acc_t, false>(x[g], V, m[g], nullptr);
          }
        }
      }
      for (int g = 0; g < G; ++g) {
        const int64_t r = r0 + g;
        const int64_t label = info[g].label;
        if (label == kInvalidRow) {
          denom[r] = acc_t(0);
          if (p.dense) out_blank[ob_at[g]] = out_label[ol_at[g]] = neg_inf<acc_t>();
          continue;
        }
        acc_t d = acc_t(0);
        if (p.fused) {
          acc_t* pr = probs != nullptr ? probs + r * V : nullptr;
          if (m[g] == neg_inf<acc_t>()) {
            // A row of -inf has no mass: -inf, or NaN if it holds one.
            d = m[g];
            for (int64_t v = 0; v < V; ++v) d = x[g][v] != x[g][v] ? x[g][v] : d;
            if (pr != nullptr) std::fill(pr, pr + V, acc_t(0));
          } else {
            d = m[g] + FastMath::log(sum[g]);
            if (pr != nullptr) {
              const acc_t inv = acc_t(1) / sum[g];
              for (int64_t v = 0; v < V; ++v) pr[v] *= inv;
            }
          }
        }
        denom[r] = d;
        const acc_t xb = x[g][p.blank];
        out_blank[ob_at[g]] = p.fused ? log_softmax_entry(xb, d) : xb;
        if (label >= 0) {
          const acc_t xl = x[g][label];
          out_label[ol_at[g]] = p.fused ? log_softmax_entry(xl, d) : xl;
        } else {
          if (p.dense) out_label[ol_at[g]] = neg_inf<acc_t>();
          if (label == kBadLabel) out_blank[ob_at[g]] = quiet_nan<acc_t>();  // poisons it
        }
      }
    }
  });
}

// out[v] = (clamped) exp(x[v] - d) * occ * s for a whole row; out may be x itself.
template <typename A>
void softmax_grad_row(const A* x, A* out, int64_t V, A d, A occ, A s, A clamp) {
  if (clamp > A(0)) {
    for (int64_t v = 0; v < V; ++v) out[v] = clamp_grad(FastMath::exp(x[v] - d) * occ, clamp) * s;
  } else if (x == out) {  // in place: one pointer, so the loop needs no alias check
    const A f = occ * s;
    for (int64_t v = 0; v < V; ++v) out[v] = FastMath::exp(out[v] - d) * f;
  } else {
    const A f = occ * s;
    const A* __restrict xr = x;
    A* __restrict o = out;
    for (int64_t v = 0; v < V; ++v) o[v] = FastMath::exp(xr[v] - d) * f;
  }
}

// p[v] = (clamped) p[v] * occ * s in place (the row holds the softmax).
template <typename A>
void scale_probs_row(A* __restrict p, int64_t V, A occ, A s, A clamp) {
  if (clamp > A(0)) {
    for (int64_t v = 0; v < V; ++v) p[v] = clamp_grad(p[v] * occ, clamp) * s;
  } else {
    const A f = occ * s;
    for (int64_t v = 0; v < V; ++v) p[v] *= f;
  }
}

template <typename scalar_t>
void logits_grad_impl(const GradParams& p) {
  using acc_t = acc_type<scalar_t>;
  constexpr bool kAcc = std::is_same<scalar_t, acc_t>::value;
  constexpr int64_t kChunk = 1024;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* grad = static_cast<scalar_t*>(p.grad);
  const auto* denom = static_cast<const acc_t*>(p.denom);
  const auto* occ_blank = static_cast<const acc_t*>(p.occ_blank);
  const auto* occ_label = static_cast<const acc_t*>(p.occ_label);
  const auto* scale = static_cast<const acc_t*>(p.scale);
  const acc_t clamp = static_cast<acc_t>(p.clamp);
  const bool holds_probs = kAcc && p.grad_holds_probs && p.fused;
  const int64_t V = p.V;
  cpu::parallel_chunks(0, p.N * p.T * p.J, row_chunk(V), [&](int64_t begin, int64_t end) {
    acc_t chunk[kChunk];
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
      // Rows with no probability mass (padding, unreachable cells, infeasible
      // utterances) are plain zeros; `occ == 0` is false for NaN.
      if (info.label == kInvalidRow || occ == acc_t(0)) {
        std::memset(static_cast<void*>(out), 0, sizeof(scalar_t) * V);
        continue;
      }
      const acc_t s = scale[n];
      const acc_t d = denom[r];
      const int64_t blank = p.blank, label = info.label;
      // The softmax of the blank and the label, read before the row is overwritten.
      auto softmax_at = [&](int64_t v) -> acc_t {
        if (!p.fused) return acc_t(0);
        if (holds_probs) return static_cast<acc_t>(out[v]);
        return FastMath::exp(static_cast<acc_t>(x[v]) - d);
      };
      const acc_t g_blank =
          clamp_grad(logit_grad(softmax_at(blank) * occ, true, false, ob, ol), clamp) * s;
      const acc_t g_label =
          label >= 0
              ? clamp_grad(logit_grad(softmax_at(label) * occ, false, true, ob, ol), clamp) * s
              : acc_t(0);
      if (!p.fused) {
        std::memset(static_cast<void*>(out), 0, sizeof(scalar_t) * V);
      } else if constexpr (kAcc) {
        if (holds_probs) {
          scale_probs_row<acc_t>(out, V, occ, s, clamp);
        } else {
          softmax_grad_row<acc_t>(x, out, V, d, occ, s, clamp);
        }
      } else {
        // float16 / bfloat16: convert a chunk at a time (the gradient may be written in
        // place of the logits, so each chunk is read before it is written).
        for (int64_t v0 = 0; v0 < V; v0 += kChunk) {
          const int64_t len = std::min<int64_t>(kChunk, V - v0);
          for (int64_t k = 0; k < len; ++k) chunk[k] = static_cast<acc_t>(x[v0 + k]);
          softmax_grad_row<acc_t>(chunk, chunk, len, d, occ, s, clamp);
          for (int64_t k = 0; k < len; ++k) out[v0 + k] = static_cast<scalar_t>(chunk[k]);
        }
      }
      out[blank] = static_cast<scalar_t>(g_blank);
      if (label >= 0) out[label] = static_cast<scalar_t>(g_label);
    }
  });
}

// Per utterance: lattice of the rows' log-probs, alpha (loglik) and, with a gradient,
// the occupancies written back over the row arrays (lp_blank -> occ_blank, ...).
template <typename A>
void loss_lattice_impl(const LossParams& p) {
  const int64_t T = p.T, J = p.J, S = p.S;
  auto* lp_blank = static_cast<A*>(p.lp_blank);
  auto* lp_label = static_cast<A*>(p.lp_label);
  auto* costs = static_cast<A*>(p.costs);
  const int64_t cells = (S + 1) * (T + 1);
  const int64_t chunk = std::max<int64_t>(1, 20000 / (cells + T * J + 1));
  cpu::parallel_chunks(0, p.N, chunk, [&](int64_t begin, int64_t end) {
    DiagLattice<A> lat(S, T);
    std::vector<A> scratch;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t Tn = p.logit_lengths[n];
      const int64_t Un = p.target_lengths[n];
      A* ob = lp_blank + n * T * J;
      A* ol = lp_label + n * T * J;
      const int64_t* ranges = p.ranges != nullptr ? p.ranges + n * T * J : nullptr;
      if (Un < 0 || Un > S || Tn < 0 || Tn > T) {  // impossible lengths: NaN, no crash
        costs[n] = quiet_nan<A>();
        if (p.need_grad) {
          std::fill(ob, ob + T * J, quiet_nan<A>());
          std::fill(ol, ol + T * J, quiet_nan<A>());
        }
        continue;
      }
      lat.reset(scratch);
      for (int64_t t = 0; t < Tn; ++t) {
        for (int64_t j = 0; j < J; ++j) {
          const int64_t u = ranges != nullptr ? ranges[t * J + j] : j;
          if (u < 0 || u > Un) continue;
          lat.py(u, t) = ob[t * J + j];
          if (u < Un) lat.px(u, t) = ol[t * J + j];
        }
      }
      const A ll = lat.forward(0, 0, Un, Tn);
      costs[n] = -ll;
      if (!p.need_grad) continue;
      lat.backward(0, 0, Un, Tn);
      lat.occupancies(0, 0, Un, Tn, ll);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < J; ++j) {
          const int64_t u = ranges != nullptr ? ranges[t * J + j] : j;
          const bool valid = t < Tn && u >= 0 && u <= Un;
          ob[t * J + j] = valid ? lat.py(u, t) : A(0);
          ol[t * J + j] = valid && u < Un ? lat.px(u, t) : A(0);
        }
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

void loss_lattice_cpu(const LossParams& p) {
  if (p.dtype == Dtype::kFloat64) {
    loss_lattice_impl<double>(p);
  } else {
    loss_lattice_impl<float>(p);
  }
}

}  // namespace sfm
