// CUDA row passes of the RNN-T loss (the passes over the (N, T, J, V) logits).
//
// Forward: a group of `tpr` lanes (a power of two <= 32, chosen from V) owns one row
// (n, t, j). The lanes stream the row with 16-byte loads (after a scalar head that
// reaches 16-byte alignment), keep an online (max, sum of exp) pair each, and merge the
// pairs with xor-shuffles inside the group. Lane 0 then writes the log-normaliser and
// the blank / label log-probs. The logits are read once.
//
// Backward: the same row mapping; every element of the gradient is written exactly once
// with 16-byte stores, padding rows included (as zeros, without reading the logits). The
// gradient may alias the logits: each element is read by the thread that writes it,
// before it writes it.
//
// Indices are 64-bit throughout; the grid strides over rows, so any number of rows
// works with a grid sized to the device. Kernels run on the caller's stream and nothing
// here synchronises with the host.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

constexpr int kBlock = 256;   // threads per block
constexpr int kUnroll = 4;    // 16-byte loads in flight per lane
constexpr int kBlocksPerSM = 8;

template <typename scalar_t>
struct Elem;
template <>
struct Elem<float> {
  using acc = float;
  static __device__ __forceinline__ float load(float x) { return x; }
  static __device__ __forceinline__ float store(float x) { return x; }
};
template <>
struct Elem<double> {
  using acc = double;
  static __device__ __forceinline__ double load(double x) { return x; }
  static __device__ __forceinline__ double store(double x) { return x; }
};
template <>
struct Elem<__half> {
  using acc = float;
  static __device__ __forceinline__ float load(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half store(float x) { return __float2half_rn(x); }
};
template <>
struct Elem<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};

// 16 bytes of elements, loaded / stored with one 128-bit access.
template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kN = 16 / sizeof(scalar_t);
  scalar_t v[kN];
};

// Elements before the first 16-byte boundary of `row` (the scalar head).
template <typename scalar_t>
__device__ __forceinline__ int64_t head_elems(const void* row, int64_t V) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row);
  const int64_t head = static_cast<int64_t>(((16 - (addr & 15)) & 15) / sizeof(scalar_t));
  return head < V ? head : V;
}

// ---------------------------------------------------------------------------------------
// Forward: online log-sum-exp
// ---------------------------------------------------------------------------------------
template <typename acc_t>
struct OnlineLSE {
  acc_t m;  // running max (-inf: nothing finite seen yet)
  acc_t s;  // sum of exp(x - m); NaN once a NaN was seen

  __device__ __forceinline__ void add(const acc_t* x, int count) {
    acc_t vmax = x[0];
    for (int i = 1; i < count; ++i) vmax = x[i] > vmax ? x[i] : vmax;
    if (vmax > m) {
      s *= sfm_exp(m - vmax);
      m = vmax;
    }
    if (m != neg_inf<acc_t>()) {
      for (int i = 0; i < count; ++i) s += sfm_exp(x[i] - m);
    } else {
      for (int i = 0; i < count; ++i) {
        if (x[i] != x[i]) s = x[i];
      }
    }
  }

  __device__ __forceinline__ void merge(acc_t m2, acc_t s2) {
    const acc_t M = m > m2 ? m : m2;
    if (M == neg_inf<acc_t>()) {
      s += s2;
    } else {
      s = s * sfm_exp(m - M) + s2 * sfm_exp(m2 - M);
    }
    m = M;
  }

