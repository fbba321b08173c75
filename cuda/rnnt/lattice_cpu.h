// The CPU lattice engine: the alpha / beta recursions of the mutual-information (RNN-T)
// lattice and its edge occupancies, for one utterance at a time, over compact arrays
// stored by anti-diagonal.
//
// Cell (s, t) of the lattice lives on anti-diagonal d = s + t. Every array here is
// (D, W) row-major with row d holding the cells of diagonal d at index s + 1, so that
// all cells of a diagonal -- which depend only on the previous diagonal -- are
// contiguous and one diagonal is one vectorised loop over s (no gathers, no branches).
// Index 0 (s = -1) and the slots past the rectangle stay -inf: they are the "no such
// predecessor / successor" of the border cells.
//
//   px(d)[s] = log-weight of the symbol edge (s, t) -> (s + 1, t)
//   py(d)[s] = log-weight of the blank edge  (s, t) -> (s, t + 1)
//   alpha(s, t) = log_add(alpha(s - 1, t) + px(s - 1, t), alpha(s, t - 1) + py(s, t - 1))
//   beta(s, t)  = log_add(beta(s + 1, t) + px(s, t),     beta(s, t + 1) + py(s, t))
//
// Per-cell math comes from rnnt_common.h (cell, edge_occupancy) with the CPU's
// vectorisable FastMath (float) or the C library (double). Host only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_math.h"
#include "rnnt_common.h"

namespace sfm {
namespace cpu {

template <typename A>
class DiagLattice {
 public:
  // Space for the lattice of S + 1 symbol positions and T + 1 frames.
  DiagLattice(int64_t S, int64_t T) : D_(S + T + 2), W_(S + 3) {}

  // Points the lattice at 4 * size() elements of scratch (px, py, alpha, beta) and sets
  // them all to -inf.
  void reset(std::vector<A>& scratch) {
    scratch.resize(4 * size());
    std::fill(scratch.begin(), scratch.end(), neg_inf<A>());
    px_ = scratch.data();
    py_ = px_ + size();
    alpha_ = py_ + size();
    beta_ = alpha_ + size();
  }
  int64_t size() const { return D_ * W_; }

  // Element (s, t) of each array; s in [-1, S + 1], s + t in [0, S + T + 1].
  A& px(int64_t s, int64_t t) { return px_[at(s, t)]; }
  A& py(int64_t s, int64_t t) { return py_[at(s, t)]; }
  A& alpha(int64_t s, int64_t t) { return alpha_[at(s, t)]; }
  A& beta(int64_t s, int64_t t) { return beta_[at(s, t)]; }

  // Forward recursion over the rectangle [sb, se] x [tb, te]; returns alpha(se, te).
  A forward(int64_t sb, int64_t tb, int64_t se, int64_t te) {
    alpha(sb, tb) = A(0);
    for (int64_t d = sb + tb + 1; d <= se + te; ++d) {
      const int64_t lo = std::max(sb, d - te);
      const int64_t hi = std::min(se, d - tb);
      const A* __restrict prev = diag(alpha_, d - 1);
      const A* __restrict wx = diag(px_, d - 1);
      const A* __restrict wy = diag(py_, d - 1);
      A* __restrict cur = diag(alpha_, d);
      for (int64_t s = lo; s <= hi; ++s) {
        cur[s] = cell<A, FastMath>(prev[s - 1], wx[s - 1], prev[s], wy[s]);
      }
    }
    return alpha(se, te);
  }

  // Backward recursion over the same rectangle (beta(se, te) = 0).
  void backward(int64_t sb, int64_t tb, int64_t se, int64_t te) {
    beta(se, te) = A(0);
    for (int64_t d = se + te - 1; d >= sb + tb; --d) {
      const int64_t lo = std::max(sb, d - te);
      const int64_t hi = std::min(se, d - tb);
      const A* __restrict next = diag(beta_, d + 1);
      const A* __restrict wx = diag(px_, d);
      const A* __restrict wy = diag(py_, d);
      A* __restrict cur = diag(beta_, d);
      for (int64_t s = lo; s <= hi; ++s) {
        cur[s] = cell<A, FastMath>(next[s + 1], wx[s], next[s], wy[s]);
      }
    }
  }

  // Replaces px and py inside the rectangle by the occupancies of their edges
  // (exp(alpha + w + beta(successor) - loglik); 0 for edges leaving the rectangle,
  // whose weights are -inf). Needs forward() and backward().
  void occupancies(int64_t sb, int64_t tb, int64_t se, int64_t te, A loglik) {
    for (int64_t d = sb + tb; d <= se + te; ++d) {
      const int64_t lo = std::max(sb, d - te);
      const int64_t hi = std::min(se, d - tb);
      const A* __restrict a = diag(alpha_, d);
      const A* __restrict b = diag(beta_, d + 1);
      A* wx = diag(px_, d);
      A* wy = diag(py_, d);
      for (int64_t s = lo; s <= hi; ++s) {
        const A occ_x = edge_occupancy<A, FastMath>(a[s], wx[s], b[s + 1], loglik);
        const A occ_y = edge_occupancy<A, FastMath>(a[s], wy[s], b[s], loglik);
        wx[s] = occ_x;
        wy[s] = occ_y;
      }
    }
  }

 private:
  int64_t at(int64_t s, int64_t t) const { return (s + t) * W_ + s + 1; }
  A* diag(A* base, int64_t d) const { return base + d * W_ + 1; }

  int64_t D_, W_;
  A* px_ = nullptr;
  A* py_ = nullptr;
  A* alpha_ = nullptr;
  A* beta_ = nullptr;
};

}  // namespace cpu
}  // namespace sfm
