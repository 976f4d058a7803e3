// Runs CUDA kernels that use only threadIdx, blockIdx, __syncthreads and shared memory on the
// CPU: one std::thread per CUDA thread, the blocks one after another (so `__shared__`, made
// `static`, is the running block's), __syncthreads a std::barrier. Under ThreadSanitizer a
// missing barrier shows as a data race.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

using std::exp;  // CUDA's float and double overloads
using std::log;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct shim_dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local shim_dim3 threadIdx;
inline shim_dim3 blockIdx;
inline std::barrier<>* shim_barrier = nullptr;
inline std::vector<long long> shim_dynamic_shared;  // 8-byte aligned

#define DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(shim_dynamic_shared.data())

inline void __syncthreads() { shim_barrier->arrive_and_wait(); }

inline int __float_as_int(float x) {
  int bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline long long __double_as_longlong(double x) {
  long long bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

// kernel<<<grid, block, shared_bytes>>>(args...), on the CPU.
template <typename Kernel, typename... Args>
void shim_launch(unsigned grid, unsigned block, size_t shared_bytes, Kernel kernel,
                 Args... args) {
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    shim_dynamic_shared.assign((shared_bytes + 7) / 8, 0);
    std::barrier<> barrier(block);
    shim_barrier = &barrier;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([=] {
        threadIdx.x = t;
        kernel(args...);
      });
    for (auto& thread : threads) thread.join();
  }
}