  __device__ __forceinline__ acc_t result() const {
    if (m == neg_inf<acc_t>()) return s != s ? s : m;
    return m + sfm_log(s);
  }
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void lane_lse(const scalar_t* row, int64_t V, int lane, int tpr,
                                         OnlineLSE<acc_t>& acc) {
  using E = Elem<scalar_t>;
  using V16 = Vec16<scalar_t>;
  constexpr int kN = V16::kN;
  const int64_t head = head_elems<scalar_t>(row, V);
  for (int64_t i = lane; i < head; i += tpr) {
    const acc_t x = E::load(row[i]);
    acc.add(&x, 1);
  }
  const int64_t nvec = (V - head) / kN;
  const V16* vrow = reinterpret_cast<const V16*>(row + head);
  int64_t k = lane;
  for (; k + (kUnroll - 1) * tpr < nvec; k += kUnroll * tpr) {
    V16 buf[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) buf[u] = vrow[k + u * tpr];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      acc_t x[kN];
#pragma unroll
      for (int i = 0; i < kN; ++i) x[i] = E::load(buf[u].v[i]);
      acc.add(x, kN);
    }
  }
  for (; k < nvec; k += tpr) {
    const V16 b = vrow[k];
    acc_t x[kN];
#pragma unroll
    for (int i = 0; i < kN; ++i) x[i] = E::load(b.v[i]);
    acc.add(x, kN);
  }
  for (int64_t i = head + nvec * kN + lane; i < V; i += tpr) {
    const acc_t x = E::load(row[i]);
    acc.add(&x, 1);
  }
}

template <typename scalar_t, bool kFused>
__global__ void __launch_bounds__(kBlock)
    row_logprobs_kernel(const RowParams p, int tpr_log2) {
  using acc_t = typename Elem<scalar_t>::acc;
  using E = Elem<scalar_t>;
  const int tpr = 1 << tpr_log2;
  const int lane = threadIdx.x & (tpr - 1);
  const int64_t rows_per_block = kBlock >> tpr_log2;
  const int64_t rows = p.N * p.T * p.J;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* out_blank = static_cast<acc_t*>(p.out_blank);
  auto* out_label = static_cast<acc_t*>(p.out_label);
  auto* denom = static_cast<acc_t*>(p.denom);
  // `base` is uniform across the block, so every lane reaches the shuffles below.
  for (int64_t base = blockIdx.x * rows_per_block; base < rows;
       base += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t r = base + (threadIdx.x >> tpr_log2);
    const bool active = r < rows;
    int64_t n = 0, t = 0, j = 0;
    RowInfo info{0, kInvalidRow};
    if (active) {
      j = r % p.J;
      t = (r / p.J) % p.T;
      n = r / (p.J * p.T);
      info = row_info(n, t, j, p.T, p.J, p.S, p.V, p.blank, p.targets, p.target_lengths,
                      p.logit_lengths, p.ranges);
    }
    const bool valid = info.label != kInvalidRow;
    const scalar_t* row = logits + r * p.V;
    acc_t d = acc_t(0);
    if (kFused) {
      OnlineLSE<acc_t> acc{neg_inf<acc_t>(), acc_t(0)};
      if (valid) lane_lse<scalar_t, acc_t>(row, p.V, lane, tpr, acc);
      for (int off = tpr >> 1; off > 0; off >>= 1) {
        const acc_t m2 = __shfl_xor_sync(0xffffffffu, acc.m, off, tpr);
        const acc_t s2 = __shfl_xor_sync(0xffffffffu, acc.s, off, tpr);
        acc.merge(m2, s2);
      }
      d = acc.result();
    }
    if (!active || lane != 0) continue;
    if (!valid) {
      denom[r] = acc_t(0);
      continue;
    }
    denom[r] = d;
    const acc_t xb = E::load(row[p.blank]);
    acc_t lb = kFused ? log_softmax_entry(xb, d) : xb;
    if (info.label >= 0) {
      const acc_t xl = E::load(row[info.label]);
      out_label[n * p.ol_sn + t * p.ol_st + j * p.ol_sj] = kFused ? log_softmax_entry(xl, d) : xl;
    } else if (info.label == kBadLabel) {
      lb = quiet_nan<acc_t>();  // poisons the utterance; the Python layer reports why
    }
    out_blank[n * p.ob_sn + t * p.ob_st + j * p.ob_sj] = lb;
  }
}

