// select.cu on the CPU through cuda_shim.h: reads sim (R x C), excluded (R x E, int64) from
// files, writes the chosen columns (int64) and values.
//   harness f32|f64 R C E k cap_key sim.bin excluded.bin columns.bin values.bin
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_shim.h"
#include "select.cu"

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

template <typename F, typename K, typename Kernel>
void run(Kernel kernel, int rows, int n_columns, int n_excluded, int k, K cap_key, char** paths) {
  auto sim = read<F>(paths[0], size_t(rows) * n_columns);
  auto excluded = read<long long>(paths[1], size_t(rows) * n_excluded);
  std::vector<long long> columns(size_t(rows) * k, -1);
  std::vector<F> values(size_t(rows) * k);
  size_t shared = size_t(k) * (sizeof(long long) + sizeof(K));
  shim_launch(rows, SELECT_THREADS, shared, kernel, sim.data(), excluded.data(), columns.data(),
              values.data(), n_columns, n_excluded, k, cap_key);
  write(paths[2], columns);
  write(paths[3], values);
}

int main(int argc, char** argv) {
  if (argc != 11) return 2;
  std::string dtype = argv[1];
  int rows = std::atoi(argv[2]), n_columns = std::atoi(argv[3]), n_excluded = std::atoi(argv[4]);
  int k = std::atoi(argv[5]);
  long long cap_key = std::atoll(argv[6]);
  if (dtype == "f32")
    run<float, int>(select_top_k_f32, rows, n_columns, n_excluded, k, int(cap_key), argv + 7);
  else
    run<double, long long>(select_top_k_f64, rows, n_columns, n_excluded, k, cap_key, argv + 7);
  return 0;
}
