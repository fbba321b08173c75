// A CPU emulation of the CUDA features that speechfm's kernels use, so that tests can run
// the kernels' own code on a machine without a GPU (tests/unit/ops/test_cuda_emulation.py).
//
// Every CUDA thread of a block is a std::thread; blocks run one after another.
// __syncthreads is a barrier over the block, __shfl_xor_sync exchanges values through a
// per-warp buffer between two warp barriers, `extern __shared__` memory is one buffer
// reused by every block, and the device attributes describe a small 2-SM device so that
// grid-stride loops take several turns. __half and __nv_bfloat16 convert with
// round-to-nearest-even like the CUDA intrinsics.
//
// The test rewrites `kernel<<<grid, block, smem, stream>>>(args)` into
// `sfm_emu::launch(kernel, grid, block, smem, stream, args)` and the `extern __shared__`
// declaration into `sfm_emu::shared_memory()` before compiling the .cu files as C++.
// This is a test harness only: it checks the kernels' index math and logic, not their
// speed or memory-model subtleties.
#pragma once

#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrMultiProcessorCount ? 2 : 227 * 1024;
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }

// -------------------------------------------------------------------------------------
// Half types
// -------------------------------------------------------------------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

// IEEE binary16 <-> float, round-to-nearest-even (plain arithmetic, any compiler).
inline float __half2float(__half h) {
  const int exponent = (h.bits >> 10) & 0x1f;
  const int mantissa = h.bits & 0x3ff;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa ? NAN : INFINITY;
  } else {
    value = std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
  }
  return (h.bits & 0x8000) ? -value : value;
}
inline __half __float2half_rn(float x) {
  __half h;
  if (x != x) {
    h.bits = 0x7e00;
    return h;
  }
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const float a = std::fabs(x);
  if (a >= 65520.0f) {  // halfway above the largest half (65504) rounds to inf
    h.bits = sign | 0x7c00;
  } else if (a < 6.103515625e-05f) {  // below 2^-14: subnormal, quantum 2^-24
    h.bits = sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
  } else {
    int e;
    std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
    uint32_t m = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, 11 - e)));  // [1024, 2048]
    if (m == 2048) {
      m = 1024;
      ++e;
    }
    h.bits = sign | static_cast<uint16_t>(((e - 1 + 15) << 10) | (m - 1024));
  }
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  __nv_bfloat16 b;
  if (x != x) {
    b.bits = 0x7fc0;
  } else {
    b.bits = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return b;
}

// -------------------------------------------------------------------------------------
// Threads, barriers, shuffles, shared memory
// -------------------------------------------------------------------------------------
namespace sfm_emu {

class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned long generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_;
  int waiting_ = 0;
  unsigned long generation_ = 0;
};

inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;
inline Barrier* block_barrier = nullptr;
inline std::vector<Barrier*> warp_barriers;
inline double exchange[1024];
inline std::vector<unsigned char> shared_buffer;

inline unsigned char* shared_memory() { return shared_buffer.data(); }

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
            Args... args) {
  grid_dim = grid;
  block_dim = block;
  const int threads = static_cast<int>(block.x * block.y * block.z);
  shared_buffer.assign(smem + 16, 0xff);  // garbage-like fill: reads before writes show up
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Barrier barrier(threads);
        std::vector<Barrier*> warps;
        for (int w = 0; w * 32 < threads; ++w) {
          warps.push_back(new Barrier(threads - w * 32 < 32 ? threads - w * 32 : 32));
        }
        block_barrier = &barrier;
        warp_barriers = warps;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([=] {
            block_idx = dim3(bx, by, bz);
            thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            kernel(args...);
          });
        }
        for (auto& th : pool) th.join();
        for (auto* w : warps) delete w;
      }
    }
  }
}

}  // namespace sfm_emu

#define threadIdx (sfm_emu::thread_idx)
#define blockIdx (sfm_emu::block_idx)
#define blockDim (sfm_emu::block_dim)
#define gridDim (sfm_emu::grid_dim)

inline void __syncthreads() { sfm_emu::block_barrier->wait(); }

template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int width = 32) {
  const int tid = static_cast<int>(threadIdx.x);  // 1-D blocks
  const int warp = tid / 32;
  const int lane = tid % 32;
  sfm_emu::exchange[tid] = static_cast<double>(value);
  sfm_emu::warp_barriers[warp]->wait();
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;
  const T out = static_cast<T>(sfm_emu::exchange[warp * 32 + src]);
  sfm_emu::warp_barriers[warp]->wait();
  return out;
}
