// A bidirectional TaLK encoder layer trained by plain SGD on a small synthetic task: each head must
// learn its own window. Head 0's target averages tokens [t - 8, t + 8], head 1's tokens [t - 12, t];
// the layer starts with short windows (about 2 tokens each way) and its loss falls as they grow.
#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using talkconv::index_t;

constexpr index_t T = 256, B = 8, C = 16, H = 2, R = C / H, L = 16, M = 16, K = L + M + 1;
constexpr index_t target_left[H] = {8, 12}, target_right[H] = {8, 0};

// The task's answer, computed directly: y*[t, b, c] = (1 / K) * sum of x over head(c)'s target window.
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

}  // namespace

int main() {
  std::mt19937 gen(2020);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // [snippet:encoder-training]
  const talkconv::talk_conv<float, /*Heads*/ 2> layer({/*channels*/ C, /*heads*/ H, /*max_left*/ L, /*max_right*/ M});
  const talkconv::seq_shape shape{T, B, C, talkconv::layout::tbc};

  // Parameters of the offset projection; bias -2 starts every window at sigmoid(-2) * 16 ~ 1.9 tokens.
  std::vector<float> weight(layer.weight_size()), bias(layer.num_offsets(), -2.0f);
  for (float& w : weight) w = 0.01f * normal(gen);
  std::vector<float> dweight(weight.size()), dbias(bias.size());

  // Activations and their gradients, and the offsets forward saves for backward.
  std::vector<float> x(T * B * C), y(x.size()), dy(x.size()), dx(x.size());
  std::vector<float> saved(layer.saved_size(T, B));

  const float lr = 50.0f;
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 0; step <= 200; ++step) {
    for (float& v : x) v = normal(gen);  // a fresh batch
    const std::vector<float> target = make_target(x);

    talkconv::forward_args<float> fwd;
    fwd.shape = shape;
    fwd.x = x.data();
    fwd.weight = weight.data();
    fwd.bias = bias.data();
    fwd.y = y.data();
    fwd.saved_offsets = saved.data();  // sigmoid(W x + bias), before dropout
    fwd.dropout = {/*p*/ 0.05f, /*seed*/ std::uint64_t(step), /*training*/ true};
    layer.forward(fwd);

    // Mean squared error and its gradient.
    double loss = 0.0;
    for (size_t i = 0; i < y.size(); ++i) {
      const float e = y[i] - target[i];
      loss += double(e) * e;
      dy[i] = 2.0f * e / float(y.size());
    }
    loss /= double(y.size());

    talkconv::backward_args<float> bwd;
    bwd.shape = shape;
    bwd.x = x.data();
    bwd.weight = weight.data();
    bwd.bias = bias.data();
    bwd.dy = dy.data();
    bwd.saved_offsets = saved.data();  // skips recomputing the projection
    bwd.dx = dx.data();
    bwd.dweight = dweight.data();
    bwd.dbias = dbias.data();
    bwd.dropout = fwd.dropout;  // the same seed redraws the same mask
    layer.backward(bwd);

    for (size_t i = 0; i < weight.size(); ++i) weight[i] -= lr * dweight[i];
    for (size_t i = 0; i < bias.size(); ++i) bias[i] -= lr * dbias[i];
    // [/snippet:encoder-training]

    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step % 25 == 0) {
      // Mean reach of each head's window in tokens: o * L left, o * M right, from the saved offsets.
      double reach[2 * H] = {};
      for (index_t i = 0; i < T * B; ++i)
        for (index_t j = 0; j < 2 * H; ++j)
          reach[j] += saved[size_t(i * 2 * H + j)] * double(j < H ? L : M) / double(T * B);
      std::printf("step %3d  loss %.3e   head 0 reaches %4.1f left %4.1f right   head 1 %4.1f left %4.1f right\n", step,
                  loss, reach[0], reach[H], reach[1], reach[H + 1]);
    }
  }
  std::printf(
      "targets: head 0 reaches 8 left 8 right, head 1 12 left 0 right (dropout p = 0.05 scales kept\n"
      "offsets by 1 / 0.95 in training, so the learned pre-dropout reach settles slightly short)\n");
  const bool learned = last_loss < 0.2 * first_loss;
  std::printf("loss %.3e -> %.3e: %s\n", first_loss, last_loss, learned ? "learned" : "DID NOT LEARN");
  return learned ? 0 : 1;
}
