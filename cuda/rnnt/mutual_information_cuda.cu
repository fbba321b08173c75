// CUDA mutual-information recursion (alpha and beta of the RNN-T lattice) and its
// gradient.
//
// Recursion: one block per (utterance, direction); the alpha and beta passes of an
// utterance run concurrently in two blocks. The block sweeps the anti-diagonals
// d = i + j of the utterance's rectangle (i: symbol position, j: frame, both relative to
// the rectangle's start; the beta pass uses mirrored coordinates and so has the same
// shape). Thread `tid` owns columns i = tid + k * blockDim.x (k < kCols), so any number
// of symbols works: 1024 threads times kCols columns. The previous diagonal lives in a
// double-buffered array in shared memory, so one __syncthreads per diagonal suffices
// and no block waits on another. The edge weights, which do not depend on the
// recursion, are loaded several diagonals ahead into a register ring, hiding their
// latency.
//
// Gradient: an element-wise kernel over the (S + 1) x (T + 1) cells writes both edge
// occupancies of each cell (coalesced along t), zeros outside the boundary rectangle.
#include <cuda_runtime.h>
#include <stdint.h>

#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

// Threads per recursion block at most (a test build lowers it to reach kCols > 1 with
// few symbols).
#ifndef SFM_MI_MAX_THREADS
#define SFM_MI_MAX_THREADS 1024
#endif
constexpr int kMaxThreads = SFM_MI_MAX_THREADS;
constexpr int kGradBlock = 256;

