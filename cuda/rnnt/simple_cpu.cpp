// CPU simple / smoothed RNN-T loss (the additive joiner logit[t, u, v] = am[t, v] +
// lm[u, v] of pruned RNN-T), forward and closed-form backward, one utterance per task.
//
// Forward, per utterance n (only t < T_n, u <= U_n are computed):
//   E_am[t, v] = exp(am[t, v] - max_v am[t]), s_am[t] = sum_v E_am[t, v] (likewise lm);
//   prod[u, t] = sum_v E_lm[u, v] E_am[t, v]  (a GEMM), so that
//   log sum_v exp(am[t, v] + lm[u, v]) = log prod[u, t] + max am[t] + max lm[u];
//   px / py (the symbol / blank log-probs, interpolated with the smoothing terms) go
//   straight into the lattice (lattice_cpu.h): cost = -alpha(U_n, T_n), and the edge
//   occupancies occ_x (N, U, T + 1) / occ_y (N, U + 1, T), which are both the return_grad
//   output and what the backward needs.
// Backward, with W = occ_x + occ_y per cell and Z = W / prod:
//   d cost / d am[t, v] = -g (direct - E_am[t, v] (keep (Z^T E_lm)[t, v]
//                                                 + am_scale sum_u W[u, t] / s_am[t]))
//   d cost / d lm[u, v] = -g (direct - E_lm[u, v] (keep (Z E_am)[u, v]
//                                                 + lm_scale sum_t W[u, t] / s_lm[u]))
// where direct holds (keep + scale) times the occupancies at the label / blank entries.
// The GEMMs (prod, and the two of the backward) accumulate 64 columns of an output row
// in registers.
#include <algorithm>
#include <cstring>
#include <limits>
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

constexpr int kSub = 16;  // one vector of output columns
constexpr int kSubs = 4;  // independent accumulators (4 x 16 columns) per pass

// out[i, :L] = sum_j w[j * ws + i * is] * x[j, :L] for i < I, where row j of x starts at
// x + j * xs and row i of out at out + i * os. Each pass over j accumulates kSubs
// blocks of kSub columns in registers (independent FMA chains, so their latency
// overlaps). Output columns are independent, so the blocks past the end of a row are
// moved back to end at L, overlapping the others (they rewrite equal values):
// everything stays vectorised without a scalar tail.
template <typename A>
void weighted_rows(const A* w, int64_t ws, int64_t is, int64_t I, int64_t J, const A* x,
                   int64_t xs, int64_t L, A* out, int64_t os) {
  for (int64_t i = 0; i < I; ++i) {
    A* o = out + i * os;
    if (L < kSub) {
      for (int64_t k = 0; k < L; ++k) o[k] = A(0);
      for (int64_t j = 0; j < J; ++j) {
        const A c = w[j * ws + i * is];
        for (int64_t k = 0; k < L; ++k) o[k] += c * x[j * xs + k];
      }
      continue;
    }
    for (int64_t v0 = 0; v0 < L; v0 += kSub * kSubs) {
      int64_t off[kSubs];
      for (int b = 0; b < kSubs; ++b) off[b] = std::min<int64_t>(v0 + b * kSub, L - kSub);
      A acc[kSubs][kSub];
      for (int b = 0; b < kSubs; ++b) {
        for (int k = 0; k < kSub; ++k) acc[b][k] = A(0);
      }
      for (int64_t j = 0; j < J; ++j) {
        const A c = w[j * ws + i * is];
        const A* __restrict xr = x + j * xs;
        for (int b = 0; b < kSubs; ++b) {
#pragma omp simd
          for (int k = 0; k < kSub; ++k) acc[b][k] += c * xr[off[b] + k];
        }
      }
      for (int b = 0; b < kSubs; ++b) std::memcpy(o + off[b], acc[b], sizeof(acc[b]));
    }
  }
}

// dst[c * ds + r] = src[r * ss + c] for a rows x cols block, in 16 x 16 tiles.
template <typename A>
void transpose(const A* src, int64_t rows, int64_t cols, int64_t ss, A* dst, int64_t ds) {
  constexpr int64_t kTile = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t r = r0; r < r1; ++r) dst[c * ds + r] = src[r * ss + c];
      }
    }
  }
}

// Row max, exps relative to it (into e) and their sum, for `rows` rows of V. A row
// without mass (all -inf) or with a NaN gives NaN exps: the utterance's cost is NaN.
template <typename A>
void row_exps(const A* x, int64_t rows, int64_t V, A* e, A* mx, A* sum) {
  for (int64_t r = 0; r < rows; ++r) {
    mx[r] = cpu::row_max(x + r * V, V);
    sum[r] = cpu::row_exp_sum<A, true>(x + r * V, V, mx[r], e + r * V);
  }
}

