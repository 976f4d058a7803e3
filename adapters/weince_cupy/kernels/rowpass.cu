// The fused row pass of the loss (docs/math.md sections 2 and 6), one block per row.
//
// Per row a of sim (R x C, row-major), with the gate lam_a: the blended logits
//   G = (1 - lam) sim / tau - lam beta_w log(1 - min(sim, cap))
// over the candidates (columns not in excluded, R x E), their logsumexp, the softmax P, and the
// dense part of the gradient P * dG/dsim / total_rows, where dG/dsim is (1 - lam) / tau plus
// lam beta_w / (1 - sim) below the cap (0 where sim was clamped: the distance is `clamped`).
// Two reads of the row: an online logsumexp, then P and the gradient. Writes only the gradient
// (0 at the excluded columns) and the logsumexp. Arithmetic in the input's precision.
//
// Only __syncthreads and shared memory (no warp intrinsics): tests/kernels/cuda_shim.h runs it
// on the CPU. Launch: grid R, block ROWPASS_THREADS (a power of two).

#ifndef ROWPASS_THREADS
#define ROWPASS_THREADS 256
#endif

template <typename F>
struct Blend {
  F softmax_weight, shortfall_weight, cap;
  bool blend;
  __device__ F logit(F x) const {
    F value = softmax_weight * x;
    if (blend) value -= shortfall_weight * log(F(1) - (x < cap ? x : cap));
    return value;
  }
};

__device__ __forceinline__ bool is_excluded(const long long* excluded, int n_excluded, int c) {
  for (int e = 0; e < n_excluded; ++e)
    if (excluded[e] == c) return true;
  return false;
}

// exp(x - shift), with exp(-inf - shift) = 0 and a shift that is 0 where not finite.
template <typename F>
__device__ F finite_or_zero(F x) {
  return x - x == F(0) ? x : F(0);  // x - x is NaN for +-inf and NaN
}

template <typename F>
__device__ void row_pass(const F* sim, const F* lam, const long long* excluded, F* grad, F* lse,
                         int n_columns, int n_excluded, F temperature, F beta_w, F cap, F clamped,
                         F total_rows, bool blend) {
  __shared__ F peaks[ROWPASS_THREADS];
  __shared__ F totals[ROWPASS_THREADS];
  const long long row = blockIdx.x;
  sim += row * n_columns;
  grad += row * n_columns;
  excluded += row * n_excluded;
  const F gate = lam[row];
  const Blend<F> g{(F(1) - gate) / temperature, gate * beta_w, cap, blend};

  // Pass 1: each thread's running (shift, total) over its columns, then the block's.
  F shift = 0, total = 0, peak = 0;
  bool seen = false;
  for (int c = threadIdx.x; c < n_columns; c += ROWPASS_THREADS) {
    if (is_excluded(excluded, n_excluded, c)) continue;
    F logit = g.logit(sim[c]);
    peak = !seen || logit > peak || logit != logit ? logit : peak;  // NaN wins: the loss is NaN
    seen = true;
    F new_shift = finite_or_zero(peak);
    total = total * exp(shift - new_shift) + exp(logit - new_shift);
    shift = new_shift;
  }
  peaks[threadIdx.x] = shift;
  totals[threadIdx.x] = total;
  __syncthreads();
  for (int step = ROWPASS_THREADS / 2; step > 0; step /= 2) {
    F merged_shift = 0, merged_total = 0;
    if (threadIdx.x < step) {
      F a = peaks[threadIdx.x], b = peaks[threadIdx.x + step];
      merged_shift = a > b ? a : b;
      merged_total = totals[threadIdx.x] * exp(a - merged_shift) +
                     totals[threadIdx.x + step] * exp(b - merged_shift);
    }
    __syncthreads();
    if (threadIdx.x < step) {
      peaks[threadIdx.x] = merged_shift;
      totals[threadIdx.x] = merged_total;
    }
    __syncthreads();
  }
  const F row_lse = log(totals[0]) + peaks[0];
  if (threadIdx.x == 0) lse[row] = row_lse;

  // Pass 2: P * dG/dsim / total_rows.
  const F softmax_slope = g.softmax_weight / total_rows;
  const F shortfall_slope = g.shortfall_weight / total_rows;
  for (int c = threadIdx.x; c < n_columns; c += ROWPASS_THREADS) {
    if (is_excluded(excluded, n_excluded, c)) {
      grad[c] = 0;
      continue;
    }
    F x = sim[c];
    F slope = softmax_slope;
    F distance = F(1) - (x < cap ? x : cap);
    if (blend && distance > clamped) slope += shortfall_slope / distance;
    grad[c] = exp(g.logit(x) - row_lse) * slope;
  }
}

extern "C" __global__ void row_pass_f32(const float* sim, const float* lam,
                                        const long long* excluded, float* grad, float* lse,
                                        int n_columns, int n_excluded, float temperature,
                                        float beta_w, float cap, float clamped, float total_rows,
                                        int blend) {
  row_pass<float>(sim, lam, excluded, grad, lse, n_columns, n_excluded, temperature, beta_w, cap,
                  clamped, total_rows, blend != 0);
}

extern "C" __global__ void row_pass_f64(const double* sim, const double* lam,
                                        const long long* excluded, double* grad, double* lse,
                                        int n_columns, int n_excluded, double temperature,
                                        double beta_w, double cap, double clamped,
                                        double total_rows, int blend) {
  row_pass<double>(sim, lam, excluded, grad, lse, n_columns, n_excluded, temperature, beta_w,
                   cap, clamped, total_rows, blend != 0);
}