// kDepth: how many diagonals ahead the edge weights are loaded (a register ring).
template <typename T, int kCols, int kDepth>
__global__ void __launch_bounds__(kMaxThreads)
    mi_recursion_kernel(const MIParams p, int first_direction) {
  const bool backward = (static_cast<int>(blockIdx.y) + first_direction) == 1;
  const int64_t n = blockIdx.x;
  auto* loglik = static_cast<T*>(p.loglik);
  int64_t sb, tb, se, te;
  if (!read_boundary(p.boundary, n, p.S, p.T, &sb, &tb, &se, &te)) {
    if (!backward && threadIdx.x == 0) loglik[n] = quiet_nan<T>();
    return;  // the whole block leaves: no barrier is left waiting
  }
  const int64_t Sl = se - sb;
  const int64_t Tl = te - tb;
  const int64_t Tt = p.T;
  const int64_t W = Tt + 1;
  const T* px = static_cast<const T*>(p.px) + n * p.px_sn;
  const T* py = static_cast<const T*>(p.py) + n * p.py_sn;
  T* out = static_cast<T*>(backward ? p.beta : p.alpha) + n * (p.S + 1) * W;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* diag0 = reinterpret_cast<T*>(smem_raw);
  T* diag1 = diag0 + (p.S + 1);
  const int64_t B = blockDim.x;

  // Weights of the two edges entering cell (column c, row r) of diagonal d: `own` from
  // the previous row of the same column, `nb` from the previous column. In original
  // coordinates alpha uses py(s, t - 1) and px(s - 1, t); beta uses py(s, t) and px(s, t).
  auto load_weights = [&](int64_t d, int k, T& w_own, T& w_nb) {
    const int64_t c = threadIdx.x + k * B;
    const int64_t r = d - c;
    w_own = T(0);
    w_nb = T(0);
    if (c > Sl || r < 0 || r > Tl) return;
    const int64_t s = sb + (backward ? Sl - c : c);
    const int64_t t = tb + (backward ? Tl - r : r);
    if (r > 0) w_own = backward ? py[s * Tt + t] : py[s * Tt + t - 1];
    if (c > 0) w_nb = backward ? px[s * W + t] : px[(s - 1) * W + t];
  };

  // Slot q of the ring holds the weights of diagonal d0 + q.
  T w_own[kDepth][kCols];
  T w_nb[kDepth][kCols];
#pragma unroll
  for (int q = 0; q < kDepth; ++q) {
#pragma unroll
    for (int k = 0; k < kCols; ++k) load_weights(q, k, w_own[q][k], w_nb[q][k]);
  }
  const int64_t last = Sl + Tl;
  for (int64_t d0 = 0; d0 <= last; d0 += kDepth) {
#pragma unroll
    for (int q = 0; q < kDepth; ++q) {
      const int64_t d = d0 + q;
      if (d > last) break;  // uniform across the block
      T* cur = (d & 1) ? diag1 : diag0;
      const T* prev = (d & 1) ? diag0 : diag1;
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int64_t c = threadIdx.x + k * B;
        const int64_t r = d - c;
        if (c > Sl || r < 0 || r > Tl) continue;
        T v;
        if (d == 0) {
          v = T(0);  // alpha(s_begin, t_begin) = 0 and beta(s_end, t_end) = 0
        } else {
          // prev[c]: this column's previous row; prev[c - 1]: the previous column's
          // cell of the same row. Both lie on diagonal d - 1.
          const T from_own = r > 0 ? prev[c] : neg_inf<T>();
          const T from_nb = c > 0 ? prev[c - 1] : neg_inf<T>();
          v = cell(from_own, w_own[q][k], from_nb, w_nb[q][k]);
        }
        cur[c] = v;
        const int64_t s = sb + (backward ? Sl - c : c);
        const int64_t t = tb + (backward ? Tl - r : r);
        out[s * W + t] = v;
        if (!backward && d == last) loglik[n] = v;  // the only cell of the last diagonal
      }
      // Refill the slot just used with diagonal d + kDepth; the loads are in flight
      // while the block waits at the barrier and computes the next diagonals.
#pragma unroll
      for (int k = 0; k < kCols; ++k) load_weights(d + kDepth, k, w_own[q][k], w_nb[q][k]);
      __syncthreads();
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kGradBlock) mi_grad_kernel(const MIParams p) {
  const int64_t S = p.S;
  const int64_t Tt = p.T;
  const int64_t W = Tt + 1;
  const int64_t cells = (S + 1) * W;
  const int64_t total = p.N * cells;
  const auto* loglik = static_cast<const T*>(p.loglik);
  const auto* scale = static_cast<const T*>(p.scale);
  auto* px_grad = static_cast<T*>(p.px_grad);
  auto* py_grad = static_cast<T*>(p.py_grad);
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / cells;
    const int64_t rem = idx - n * cells;
    const int64_t s = rem / W;
    const int64_t t = rem - s * W;
    T* gx = px_grad + n * S * W + s * W + t;   // valid when s < S
    T* gy = py_grad + n * (S + 1) * Tt + s * Tt + t;  // valid when t < T
    int64_t sb, tb, se, te;
    if (!read_boundary(p.boundary, n, S, Tt, &sb, &tb, &se, &te)) {
      if (s < S) *gx = quiet_nan<T>();
      if (t < Tt) *gy = quiet_nan<T>();
      continue;
    }
    const T* px = static_cast<const T*>(p.px) + n * p.px_sn;
    const T* py = static_cast<const T*>(p.py) + n * p.py_sn;
    const T* alpha = static_cast<const T*>(p.alpha) + n * cells;
    const T* beta = static_cast<const T*>(p.beta) + n * cells;
    const bool in_rect = s >= sb && s <= se && t >= tb && t <= te;
    // alpha / beta are unspecified outside the rectangle and are not read there.
    const T a = in_rect ? alpha[s * W + t] : T(0);
    const bool has_up = in_rect && s < se;
    const bool has_right = in_rect && t < te;
    const T wx = has_up ? px[s * W + t] : T(0);
    const T bu = has_up ? beta[(s + 1) * W + t] : T(0);
    const T wy = has_right ? py[s * Tt + t] : T(0);
    const T br = has_right ? beta[s * W + t + 1] : T(0);
    const T sc = scale != nullptr ? scale[n] : T(1);
    T g_x;
    T g_y;
    mi_cell_grads(s, t, sb, tb, se, te, a, wx, bu, wy, br, loglik[n], sc, &g_x, &g_y);
    if (s < S) *gx = g_x;
    if (t < Tt) *gy = g_y;
  }
}

