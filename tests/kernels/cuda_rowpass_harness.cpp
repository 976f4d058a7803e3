// rowpass.cu on the CPU through cuda_shim.h: reads sim (R x C), lam (R), excluded (R x E,
// int64) from files, writes the gradient (R x C) and the logsumexp (R).
//   harness f32|f64 R C E tau beta_w cap clamped total_rows blend sim lam excluded grad lse
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_shim.h"
#include "rowpass.cu"

template <typename T>
std::vector<T> read(const char* path, size_t count) {
  std::vector<T> data(count);
  FILE* f = std::fopen(path, "rb");
  if (!f || std::fread(data.data(), sizeof(T), count, f) != count) std::exit(3);
  std::fclose(f);
  return data;
}

template <typename T>
void write(const char* path, const std::vector<T>& data) {
  FILE* f = std::fopen(path, "wb");
  if (!f || std::fwrite(data.data(), sizeof(T), data.size(), f) != data.size()) std::exit(4);
  std::fclose(f);
}

template <typename F, typename Kernel>
void run(Kernel kernel, char** argv) {
  int rows = std::atoi(argv[2]), n_columns = std::atoi(argv[3]), n_excluded = std::atoi(argv[4]);
  F tau = F(std::atof(argv[5])), beta_w = F(std::atof(argv[6])), cap = F(std::atof(argv[7]));
  F clamped = F(std::atof(argv[8])), total_rows = F(std::atof(argv[9]));
  int blend = std::atoi(argv[10]);
  auto sim = read<F>(argv[11], size_t(rows) * n_columns);
  auto lam = read<F>(argv[12], rows);
  auto excluded = read<long long>(argv[13], size_t(rows) * n_excluded);
  std::vector<F> grad(size_t(rows) * n_columns), lse(rows);
  shim_launch(rows, ROWPASS_THREADS, 0, kernel, sim.data(), lam.data(), excluded.data(),
              grad.data(), lse.data(), n_columns, n_excluded, tau, beta_w, cap, clamped,
              total_rows, blend);
  write(argv[14], grad);
  write(argv[15], lse);
}

int main(int argc, char** argv) {
  if (argc != 16) return 2;
  if (std::string(argv[1]) == "f32")
    run<float>(row_pass_f32, argv);
  else
    run<double>(row_pass_f64, argv);
  return 0;
}
