// The building blocks on their own, as someone porting a model trained with the original PyTorch TaLK
// implementation would use them: offsets computed elsewhere (here a plain loop standing in for the
// user's own inference engine), then talkconv's window aggregation; the original algorithm (one
// prefix sum over the sequence, then interpolation) rebuilt from cpu::prefix_sum as a cross-check.
#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using talkconv::index_t;

// The module's hyper-parameters as the original writes them: TaLKConv(hid_dim = C, num_heads = H,
// min_len_left = L, min_len_right = M). (Its min_len_* are the largest reaches, talkconv's max_*.)
constexpr index_t T = 50, B = 2, C = 16, H = 4, L = 6, M = 3, K = L + M + 1, P = 2 * H;

}  // namespace

int main() {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // x as fairseq hands it to the layer: time-major [T, B, C]. The offset projection nn.Linear(C, 2H)
  // as its state_dict stores it: weight [2H, C] row-major, bias [2H]. Both are talkconv's layouts.
  std::vector<float> x(T * B * C), weight(P * C), bias(P);
  for (float& v : x) v = normal(gen);
  for (float& v : weight) v = 0.3f * normal(gen);
  for (float& v : bias) v = normal(gen);

  // [snippet:building-blocks]
  // Offsets from elsewhere: sigmoid(nn.Linear(x)) per token, [T, B, 2H] (left of heads 0..H-1, then
  // right), which is the original's x_offsets tensor before it splits it into [T, B*H] halves.
  std::vector<float> offsets(T * B * P);
  for (index_t n = 0; n < T * B; ++n)
    for (index_t j = 0; j < P; ++j) {
      float z = bias[j];
      for (index_t c = 0; c < C; ++c) z += weight[j * C + c] * x[n * C + c];
      offsets[n * P + j] = 1.0f / (1.0f + std::exp(-z));
    }

  // The window aggregation alone: y[t, b, c] = interpolated sum of x over head(c)'s window, / K.
  const talkconv::seq_shape shape{T, B, C, talkconv::layout::tbc};
  const talkconv::window_params window{/*heads*/ H, /*max_left*/ L, /*max_right*/ M, /*causal*/ false};
  std::vector<float> y(x.size());
  talkconv::cpu::window_forward<float>(shape, window, x.data(), offsets.data(), y.data());

  // Its backward: dL/dx through the window and dL/d(offsets) per head, e.g. to train the projection
  // with another library, or to check against the original's TaLKConvolutionEncoderFunction.
  std::vector<float> dy(x.size(), 1.0f), dx(x.size()), d_offsets(offsets.size());
  talkconv::cpu::window_backward<float>(shape, window, x.data(), offsets.data(), dy.data(), dx.data(),
                                        d_offsets.data());

  // The original algorithm: S = cumsum(x / K) over the whole sequence (segment 0), then for token t
  // y = I(a_r) - I(a_l - 1) with I(a) = (1 - frac a) S[floor a] + (frac a) S[ceil a], S[-1] = 0.
  std::vector<float> S(x.size());
  talkconv::cpu::prefix_sum<float>(shape, x.data(), S.data(), 1.0f / K);
  // [/snippet:building-blocks]

  auto S_at = [&](index_t t, index_t b, index_t c) { return t < 0 ? 0.0 : double(S[(t * B + b) * C + c]); };
  auto I = [&](double a, index_t b, index_t c) {
    const double f = a - std::floor(a);
    return (1 - f) * S_at(index_t(std::floor(a)), b, c) + f * S_at(index_t(std::ceil(a)), b, c);
  };
  double worst = 0.0;
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c) {
        const index_t h = c / (C / H);
        const double o_l = offsets[(t * B + b) * P + h], o_r = offsets[(t * B + b) * P + H + h];
        const double a_l = std::clamp(double(t) - o_l * L, 0.0, double(T - 1));
        const double a_r = std::clamp(double(t) + o_r * M, 0.0, double(T - 1));
        const double ref = I(a_r, b, c) - I(a_l - 1, b, c);
        worst = std::max(worst, std::abs(ref - double(y[(t * B + b) * C + c])));
      }
  std::printf("window_forward vs the original's prefix-sum algorithm: max |diff| %.2e\n", worst);

  // The same numbers from the whole layer, which computes the offsets itself from weight and bias.
  // [snippet:port-layer]
  // TaLKConv(hid_dim = C, num_heads = H, min_len_left = L, min_len_right = M) with decode = False,
  // in eval mode, is one talk_conv; its `offsets` nn.Linear is weight and bias exactly as stored.
  const talkconv::talk_conv<float> layer({/*channels*/ C, /*heads*/ H, /*max_left*/ L, /*max_right*/ M});
  std::vector<float> y_layer(x.size());
  talkconv::forward_args<float> a;
  a.shape = {T, B, C, talkconv::layout::tbc};  // x as fairseq passes it to the module: [T, B, C]
  a.x = x.data();
  a.weight = weight.data();  // state_dict()["<layer>.conv.offsets.weight"]: [2H, C], row-major
  a.bias = bias.data();      // state_dict()["<layer>.conv.offsets.bias"]: [2H]
  a.y = y_layer.data();
  layer.forward(a);  // = TaLKConv.forward(x) in eval mode (no offset dropout)
  // [/snippet:port-layer]
  double layer_diff = 0.0;
  for (size_t i = 0; i < y.size(); ++i) layer_diff = std::max(layer_diff, double(std::abs(y[i] - y_layer[i])));
  std::printf("window_forward on outside offsets vs talk_conv: max |diff| %.2e\n", layer_diff);

  // With dy = 1, dx[tau] is how much of all windows covers token tau, divided by K: the mean window
  // length over K (about a half here, as offsets are spread over (0, 1)).
  double mean_dx = 0.0, mean_doff = 0.0;
  for (float v : dx) mean_dx += v / double(dx.size());
  for (float v : d_offsets) mean_doff += v / double(d_offsets.size());
  std::printf("window_backward with dy = 1: mean dx %.4f, mean dL/d(offset) %.4f\n", mean_dx, mean_doff);

  const bool ok = worst <= 1e-5 && layer_diff <= 1e-5;
  std::printf("%s\n", ok ? "building blocks agree" : "BUILDING BLOCKS DISAGREE");
  return ok ? 0 : 1;
}
