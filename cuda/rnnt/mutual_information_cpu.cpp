// CPU mutual-information recursion (the alpha / beta recursions of the RNN-T lattice)
// and its gradient. Utterances are independent and split over threads with
// at::parallel_for; each utterance is a plain row-major sweep of its rectangle.
#include <ATen/Parallel.h>

#include <algorithm>

#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

// Views of utterance n's slices of the MI tensors.
template <typename T>
struct Utterance {
  const T* px;  // (S, T + 1)
  const T* py;  // (S + 1, T)
  T* alpha;     // (S + 1, T + 1)
  T* beta;      // (S + 1, T + 1) or nullptr
  int64_t sb, tb, se, te;
  bool ok;
};

template <typename T>
Utterance<T> utterance(const MIParams& p, int64_t n) {
  Utterance<T> u;
  const int64_t cells = (p.S + 1) * (p.T + 1);
  u.px = static_cast<const T*>(p.px) + n * p.px_sn;
  u.py = static_cast<const T*>(p.py) + n * p.py_sn;
  u.alpha = static_cast<T*>(p.alpha) + n * cells;
  u.beta = p.beta != nullptr ? static_cast<T*>(p.beta) + n * cells : nullptr;
  u.ok = read_boundary(p.boundary, n, p.S, p.T, &u.sb, &u.tb, &u.se, &u.te);
  return u;
}

// Rows are swept kRows at a time with a skew of one column per row: at step `tt`, row
// s0 + k handles column tt - k. The cells of one step are independent, so the
// processor overlaps their exp / log1p latency chains instead of waiting on one.
constexpr int64_t kRows = 4;

// alpha(s, t) = log_add(alpha(s - 1, t) + px(s - 1, t), alpha(s, t - 1) + py(s, t - 1)).
template <typename T>
T alpha_pass(const Utterance<T>& u, int64_t Tt) {
  const int64_t W = Tt + 1;  // row stride of alpha and px
  for (int64_t s0 = u.sb; s0 <= u.se; s0 += kRows) {
    const int64_t rows = std::min(kRows, u.se - s0 + 1);
    for (int64_t tt = u.tb; tt <= u.te + rows - 1; ++tt) {
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t s = s0 + k;
        const int64_t t = tt - k;
        if (t < u.tb || t > u.te) continue;
        T v;
        if (s == u.sb && t == u.tb) {
          v = T(0);
        } else {
          const T from_s = s > u.sb ? u.alpha[(s - 1) * W + t] : neg_inf<T>();
          const T w_s = s > u.sb ? u.px[(s - 1) * W + t] : T(0);
          const T from_t = t > u.tb ? u.alpha[s * W + t - 1] : neg_inf<T>();
          const T w_t = t > u.tb ? u.py[s * Tt + t - 1] : T(0);
          v = cell(from_s, w_s, from_t, w_t);
        }
        u.alpha[s * W + t] = v;
      }
    }
  }
  return u.alpha[u.se * W + u.te];
}

// beta(s, t) = log_add(beta(s + 1, t) + px(s, t), beta(s, t + 1) + py(s, t)); the same
// skewed sweep, mirrored.
template <typename T>
void beta_pass(const Utterance<T>& u, int64_t Tt) {
  const int64_t W = Tt + 1;
  for (int64_t s0 = u.se; s0 >= u.sb; s0 -= kRows) {
    const int64_t rows = std::min(kRows, s0 - u.sb + 1);
    for (int64_t tt = u.te; tt >= u.tb - rows + 1; --tt) {
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t s = s0 - k;
        const int64_t t = tt + k;
        if (t < u.tb || t > u.te) continue;
        T v;
        if (s == u.se && t == u.te) {
          v = T(0);
        } else {
          const T from_s = s < u.se ? u.beta[(s + 1) * W + t] : neg_inf<T>();
          const T w_s = s < u.se ? u.px[s * W + t] : T(0);
          const T from_t = t < u.te ? u.beta[s * W + t + 1] : neg_inf<T>();
          const T w_t = t < u.te ? u.py[s * Tt + t] : T(0);
          v = cell(from_s, w_s, from_t, w_t);
        }
        u.beta[s * W + t] = v;
      }
    }
  }
}

template <typename T>
void forward_impl(const MIParams& p) {
  auto* loglik = static_cast<T*>(p.loglik);
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Utterance<T> u = utterance<T>(p, n);
      if (!u.ok) {
        loglik[n] = quiet_nan<T>();
        continue;
      }
      loglik[n] = alpha_pass(u, p.T);
      if (u.beta != nullptr) beta_pass(u, p.T);
    }
  });
}

template <typename T>
void backward_impl(const MIParams& p, bool compute_beta) {
  const auto* loglik = static_cast<const T*>(p.loglik);
  const auto* scale = static_cast<const T*>(p.scale);
  const int64_t Tt = p.T;
  const int64_t W = Tt + 1;
  at::parallel_for(0, p.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Utterance<T> u = utterance<T>(p, n);
      T* gx = static_cast<T*>(p.px_grad) + n * p.S * W;
      T* gy = static_cast<T*>(p.py_grad) + n * (p.S + 1) * Tt;
      if (!u.ok) {
        for (int64_t i = 0; i < p.S * W; ++i) gx[i] = quiet_nan<T>();
        for (int64_t i = 0; i < (p.S + 1) * Tt; ++i) gy[i] = quiet_nan<T>();
        continue;
      }
      if (compute_beta) beta_pass(u, Tt);
      const T ll = loglik[n];
      const T sc = scale != nullptr ? scale[n] : T(1);
      for (int64_t s = 0; s <= p.S; ++s) {
        for (int64_t t = 0; t <= Tt; ++t) {
          const bool in_rect = s >= u.sb && s <= u.se && t >= u.tb && t <= u.te;
          // Only cells inside the rectangle are read: alpha / beta are unspecified outside.
          const T a = in_rect ? u.alpha[s * W + t] : T(0);
          const bool has_up = in_rect && s < u.se;
          const bool has_right = in_rect && t < u.te;
          const T wx = has_up ? u.px[s * W + t] : T(0);
          const T bu = has_up ? u.beta[(s + 1) * W + t] : T(0);
          const T wy = has_right ? u.py[s * Tt + t] : T(0);
          const T br = has_right ? u.beta[s * W + t + 1] : T(0);
          T g_x;
          T g_y;
          mi_cell_grads(s, t, u.sb, u.tb, u.se, u.te, a, wx, bu, wy, br, ll, sc, &g_x, &g_y);
          if (s < p.S) gx[s * W + t] = g_x;
          if (t < Tt) gy[s * Tt + t] = g_y;
        }
      }
    }
  });
}

}  // namespace

void mi_forward_cpu(const MIParams& p) {
  if (p.dtype == Dtype::kFloat64) {
    forward_impl<double>(p);
  } else {
    forward_impl<float>(p);
  }
}

void mi_backward_cpu(const MIParams& p, bool compute_beta) {
  if (p.dtype == Dtype::kFloat64) {
    backward_impl<double>(p, compute_beta);
  } else {
    backward_impl<float>(p, compute_beta);
  }
}

}  // namespace sfm
