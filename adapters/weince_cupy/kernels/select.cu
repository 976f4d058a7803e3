// Per-row top-k selection with the tie rule of docs/math.md section 8, one block per row.
//
// For each row of sim (R x C, row-major): the k columns with the largest keys
// min(sim, cap) among the row's candidates (columns not in excluded, R x E), in the order of a
// stable descending sort by key (equal keys: the lower column first), and sim's values there.
// Floats become integers in their order (ordered_key), so every comparison is exact and NaN
// cannot stall a loop. Steps: the k-th largest key T by a bisection on its bits (one block
// count per bit), every key above T and the lowest columns of the keys equal to T compacted in
// column order (block prefix sums), then each taken column's rank by (key desc, column asc).
//
// Only __syncthreads and shared memory are used (no warp intrinsics), so the same source runs
// on the CPU through tests/kernels/cuda_shim.h. Launch: grid R, block SELECT_THREADS,
// dynamic shared memory k * (sizeof(long long) + sizeof(key_t)) bytes.

#ifndef SELECT_THREADS  // a power of two; the CPU test runs 32
#define SELECT_THREADS 256
#endif
#ifndef DYNAMIC_SHARED  // the CPU shim defines its own
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

__device__ __forceinline__ int ordered_key(float x, int cap_key) {
  int bits = __float_as_int(x);
  int key = bits ^ ((bits >> 31) & 0x7FFFFFFF);  // negative floats: magnitude bits reversed
  if (key <= 0x7F800000 && key > cap_key) key = cap_key;  // positive NaN stays above the cap
  return key - (key >> 31);  // negative keys up by one: -0.0 meets 0.0
}

__device__ __forceinline__ long long ordered_key(double x, long long cap_key) {
  long long bits = __double_as_longlong(x);
  long long key = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFFLL);
  if (key <= 0x7FF0000000000000LL && key > cap_key) key = cap_key;
  return key - (key >> 63);
}

// Sum of one value per thread, returned to every thread.
__device__ long long block_sum(long long value, long long* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int step = SELECT_THREADS / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) scratch[threadIdx.x] += scratch[threadIdx.x + step];
    __syncthreads();
  }
  long long total = scratch[0];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

// Inclusive prefix sum of one value per thread (Hillis-Steele), returned to each thread.
__device__ int block_prefix(int value, int* scratch) {
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int step = 1; step < SELECT_THREADS; step *= 2) {
    int before = threadIdx.x >= step ? scratch[threadIdx.x - step] : 0;
    __syncthreads();
    scratch[threadIdx.x] += before;
    __syncthreads();
  }
  int result = scratch[threadIdx.x];
  __syncthreads();
  return result;
}

template <typename F, typename K>
__device__ void select_row(const F* sim, const long long* excluded, long long* columns, F* values,
                           int n_columns, int n_excluded, int k, K cap_key, K lowest) {
  __shared__ long long sums[SELECT_THREADS];
  __shared__ int prefix[SELECT_THREADS];
  DYNAMIC_SHARED(long long, taken_columns);  // k columns, then their k keys
  K* taken_keys = reinterpret_cast<K*>(taken_columns + k);
  const long long row = blockIdx.x;
  sim += row * n_columns;
  excluded += row * n_excluded;

  auto key_of = [&](int column) -> K {
    for (int e = 0; e < n_excluded; ++e)
      if (excluded[e] == column) return lowest;
    return ordered_key(sim[column], cap_key);
  };
  auto count_at_least = [&](K threshold, bool strictly) -> long long {
    long long count = 0;
    for (int c = threadIdx.x; c < n_columns; c += SELECT_THREADS) {
      K key = key_of(c);
      count += strictly ? key > threshold : key >= threshold;
    }
    return block_sum(count, sums);
  };

  // T: the largest t with at least k keys >= t, bit by bit from the sign bit down.
  const int bits = 8 * sizeof(K);
  K threshold = count_at_least(0, false) >= k ? K(0) : lowest;
  for (int bit = bits - 2; bit >= 0; --bit) {
    K candidate = threshold + (K(1) << bit);
    if (count_at_least(candidate, false) >= k) threshold = candidate;
  }
  long long missing = k - count_at_least(threshold, true);  // keys equal to T still to take

  // Compact the taken columns in column order, a block of columns at a time.
  int ties_before = 0, taken_before = 0;
  for (int start = 0; start < n_columns; start += SELECT_THREADS) {
    int c = start + threadIdx.x;
    K key = c < n_columns ? key_of(c) : lowest;
    int at = c < n_columns && key == threshold;
    int tie_rank = ties_before + block_prefix(at, prefix);
    int take = (c < n_columns && key > threshold) || (at && tie_rank <= missing);
    int slot = taken_before + block_prefix(take, prefix) - 1;
    if (take) {
      taken_columns[slot] = c;
      taken_keys[slot] = key;
    }
    ties_before += block_sum(at, sums);
    taken_before += block_sum(take, sums);
  }
  __syncthreads();

  // Each taken column's place: how many taken entries come before it in (key desc, column asc).
  for (int i = threadIdx.x; i < k; i += SELECT_THREADS) {
    K key = taken_keys[i];
    long long column = taken_columns[i];
    int rank = 0;
    for (int j = 0; j < k; ++j)
      rank += taken_keys[j] > key || (taken_keys[j] == key && taken_columns[j] < column);
    columns[row * k + rank] = column;
    values[row * k + rank] = sim[column];
  }
}

extern "C" __global__ void select_top_k_f32(const float* sim, const long long* excluded,
                                            long long* columns, float* values, int n_columns,
                                            int n_excluded, int k, int cap_key) {
  select_row<float, int>(sim, excluded, columns, values, n_columns, n_excluded, k, cap_key,
                         (int)0x80000000);
}

extern "C" __global__ void select_top_k_f64(const double* sim, const long long* excluded,
                                            long long* columns, double* values, int n_columns,
                                            int n_excluded, int k, long long cap_key) {
  select_row<double, long long>(sim, excluded, columns, values, n_columns, n_excluded, k,
                                cap_key, (long long)0x8000000000000000ULL);
}
