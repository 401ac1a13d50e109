// The consumer program every packaging test builds: a forward and backward through talkconv::talkconv
// as a user's project sees it, with a result it can check exactly.
#include <talkconv/talkconv.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#if defined(TALKCONV_CONSUMER_EXPECT_OPENMP) && !TALKCONV_HAS_OPENMP
#error "talkconv was built with OpenMP, but its target did not pass OpenMP on to this consumer"
#endif

int main() {
  // Zero weight and bias give offsets sigmoid(0) = 1/2: with L = M = 4 every interior window covers
  // tokens [t - 2, t + 2] exactly, so y = 5 / 9 for x = 1.
  const talkconv::talk_conv<float, 2> layer({/*channels*/ 8, /*heads*/ 2, /*max_left*/ 4, /*max_right*/ 4});
  const talkconv::seq_shape shape{16, 2, 8, talkconv::layout::tbc};
  std::vector<float> x(16 * 2 * 8, 1.0f), y(x.size()), w(layer.weight_size(), 0.0f), b(layer.num_offsets(), 0.0f);
  talkconv::forward_args<float> fwd;
  fwd.shape = shape;
  fwd.x = x.data();
  fwd.weight = w.data();
  fwd.bias = b.data();
  fwd.y = y.data();
  layer.forward(fwd);

  std::vector<float> dy(y.size(), 1.0f), dx(x.size()), dw(w.size()), db(b.size());
  talkconv::backward_args<float> bwd;
  bwd.shape = shape;
  bwd.x = x.data();
  bwd.weight = w.data();
  bwd.bias = b.data();
  bwd.dy = dy.data();
  bwd.dx = dx.data();
  bwd.dweight = dw.data();
  bwd.dbias = db.data();
  layer.backward(bwd);

  const float interior = y[(8 * 2 + 1) * 8 + 3];  // token 8, sequence 1, channel 3
  const bool ok = std::abs(interior - 5.0f / 9.0f) < 1e-6f && std::isfinite(dx[0]) && std::isfinite(db[0]);
  bool refused = false;
  try {
    talkconv::talk_conv<float> bad(talkconv::talk_config{10, 3, 1, 1, false});
  } catch (const talkconv::error& e) {
    refused = e.code() == talkconv::status::invalid_shape;
  }
  std::printf("talkconv %d.%d.%d consumer: y = %.7f (expected %.7f), OpenMP %d, threads %d, bad config %s: %s\n",
              TALKCONV_VERSION_MAJOR, TALKCONV_VERSION_MINOR, TALKCONV_VERSION_PATCH, interior, 5.0 / 9.0,
              TALKCONV_HAS_OPENMP, talkconv::cpu::max_threads(), refused ? "refused" : "ACCEPTED",
              ok && refused ? "ok" : "FAILED");
  return ok && refused ? 0 : 1;
}