const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// Launches the recursion for `directions` (1 or 2) passes starting at `first_direction`
// (0: alpha, 1: beta).
template <typename T, int kCols>
const char* launch_recursion_cols(const MIParams& p, int directions, int first_direction,
                                  cudaStream_t stream) {
  const int64_t per_thread = (p.S + 1 + kCols - 1) / kCols;
  const int threads = static_cast<int>(((per_thread + 31) / 32) * 32);
  const size_t smem = 2 * static_cast<size_t>(p.S + 1) * sizeof(T);
  auto kernel = mi_recursion_kernel<T, kCols, (kCols < 4 ? 4 / kCols : 1)>;
  if (smem > 48 * 1024) {
    int device = 0;
    int optin = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) {
      err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (smem > static_cast<size_t>(optin)) {
      return "too many symbol positions for the mutual-information kernel (S + 1 must fit "
             "twice in a block's shared memory)";
    }
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
    if (err != cudaSuccess) return cudaGetErrorString(err);
  }
  const dim3 grid(static_cast<unsigned>(p.N), static_cast<unsigned>(directions));
  kernel<<<grid, threads, smem, stream>>>(p, first_direction);
  return last_error();
}

template <typename T>
const char* launch_recursion(const MIParams& p, int directions, int first_direction,
                             cudaStream_t stream) {
  const int64_t cols = p.S + 1;
  if (cols <= 1 * kMaxThreads) return launch_recursion_cols<T, 1>(p, directions, first_direction, stream);
  if (cols <= 2 * kMaxThreads) return launch_recursion_cols<T, 2>(p, directions, first_direction, stream);
  if (cols <= 4 * kMaxThreads) return launch_recursion_cols<T, 4>(p, directions, first_direction, stream);
  if (cols <= 8 * kMaxThreads) return launch_recursion_cols<T, 8>(p, directions, first_direction, stream);
  if (cols <= 16 * kMaxThreads) return launch_recursion_cols<T, 16>(p, directions, first_direction, stream);
  if (cols <= 32 * kMaxThreads) return launch_recursion_cols<T, 32>(p, directions, first_direction, stream);
  return "too many symbol positions for the mutual-information kernel (S + 1 > 32 x 1024)";
}

template <typename T>
const char* launch_grads(const MIParams& p, cudaStream_t stream) {
  int device = 0;
  int sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t total = p.N * (p.S + 1) * (p.T + 1);
  const int64_t needed = (total + kGradBlock - 1) / kGradBlock;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * 16;
  const unsigned blocks = static_cast<unsigned>(needed < cap ? (needed > 0 ? needed : 1) : cap);
  mi_grad_kernel<T><<<blocks, kGradBlock, 0, stream>>>(p);
  return last_error();
}

template <typename T>
const char* forward_typed(const MIParams& p, cudaStream_t stream) {
  return launch_recursion<T>(p, p.beta != nullptr ? 2 : 1, 0, stream);
}

template <typename T>
const char* backward_typed(const MIParams& p, bool compute_beta, cudaStream_t stream) {
  if (compute_beta) {
    if (const char* e = launch_recursion<T>(p, 1, 1, stream)) return e;
  }
  return launch_grads<T>(p, stream);
}

}  // namespace

const char* mi_forward_cuda(const MIParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.dtype == Dtype::kFloat64 ? forward_typed<double>(p, s) : forward_typed<float>(p, s);
}

const char* mi_backward_cuda(const MIParams& p, bool compute_beta, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  return p.dtype == Dtype::kFloat64 ? backward_typed<double>(p, compute_beta, s)
                                    : backward_typed<float>(p, compute_beta, s);
}

}  // namespace sfm
