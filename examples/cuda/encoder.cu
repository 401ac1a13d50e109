// The encoder of examples/encoder_training.cpp on the GPU: a bidirectional TaLK layer trained by plain
// SGD to learn each head's window (head 0: tokens [t - 8, t + 8], head 1: [t - 12, t]). Activations,
// parameters and gradients live on the device; the loss is computed on the host for clarity.
// Without a CUDA device it says so and exits 77 (ctest: "Skipped").
#include <talkconv/cuda/talkconv.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

using talkconv::index_t;

constexpr index_t T = 256, B = 8, C = 16, H = 2, R = C / H, L = 16, M = 16, K = L + M + 1;
constexpr index_t target_left[H] = {8, 12}, target_right[H] = {8, 0};

#define CHECK_CUDA(expr)                                                      \
  do {                                                                        \
    const cudaError_t e_ = (expr);                                            \
    if (e_ != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

std::vector<float> make_target(const std::vector<float>& x) {
  std::vector<float> y(x.size(), 0.0f);
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c) {
        const index_t h = c / R;
        const index_t lo = std::max<index_t>(0, t - target_left[h]), hi = std::min(T - 1, t + target_right[h]);
        double s = 0.0;
        for (index_t tau = lo; tau <= hi; ++tau) s += x[size_t((tau * B + b) * C + c)];
        y[size_t((t * B + b) * C + c)] = float(s / double(K));
      }
  return y;
}

float* device_floats(size_t n) {
  float* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, n * sizeof(float)));
  return p;
}
void upload(float* d, const std::vector<float>& h) {
  CHECK_CUDA(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}
void download(std::vector<float>& h, const float* d) {
  CHECK_CUDA(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("talkconv CUDA encoder: no CUDA device found, skipped\n");
    return 77;
  }
  std::mt19937 gen(2020);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  const talkconv::cuda::talk_conv<float, /*Heads*/ 2> layer(
      {/*channels*/ C, /*heads*/ H, /*max_left*/ L, /*max_right*/ M});
  const talkconv::seq_shape shape{T, B, C, talkconv::layout::tbc};
  cudaStream_t stream = nullptr;
  CHECK_CUDA(cudaStreamCreate(&stream));

  std::vector<float> weight(layer.weight_size()), bias(layer.num_offsets(), -2.0f);
  for (float& w : weight) w = 0.01f * normal(gen);
  std::vector<float> x(T * B * C), y(x.size()), dy(x.size()), dweight(weight.size()), dbias(bias.size());
  std::vector<float> saved(layer.saved_size(T, B));

  float *d_x = device_floats(x.size()), *d_y = device_floats(x.size()), *d_dy = device_floats(x.size()),
        *d_dx = device_floats(x.size()), *d_w = device_floats(weight.size()), *d_b = device_floats(bias.size()),
        *d_dw = device_floats(weight.size()), *d_db = device_floats(bias.size()),
        *d_saved = device_floats(saved.size());
  upload(d_w, weight);
  upload(d_b, bias);

  // [snippet:cuda-workspace]
  // Two-phase workspaces, sized once: no allocation inside the training loop.
  talkconv::forward_args<float> fwd;
  fwd.shape = shape;
  fwd.x = d_x;
  fwd.weight = d_w;
  fwd.bias = d_b;
  fwd.y = d_y;
  fwd.saved_offsets = d_saved;
  talkconv::backward_args<float> bwd;
  bwd.shape = shape;
  bwd.x = d_x;
  bwd.weight = d_w;
  bwd.bias = d_b;
  bwd.dy = d_dy;
  bwd.saved_offsets = d_saved;
  bwd.dx = d_dx;
  bwd.dweight = d_dw;
  bwd.dbias = d_db;
  std::size_t fwd_bytes = 0, bwd_bytes = 0;
  layer.forward(nullptr, fwd_bytes, fwd, stream);
  layer.backward(nullptr, bwd_bytes, bwd, stream);
  void* workspace = nullptr;
  CHECK_CUDA(cudaMalloc(&workspace, std::max(fwd_bytes, bwd_bytes)));
  // [/snippet:cuda-workspace]

  const float lr = 50.0f;
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 0; step <= 200; ++step) {
    for (float& v : x) v = normal(gen);
    const std::vector<float> target = make_target(x);
    upload(d_x, x);

    fwd.dropout = {/*p*/ 0.05f, /*seed*/ std::uint64_t(step), /*training*/ true};
    layer.forward(workspace, fwd_bytes, fwd, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    download(y, d_y);

    double loss = 0.0;
    for (size_t i = 0; i < y.size(); ++i) {
      const float e = y[i] - target[i];
      loss += double(e) * e;
      dy[i] = 2.0f * e / float(y.size());
    }
    loss /= double(y.size());
    upload(d_dy, dy);

    bwd.dropout = fwd.dropout;  // the same seed redraws the same mask (bitwise the CPU's)
    layer.backward(workspace, bwd_bytes, bwd, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    download(dweight, d_dw);
    download(dbias, d_db);
    for (size_t i = 0; i < weight.size(); ++i) weight[i] -= lr * dweight[i];
    for (size_t i = 0; i < bias.size(); ++i) bias[i] -= lr * dbias[i];
    upload(d_w, weight);
    upload(d_b, bias);

    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step % 25 == 0) {
      download(saved, d_saved);
      double reach[2 * H] = {};
      for (index_t i = 0; i < T * B; ++i)
        for (index_t j = 0; j < 2 * H; ++j)
          reach[j] += saved[size_t(i * 2 * H + j)] * double(j < H ? L : M) / double(T * B);
      std::printf("step %3d  loss %.3e   head 0 reaches %4.1f left %4.1f right   head 1 %4.1f left %4.1f right\n", step,
                  loss, reach[0], reach[H], reach[1], reach[H + 1]);
    }
  }
  for (float* p : {d_x, d_y, d_dy, d_dx, d_w, d_b, d_dw, d_db, d_saved}) CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaFree(workspace));
  CHECK_CUDA(cudaStreamDestroy(stream));
  const bool learned = last_loss < 0.2 * first_loss;
  std::printf("loss %.3e -> %.3e: %s\n", first_loss, last_loss, learned ? "learned" : "DID NOT LEARN");
  return learned ? 0 : 1;
}
