// Compiled, never run, by packaging.warnings_*: every public CPU entry point instantiated for every
// built-in element type, in a translation unit with -Wall -Wextra -Wpedantic -Werror and AVX-512
// code generation, as a demanding user's project builds it. A warning from talkconv's headers fails it.
#include <talkconv/talkconv.hpp>

#include <vector>

template <class T, int Heads>
static void exercise(bool causal) {
  using A = talkconv::acc_t<T>;
  const talkconv::talk_config cfg{/*channels*/ 32, /*heads*/ 4, /*max_left*/ 5, /*max_right*/ causal ? 0 : 3, causal};
  const talkconv::talk_conv<T, Heads> layer(cfg);
  const talkconv::seq_shape shape{20, 2, 32, talkconv::layout::btc};
  std::vector<T> x(20 * 2 * 32, T(0.5f)), y(x.size()), w(layer.weight_size(), T(0.01f)), b(layer.num_offsets(), T(0));
  std::vector<A> saved(static_cast<size_t>(20 * 2 * layer.num_offsets()));
  const talkconv::index_t lengths[2] = {20, 13};
  talkconv::forward_args<T> fwd;
  fwd.shape = shape;
  fwd.x = x.data();
  fwd.weight = w.data();
  fwd.bias = b.data();
  fwd.y = y.data();
  fwd.lengths = lengths;
  fwd.saved_offsets = saved.data();
  layer.forward(fwd);
  std::vector<T> dy(y.size(), T(1)), dx(x.size()), dw(w.size()), db(b.size());
  talkconv::backward_args<T> bwd;
  bwd.shape = shape;
  bwd.x = x.data();
  bwd.weight = w.data();
  bwd.bias = b.data();
  bwd.dy = dy.data();
  bwd.dx = dx.data();
  bwd.dweight = dw.data();
  bwd.dbias = db.data();
  bwd.lengths = lengths;
  bwd.saved_offsets = saved.data();
  layer.backward(bwd);
  if (causal) {
    auto dec = layer.make_decoder(2);
    std::vector<T> yt(2 * 32);
    dec.step(x.data(), w.data(), b.data(), yt.data());
  }
}

int main() {
  exercise<float, talkconv::dynamic_heads>(false);
  exercise<float, 4>(true);
  exercise<double, talkconv::dynamic_heads>(true);
  exercise<Eigen::half, talkconv::dynamic_heads>(false);
  exercise<Eigen::bfloat16, 4>(true);
  return 0;
}
