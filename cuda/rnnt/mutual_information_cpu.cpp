// CPU mutual-information recursion (the alpha / beta recursions of the RNN-T lattice)
// and its gradient, for the operators mutual_information_forward / _backward.
//
// Utterances are independent and split over threads with cpu::parallel_chunks. Each one is
// copied into a DiagLattice (lattice_cpu.h: arrays by anti-diagonal, one vectorised loop
// per diagonal) and the results are copied back to the operators' (S + 1, T + 1)
// row-major layout. The copies are O(cells) and cheap next to the log_add of each cell.
#include <algorithm>
#include <vector>

#include "cpu_parallel.h"
#include "lattice_cpu.h"
#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

using cpu::DiagLattice;
using cpu::FastMath;

// Utterances per chunk of work (~20k cells).
int64_t utterance_chunk(const MIParams& p) {
  return std::max<int64_t>(1, 20000 / ((p.S + 1) * (p.T + 1) + 1));
}

// Loads the edges of utterance n that lie inside its rectangle (the others stay -inf).
template <typename T>
void load_edges(const MIParams& p, int64_t n, int64_t sb, int64_t tb, int64_t se, int64_t te,
                DiagLattice<T>& lat) {
  const int64_t Tt = p.T;
  const T* px = static_cast<const T*>(p.px) + n * p.px_sn;
  const T* py = static_cast<const T*>(p.py) + n * p.py_sn;
  for (int64_t s = sb; s < se; ++s) {
    for (int64_t t = tb; t <= te; ++t) lat.px(s, t) = px[s * (Tt + 1) + t];
  }
  for (int64_t s = sb; s <= se; ++s) {
    for (int64_t t = tb; t < te; ++t) lat.py(s, t) = py[s * Tt + t];
  }
}

// Writes alpha (or beta) of the rectangle into out (S + 1, T + 1), -inf elsewhere.
template <typename T, typename Get>
void store_cells(int64_t S, int64_t Tt, int64_t sb, int64_t tb, int64_t se, int64_t te, T* out,
                 Get get) {
  const int64_t W = Tt + 1;
  for (int64_t s = 0; s <= S; ++s) {
    T* row = out + s * W;
    const bool in_s = s >= sb && s <= se;
    for (int64_t t = 0; t <= Tt; ++t) {
      row[t] = (in_s && t >= tb && t <= te) ? get(s, t) : neg_inf<T>();
    }
  }
}

template <typename T>
void forward_impl(const MIParams& p) {
  auto* loglik = static_cast<T*>(p.loglik);
  const int64_t cells = (p.S + 1) * (p.T + 1);
  cpu::parallel_chunks(0, p.N, utterance_chunk(p), [&](int64_t begin, int64_t end) {
    DiagLattice<T> lat(p.S, p.T);
    std::vector<T> scratch;
    for (int64_t n = begin; n < end; ++n) {
      T* alpha = static_cast<T*>(p.alpha) + n * cells;
      T* beta = p.beta != nullptr ? static_cast<T*>(p.beta) + n * cells : nullptr;
      int64_t sb, tb, se, te;
      if (!read_boundary(p.boundary, n, p.S, p.T, &sb, &tb, &se, &te)) {
        loglik[n] = quiet_nan<T>();
        std::fill(alpha, alpha + cells, quiet_nan<T>());
        if (beta != nullptr) std::fill(beta, beta + cells, quiet_nan<T>());
        continue;
      }
      lat.reset(scratch);
      load_edges(p, n, sb, tb, se, te, lat);
      loglik[n] = lat.forward(sb, tb, se, te);
      store_cells(p.S, p.T, sb, tb, se, te, alpha, [&](int64_t s, int64_t t) {
        return lat.alpha(s, t);
      });
      if (beta != nullptr) {
        lat.backward(sb, tb, se, te);
        store_cells(p.S, p.T, sb, tb, se, te, beta, [&](int64_t s, int64_t t) {
          return lat.beta(s, t);
        });
      }
    }
  });
}

template <typename T>
void backward_impl(const MIParams& p, bool compute_beta) {
  const auto* loglik = static_cast<const T*>(p.loglik);
  const auto* scale = static_cast<const T*>(p.scale);
  const int64_t S = p.S, Tt = p.T, W = Tt + 1;
  const int64_t cells = (S + 1) * W;
  cpu::parallel_chunks(0, p.N, utterance_chunk(p), [&](int64_t begin, int64_t end) {
    DiagLattice<T> lat(S, Tt);
    std::vector<T> scratch;
    for (int64_t n = begin; n < end; ++n) {
      const T* px = static_cast<const T*>(p.px) + n * p.px_sn;
      const T* py = static_cast<const T*>(p.py) + n * p.py_sn;
      const T* alpha = static_cast<const T*>(p.alpha) + n * cells;
      T* beta = static_cast<T*>(p.beta) + n * cells;
      T* gx = static_cast<T*>(p.px_grad) + n * S * W;
      T* gy = static_cast<T*>(p.py_grad) + n * (S + 1) * Tt;
      int64_t sb, tb, se, te;
      if (!read_boundary(p.boundary, n, S, Tt, &sb, &tb, &se, &te)) {
        std::fill(gx, gx + S * W, quiet_nan<T>());
        std::fill(gy, gy + (S + 1) * Tt, quiet_nan<T>());
        continue;
      }
      if (compute_beta) {
        lat.reset(scratch);
        load_edges(p, n, sb, tb, se, te, lat);
        lat.backward(sb, tb, se, te);
        store_cells(S, Tt, sb, tb, se, te, beta, [&](int64_t s, int64_t t) {
          return lat.beta(s, t);
        });
      }
      const T ll = loglik[n];
      const T sc = scale != nullptr ? scale[n] : T(1);
      // Row-major occupancies, one vectorised loop per row; only cells inside the
      // rectangle are read (alpha / beta are unspecified outside).
      for (int64_t s = 0; s < S; ++s) {
        T* g = gx + s * W;
        if (s < sb || s >= se) {
          std::fill(g, g + W, T(0));
          continue;
        }
        const T* a = alpha + s * W;
        const T* w = px + s * W;
        const T* b = beta + (s + 1) * W;
        for (int64_t t = 0; t <= Tt; ++t) {
          const bool in = t >= tb && t <= te;
          const T occ = edge_occupancy<T, FastMath>(in ? a[t] : T(0), in ? w[t] : T(0),
                                                    in ? b[t] : T(0), ll);
          g[t] = in ? occ * sc : T(0);
        }
      }
      for (int64_t s = 0; s <= S; ++s) {
        T* g = gy + s * Tt;
        if (s < sb || s > se) {
          std::fill(g, g + Tt, T(0));
          continue;
        }
        const T* a = alpha + s * W;
        const T* w = py + s * Tt;
        const T* b = beta + s * W + 1;
        for (int64_t t = 0; t < Tt; ++t) {
          const bool in = t >= tb && t < te;
          const T occ = edge_occupancy<T, FastMath>(in ? a[t] : T(0), in ? w[t] : T(0),
                                                    in ? b[t] : T(0), ll);
          g[t] = in ? occ * sc : T(0);
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