int64_t clamp_label(int64_t y, int64_t V) { return std::min<int64_t>(std::max<int64_t>(y, 0), V - 1); }

template <typename A>
void simple_forward_impl(const SimpleParams& p) {
  const int64_t N = p.N, T = p.T, U = p.U, V = p.V;
  const A keep = static_cast<A>(1.0 - p.lm_scale - p.am_scale);
  const A lm_s = static_cast<A>(p.lm_scale), am_s = static_cast<A>(p.am_scale);
  const A tiny = std::numeric_limits<A>::min();
  cpu::parallel_chunks(0, N, 1, [&](int64_t begin, int64_t end) {
    DiagLattice<A> lat(U, T);
    std::vector<A> scratch, m_am(T), m_lm(U + 1), lse_am(T), e_am_t(V * T), wy(T), wx(T);
    for (int64_t n = begin; n < end; ++n) {
      const A* am = static_cast<const A*>(p.am) + n * T * V;
      const A* lm = static_cast<const A*>(p.lm) + n * (U + 1) * V;
      A* e_am = static_cast<A*>(p.e_am) + n * T * V;
      A* e_lm = static_cast<A*>(p.e_lm) + n * (U + 1) * V;
      A* s_am = static_cast<A*>(p.s_am) + n * T;
      A* s_lm = static_cast<A*>(p.s_lm) + n * (U + 1);
      A* prod = static_cast<A*>(p.prod) + n * (U + 1) * T;
      A* occ_x = static_cast<A*>(p.occ_x) + n * U * (T + 1);
      A* occ_y = static_cast<A*>(p.occ_y) + n * (U + 1) * T;
      const int64_t* y = p.targets + n * U;
      auto* costs = static_cast<A*>(p.costs);
      const int64_t Tn = p.logit_lengths[n], Un = p.target_lengths[n];
      // Entries outside the utterance must be harmless for the backward: E = 0,
      // s = prod = 1, occupancies 0 (NaN for impossible lengths, which cost NaN).
      const bool ok = 0 <= Un && Un <= U && 0 <= Tn && Tn <= T;
      const int64_t t_used = ok ? Tn : 0, u_used = ok ? Un + 1 : 0;
      std::fill(e_am + t_used * V, e_am + T * V, A(0));
      std::fill(e_lm + u_used * V, e_lm + (U + 1) * V, A(0));
      std::fill(s_am + t_used, s_am + T, A(1));
      std::fill(s_lm + u_used, s_lm + U + 1, A(1));
      std::fill(prod, prod + (U + 1) * T, A(1));
      const A fill = ok ? A(0) : quiet_nan<A>();
      std::fill(occ_x, occ_x + U * (T + 1), fill);
      std::fill(occ_y, occ_y + (U + 1) * T, fill);
      if (!ok) {
        costs[n] = quiet_nan<A>();
        continue;
      }
      row_exps(am, Tn, V, e_am, m_am.data(), s_am);
      row_exps(lm, Un + 1, V, e_lm, m_lm.data(), s_lm);
      // prod[u, t] = sum_v E_lm[u, v] E_am[t, v], vectorised over t.
      transpose(e_am, Tn, V, V, e_am_t.data(), T);
      weighted_rows(e_lm, 1, V, Un + 1, V, e_am_t.data(), T, Tn, prod, T);
      for (int64_t t = 0; t < Tn; ++t) lse_am[t] = m_am[t] + FastMath::log(s_am[t]);
      lat.reset(scratch);
      for (int64_t u = 0; u <= Un; ++u) {
        const A* l = lm + u * V;
        const A lse_lm = m_lm[u] + FastMath::log(s_lm[u]);
        const int64_t yu = u < Un ? clamp_label(y[u], V) : 0;
        const A* pr = prod + u * T;
        const A lb = l[p.blank], ly = l[yu];
#pragma omp simd
        for (int64_t t = 0; t < Tn; ++t) {
          const A q = pr[t] > tiny ? pr[t] : tiny;  // exp products may underflow to 0
          const A norm = FastMath::log(q) + m_lm[u] + m_am[t];
          const A ab = am[t * V + p.blank], ay = am[t * V + yu];
          wy[t] = keep * (ab + lb - norm) + lm_s * (lb - lse_lm) + am_s * (ab - lse_am[t]);
          wx[t] = keep * (ay + ly - norm) + lm_s * (ly - lse_lm) + am_s * (ay - lse_am[t]);
        }
        for (int64_t t = 0; t < Tn; ++t) lat.py(u, t) = wy[t];
        if (u < Un) {
          for (int64_t t = 0; t < Tn; ++t) lat.px(u, t) = wx[t];
        }
      }
      const A ll = lat.forward(0, 0, Un, Tn);
      costs[n] = -ll;
      if (!p.need_occ) continue;
      lat.backward(0, 0, Un, Tn);
      lat.occupancies(0, 0, Un, Tn, ll);
      for (int64_t u = 0; u <= Un; ++u) {
        for (int64_t t = 0; t < Tn; ++t) {
          occ_y[u * T + t] = lat.py(u, t);
          if (u < Un) occ_x[u * (T + 1) + t] = lat.px(u, t);
        }
      }
    }
  });
}