// ---------------------------------------------------------------------------------------
// Backward: gradient rows
// ---------------------------------------------------------------------------------------
// out[v] = f(x[v], v) for this lane's share of the row. Without kRead the logits are not
// touched and f gets 0. `vec_ok`: x and out have the same offset modulo 16 bytes.
template <typename scalar_t, bool kRead, typename F>
__device__ __forceinline__ void lane_transform(const scalar_t* x, scalar_t* out, int64_t V,
                                               int lane, int tpr, bool vec_ok, F f) {
  using E = Elem<scalar_t>;
  using acc_t = typename E::acc;
  using V16 = Vec16<scalar_t>;
  constexpr int kN = V16::kN;
  const int64_t head = vec_ok ? head_elems<scalar_t>(out, V) : V;
  for (int64_t i = lane; i < head; i += tpr) {
    const acc_t xv = kRead ? E::load(x[i]) : acc_t(0);
    out[i] = E::store(f(xv, i));
  }
  const int64_t nvec = (V - head) / kN;
  const V16* vx = reinterpret_cast<const V16*>(x + head);
  V16* vout = reinterpret_cast<V16*>(out + head);
  int64_t k = lane;
  for (; k + (kUnroll - 1) * tpr < nvec; k += kUnroll * tpr) {
    V16 buf[kUnroll];
    if (kRead) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) buf[u] = vx[k + u * tpr];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v0 = head + (k + u * tpr) * kN;
      V16 o;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        const acc_t xv = kRead ? E::load(buf[u].v[i]) : acc_t(0);
        o.v[i] = E::store(f(xv, v0 + i));
      }
      vout[k + u * tpr] = o;
    }
  }
  for (; k < nvec; k += tpr) {
    V16 b;
    if (kRead) b = vx[k];
    const int64_t v0 = head + k * kN;
    V16 o;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const acc_t xv = kRead ? E::load(b.v[i]) : acc_t(0);
      o.v[i] = E::store(f(xv, v0 + i));
    }
    vout[k] = o;
  }
  for (int64_t i = head + nvec * kN + lane; i < V; i += tpr) {
    const acc_t xv = kRead ? E::load(x[i]) : acc_t(0);
    out[i] = E::store(f(xv, i));
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlock)
    logits_grad_kernel(const GradParams p, int tpr_log2, bool vec_ok) {
  using acc_t = typename Elem<scalar_t>::acc;
  const int tpr = 1 << tpr_log2;
  const int lane = threadIdx.x & (tpr - 1);
  const int64_t rows_per_block = kBlock >> tpr_log2;
  const int64_t rows = p.N * p.T * p.J;
  const auto* logits = static_cast<const scalar_t*>(p.logits);
  auto* grad = static_cast<scalar_t*>(p.grad);
  const auto* denom = static_cast<const acc_t*>(p.denom);
  const auto* occ_blank = static_cast<const acc_t*>(p.occ_blank);
  const auto* occ_label = static_cast<const acc_t*>(p.occ_label);
  const auto* scale = static_cast<const acc_t*>(p.scale);
  const acc_t clamp = static_cast<acc_t>(p.clamp);
  for (int64_t r = blockIdx.x * rows_per_block + (threadIdx.x >> tpr_log2); r < rows;
       r += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t j = r % p.J;
    const int64_t t = (r / p.J) % p.T;
    const int64_t n = r / (p.J * p.T);
    const RowInfo info = row_info(n, t, j, p.T, p.J, p.S, p.V, p.blank, p.targets,
                                  p.target_lengths, p.logit_lengths, p.ranges);
    acc_t ob = acc_t(0);
    acc_t ol = acc_t(0);
    if (info.label != kInvalidRow) {
      ob = occ_blank[n * p.gb_sn + t * p.gb_st + j * p.gb_sj];
      if (info.label >= 0) ol = occ_label[n * p.gl_sn + t * p.gl_st + j * p.gl_sj];
      if (info.label == kBadLabel) ob = quiet_nan<acc_t>();
    }
    const acc_t occ = ob + ol;
    const scalar_t* x = logits + r * p.V;
    scalar_t* out = grad + r * p.V;
    // Rows without probability mass (padding, unreachable cells, infeasible utterances)
    // are zeros and cost no read; `occ == 0` is false for NaN.
    if (info.label == kInvalidRow || occ == acc_t(0)) {
      lane_transform<scalar_t, false>(x, out, p.V, lane, tpr, vec_ok,
                                      [](acc_t, int64_t) { return acc_t(0); });
      continue;
    }
    const acc_t s = scale[n];
    const int64_t blank = p.blank;
    const int64_t label = info.label;
    if (p.fused) {
      const acc_t d = denom[r];
      lane_transform<scalar_t, true>(x, out, p.V, lane, tpr, vec_ok, [=](acc_t xv, int64_t v) {
        const acc_t e = sfm_exp(xv - d) * occ;
        return clamp_grad(logit_grad(e, v == blank, v == label, ob, ol), clamp) * s;
      });
    } else {
      lane_transform<scalar_t, false>(x, out, p.V, lane, tpr, vec_ok, [=](acc_t, int64_t v) {
        return clamp_grad(logit_grad(acc_t(0), v == blank, v == label, ob, ol), clamp) * s;
      });
    }
  }
}

