// The README's first program: one bidirectional TaLK layer, forward and backward, on the CPU.
// [snippet:first-program]
#include <talkconv/talkconv.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  // A layer of C = 64 channels in H = 4 heads; windows reach up to 8 tokens left and right.
  const talkconv::talk_config cfg{/*channels*/ 64, /*heads*/ 4, /*max_left*/ 8, /*max_right*/ 8};
  const talkconv::talk_conv<float> layer(cfg);

  // x is time-major [T, B, C]: T = 100 tokens of B = 2 sequences (fairseq's layout).
  const talkconv::seq_shape shape{/*T*/ 100, /*B*/ 2, /*C*/ 64, talkconv::layout::tbc};
  std::vector<float> x(shape.T * shape.B * shape.C), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.01f * float(i));

  // The offset projection: weight [P, C] and bias [P], P = 2H (left offsets of the heads, then right).
  std::vector<float> weight(layer.weight_size(), 0.01f), bias(layer.num_offsets(), 0.0f);

  talkconv::forward_args<float> fwd;
  fwd.shape = shape;
  fwd.x = x.data();
  fwd.weight = weight.data();
  fwd.bias = bias.data();
  fwd.y = y.data();
  layer.forward(fwd);

  // Backward: gradients of sum(y) with respect to x, weight and bias.
  std::vector<float> dy(y.size(), 1.0f), dx(x.size()), dweight(weight.size()), dbias(bias.size());
  talkconv::backward_args<float> bwd;
  bwd.shape = shape;
  bwd.x = x.data();
  bwd.weight = weight.data();
  bwd.bias = bias.data();
  bwd.dy = dy.data();
  bwd.dx = dx.data();
  bwd.dweight = dweight.data();
  bwd.dbias = dbias.data();
  layer.backward(bwd);

  std::printf("y[50, 0, 0] = %.6f   dx[50, 0, 0] = %.6f   dbias[0] = %.6f\n", y[50 * 2 * 64], dx[50 * 2 * 64],
              dbias[0]);

  // Bad input is refused before any memory is touched, with a talkconv::error (a std::invalid_argument):
  // code() is a talkconv::status, argument() the argument's name as SPEC writes it (a std::string:
  // print it with .c_str()), what() the whole message.
  try {
    const talkconv::talk_conv<float> bad(talkconv::talk_config{/*channels*/ 10, /*heads*/ 3, 1, 1});
  } catch (const talkconv::error& e) {
    std::printf("refused: %s, argument %s\n  %s\n", talkconv::status_name(e.code()), e.argument().c_str(), e.what());
  }
  return std::isfinite(y[50 * 2 * 64]) && std::isfinite(dbias[0]) ? 0 : 1;
}
// [/snippet:first-program]
