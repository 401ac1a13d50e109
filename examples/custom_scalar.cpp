// Custom instantiation: talkconv on a user's own 16-bit storage type through talkconv::scalar_traits,
// and layers with several head counts, fixed at compile time or chosen at run time.
#include <talkconv/talkconv.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// [snippet:custom-scalar]
// A framework's own bfloat16: 16 bits of storage, no arithmetic of its own.
struct my_bf16 {
  std::uint16_t bits;
};

inline float to_float(my_bf16 v) {
  const std::uint32_t u = std::uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline my_bf16 to_bf16(float f) {  // round to nearest even (NaN handling left out for brevity)
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return my_bf16{std::uint16_t(u >> 16)};
}

// Tell talkconv how to compute with it: accumulate in float, convert on load and store.
template <>
struct talkconv::scalar_traits<my_bf16> {
  using acc_type = float;
  static float to_acc(my_bf16 v) { return to_float(v); }
  static my_bf16 from_acc(float v) { return to_bf16(v); }
};
// [/snippet:custom-scalar]

namespace {

using talkconv::index_t;
constexpr index_t T = 96, B = 2, C = 48;

// Runs `layer` forward on x (any storage type S) and returns y as floats.
template <class S, int Heads>
std::vector<float> run(const talkconv::talk_conv<S, Heads>& layer, const std::vector<S>& x, const std::vector<S>& w,
                       const std::vector<S>& bias) {
  std::vector<S> y(x.size());
  talkconv::forward_args<S> a;
  a.shape = {T, B, C, talkconv::layout::tbc};
  a.x = x.data();
  a.weight = w.data();
  a.bias = bias.data();
  a.y = y.data();
  layer.forward(a);
  std::vector<float> out(y.size());
  std::transform(y.begin(), y.end(), out.begin(), [](S v) { return talkconv::to_acc<S>(v); });
  return out;
}

// One layer of H heads in my_bf16 against the same layer in float on the same (bf16-rounded) values.
template <int Heads>
bool compare(const char* what, index_t heads, std::mt19937& gen) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const talkconv::talk_config cfg{C, heads, 12, 12, false};
  const talkconv::talk_conv<my_bf16, Heads> layer16(cfg);
  const talkconv::talk_conv<float, Heads> layer32(cfg);
  std::vector<my_bf16> x(T * B * C), w(layer16.weight_size()), bias(layer16.num_offsets());
  for (auto& v : x) v = to_bf16(normal(gen));
  for (auto& v : w) v = to_bf16(0.2f * normal(gen));
  for (auto& v : bias) v = to_bf16(normal(gen));
  auto widen = [](const std::vector<my_bf16>& v) {
    std::vector<float> f(v.size());
    std::transform(v.begin(), v.end(), f.begin(), to_float);
    return f;
  };
  const std::vector<float> y16 = run(layer16, x, w, bias), y32 = run(layer32, widen(x), widen(w), widen(bias));
  double worst = 0.0;
  for (size_t i = 0; i < y16.size(); ++i)
    worst = std::max(worst, double(std::abs(y16[i] - y32[i])) / (std::abs(y32[i]) + 1e-2));
  // The only difference is the final rounding of y to bfloat16: half a unit in the last place, 2^-8.
  const bool ok = worst <= 1.0 / 256;
  std::printf("%-40s H = %2lld  P = %2lld  max rel diff to float %.2e  %s\n", what, (long long)layer16.heads(),
              (long long)layer16.num_offsets(), worst, ok ? "ok" : "TOO LARGE");
  return ok;
}

}  // namespace

int main() {
  std::mt19937 gen(11);
  bool ok = true;
  // Compile-time head counts: the head loop is specialized for H.
  ok &= compare<1>("talk_conv<my_bf16, 1>", 1, gen);
  ok &= compare<4>("talk_conv<my_bf16, 4>", 4, gen);
  ok &= compare<16>("talk_conv<my_bf16, 16>", 16, gen);
  // Run-time head counts: one instantiation serves every H that divides C.
  for (index_t h : {2, 3, 6, 8, 24, 48})
    ok &= compare<talkconv::dynamic_heads>("talk_conv<my_bf16, dynamic_heads>", h, gen);

  // A compile-time head count must agree with the configuration's, if it names one.
  try {
    const talkconv::talk_conv<float, 4> wrong(talkconv::talk_config{C, /*heads*/ 8, 12, 12, false});
    ok = false;
  } catch (const talkconv::error& e) {
    std::printf("talk_conv<float, 4> with heads = 8 refused: %s\n", e.what());
  }
  std::printf("%s\n", ok ? "all instantiations agree" : "SOME INSTANTIATIONS DISAGREE");
  return ok ? 0 : 1;
}