// ---------------------------------------------------------------------------------------
// Launch helpers
// ---------------------------------------------------------------------------------------
// Lanes per row: a power of two giving each lane about four 16-byte vectors.
int tpr_log2_for(int64_t V, int elem_size) {
  const int64_t nvec = (V * elem_size + 15) / 16;
  int log2 = 0;
  while (log2 < 5 && (int64_t{4} << log2) <= nvec) ++log2;
  return log2;
}

const char* grid_for(int64_t rows, int tpr_log2, unsigned* blocks) {
  int device = 0;
  int sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const int64_t rows_per_block = kBlock >> tpr_log2;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * kBlocksPerSM;
  *blocks = static_cast<unsigned>(needed < cap ? (needed > 0 ? needed : 1) : cap);
  return nullptr;
}

const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename scalar_t>
const char* launch_row_logprobs(const RowParams& p, cudaStream_t stream) {
  const int tpr_log2 = tpr_log2_for(p.V, sizeof(scalar_t));
  unsigned blocks = 0;
  if (const char* e = grid_for(p.N * p.T * p.J, tpr_log2, &blocks)) return e;
  if (p.fused) {
    row_logprobs_kernel<scalar_t, true><<<blocks, kBlock, 0, stream>>>(p, tpr_log2);
  } else {
    row_logprobs_kernel<scalar_t, false><<<blocks, kBlock, 0, stream>>>(p, tpr_log2);
  }
  return last_error();
}

template <typename scalar_t>
const char* launch_logits_grad(const GradParams& p, cudaStream_t stream) {
  const int tpr_log2 = tpr_log2_for(p.V, sizeof(scalar_t));
  unsigned blocks = 0;
  if (const char* e = grid_for(p.N * p.T * p.J, tpr_log2, &blocks)) return e;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p.logits);
  const uintptr_t b = reinterpret_cast<uintptr_t>(p.grad);
  const bool vec_ok = ((a ^ b) & 15) == 0;
  logits_grad_kernel<scalar_t><<<blocks, kBlock, 0, stream>>>(p, tpr_log2, vec_ok);
  return last_error();
}

}  // namespace

const char* row_logprobs_cuda(const RowParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case Dtype::kFloat32: return launch_row_logprobs<float>(p, s);
    case Dtype::kFloat64: return launch_row_logprobs<double>(p, s);
    case Dtype::kFloat16: return launch_row_logprobs<__half>(p, s);
    case Dtype::kBFloat16: return launch_row_logprobs<__nv_bfloat16>(p, s);
  }
  return "unsupported dtype";
}

const char* logits_grad_cuda(const GradParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case Dtype::kFloat32: return launch_logits_grad<float>(p, s);
    case Dtype::kFloat64: return launch_logits_grad<double>(p, s);
    case Dtype::kFloat16: return launch_logits_grad<__half>(p, s);
    case Dtype::kBFloat16: return launch_logits_grad<__nv_bfloat16>(p, s);
  }
  return "unsupported dtype";
}

}  // namespace sfm
