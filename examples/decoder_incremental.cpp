// A causal TaLK decoder layer: the full forward over a whole sequence (training, teacher forcing), then
// incremental decoding token by token (inference), which must give the same rows.
#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  using talkconv::index_t;
  constexpr index_t T = 64, B = 3, C = 32, H = 4;
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // [snippet:decoder-incremental]
  // Causal: windows reach up to L = 15 tokens back and none forward; P = H offsets per token.
  talkconv::talk_config cfg;
  cfg.channels = C;
  cfg.heads = H;
  cfg.max_left = 15;
  cfg.causal = true;
  const talkconv::talk_conv<float> layer(cfg);

  std::vector<float> x(T * B * C), weight(layer.weight_size()), bias(layer.num_offsets());
  for (float& v : x) v = normal(gen);
  for (float& v : weight) v = 0.2f * normal(gen);
  for (float& v : bias) v = normal(gen);

  // The whole sequence at once, time-major [T, B, C].
  std::vector<float> y_full(x.size());
  talkconv::forward_args<float> fwd;
  fwd.shape = {T, B, C, talkconv::layout::tbc};
  fwd.x = x.data();
  fwd.weight = weight.data();
  fwd.bias = bias.data();
  fwd.y = y_full.data();
  layer.forward(fwd);

  // One token at a time: step(x_t) takes token t of every sequence ([B, C], which is row t of a
  // time-major tensor) and gives y_t. The state keeps L + 2 prefix sums per channel, whatever t is.
  talkconv::cpu::decoder<float> state = layer.make_decoder(B);
  std::vector<float> y_t(B * C);
  double worst = 0.0;
  for (index_t t = 0; t < T; ++t) {
    state.step(x.data() + t * B * C, weight.data(), bias.data(), y_t.data());
    double diff = 0.0;
    for (index_t i = 0; i < B * C; ++i) diff = std::max(diff, double(std::abs(y_t[i] - y_full[t * B * C + i])));
    worst = std::max(worst, diff);
    if (t < 3 || t % 16 == 15)
      std::printf("token %2lld: y[t, 0, 0] incremental %+.6f  full %+.6f  max |diff| over [B, C] %.1e\n", (long long)t,
                  y_t[0], y_full[t * B * C], diff);
  }
  std::printf("decoder state: %lld bytes per sequence, independent of the tokens decoded (%lld so far)\n",
              (long long)state.state_bytes_per_sequence(), (long long)state.position());
  // [/snippet:decoder-incremental]

  const bool ok = worst <= 1e-5;
  std::printf("incremental decoding vs full forward: max |diff| %.2e  %s\n", worst, ok ? "agree" : "DISAGREE");
  return ok ? 0 : 1;
}