template <typename A>
void simple_backward_impl(const SimpleParams& p) {
  const int64_t N = p.N, T = p.T, U = p.U, V = p.V;
  const A keep = static_cast<A>(1.0 - p.lm_scale - p.am_scale);
  const A lm_s = static_cast<A>(p.lm_scale), am_s = static_cast<A>(p.am_scale);
  cpu::parallel_chunks(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> z((U + 1) * T), w_t(T), w_u(U + 1);
    for (int64_t n = begin; n < end; ++n) {
      const A* e_am = static_cast<const A*>(p.e_am) + n * T * V;
      const A* e_lm = static_cast<const A*>(p.e_lm) + n * (U + 1) * V;
      const A* s_am = static_cast<const A*>(p.s_am) + n * T;
      const A* s_lm = static_cast<const A*>(p.s_lm) + n * (U + 1);
      const A* prod = static_cast<const A*>(p.prod) + n * (U + 1) * T;
      const A* occ_x = static_cast<const A*>(p.occ_x) + n * U * (T + 1);
      const A* occ_y = static_cast<const A*>(p.occ_y) + n * (U + 1) * T;
      A* g_am = static_cast<A*>(p.grad_am) + n * T * V;
      A* g_lm = static_cast<A*>(p.grad_lm) + n * (U + 1) * V;
      const int64_t* y = p.targets + n * U;
      const A g = static_cast<const A*>(p.grad_costs)[n];
      // Z = W / prod and the sums of W over u (per frame) and over t (per position).
      std::fill(w_t.begin(), w_t.end(), A(0));
      for (int64_t u = 0; u <= U; ++u) {
        A row = A(0);
        for (int64_t t = 0; t < T; ++t) {
          const A w = (u < U ? occ_x[u * (T + 1) + t] : A(0)) + occ_y[u * T + t];
          z[u * T + t] = w / prod[u * T + t];
          w_t[t] += w;
          row += w;
        }
        w_u[u] = row;
      }
      // grad_am = -g (direct - E_am (keep Z^T E_lm + am_s w_t / s_am)); grad_lm alike.
      weighted_rows(z.data(), T, 1, T, U + 1, e_lm, V, V, g_am, V);
      for (int64_t t = 0; t < T; ++t) {
        A* o = g_am + t * V;
        const A* e = e_am + t * V;
        const A c = am_s * w_t[t] / s_am[t];
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) o[v] = g * e[v] * (keep * o[v] + c);
      }
      weighted_rows(z.data(), 1, T, U + 1, T, e_am, V, V, g_lm, V);
      for (int64_t u = 0; u <= U; ++u) {
        A* o = g_lm + u * V;
        const A* e = e_lm + u * V;
        const A c = lm_s * w_u[u] / s_lm[u];
#pragma omp simd
        for (int64_t v = 0; v < V; ++v) o[v] = g * e[v] * (keep * o[v] + c);
      }
      // The direct terms: -g (keep + scale) occupancy at the label and the blank.
      for (int64_t u = 0; u <= U; ++u) {
        const int64_t yu = u < U ? clamp_label(y[u], V) : 0;
        A sum_y = A(0), sum_x = A(0);
        for (int64_t t = 0; t < T; ++t) {
          const A oy = occ_y[u * T + t];
          g_am[t * V + p.blank] -= g * (keep + am_s) * oy;
          sum_y += oy;
          if (u < U) {
            const A ox = occ_x[u * (T + 1) + t];
            g_am[t * V + yu] -= g * (keep + am_s) * ox;
            sum_x += ox;
          }
        }
        g_lm[u * V + p.blank] -= g * (keep + lm_s) * sum_y;
        if (u < U) g_lm[u * V + yu] -= g * (keep + lm_s) * sum_x;
      }
    }
  });
}

}  // namespace

void simple_forward_cpu(const SimpleParams& p) {
  if (p.dtype == Dtype::kFloat64) {
    simple_forward_impl<double>(p);
  } else {
    simple_forward_impl<float>(p);
  }
}

void simple_backward_cpu(const SimpleParams& p) {
  if (p.dtype == Dtype::kFloat64) {
    simple_backward_impl<double>(p);
  } else {
    simple_backward_impl<float>(p);
  }
}

}  // namespace sfm
