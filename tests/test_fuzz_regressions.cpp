// Regressions found by the fuzz target (tests/fuzz/fuzz_talkconv.cpp), each reproduced through the
// public API. The input that found each one is in tests/fuzz/corpus/regress-* and is replayed by the
// ctest entry talkconv.fuzz.replay.
#include "util.hpp"

#include <limits>

using namespace tt;
namespace cpu = talkconv::cpu;
using talkconv::status;

namespace {

// Calls f and returns the talkconv::error it throws; fails the test when it throws nothing.
template <class F>
talkconv::error refusal(F&& f) {
  try {
    f();
  } catch (const talkconv::error& e) {
    return e;
  }
  FAIL("the call was accepted");
  return talkconv::error(status::success, "", "");
}

}  // namespace

TEST_SUITE("fuzz_regressions") {

// regress-huge-window-scratch. A window of L = 2^40 on a sequence of 12 tokens is a valid call, but the
// CPU tile length was at least 2K whatever T was, and the per-tile scratch (taps, offsets) was sized by
// the tile: window_forward asked for 2^43 taps, the layer for 2^43 * P offsets (std::bad_alloc, or
// ASan's allocation-size-too-big). Fixed in detail/tile_plan.hpp: the tile is never longer than T.
TEST_CASE("fuzz_regressions: a huge window on a short sequence allocates for the sequence") {
  const index_t big = index_t(1) << 40;
  for (index_t T : {index_t(1), index_t(12), index_t(300)})
    for (index_t B : {index_t(1), index_t(3)}) {
      CAPTURE(T);
      CAPTURE(B);
      CHECK(talkconv::detail::cpu_tile_length(2 * big + 1, T, B) <= T);
      CHECK(talkconv::detail::cpu_tile_length(5, T, B) <= T);
    }
  ref::problem pb;
  pb.T = 12, pb.B = 2, pb.C = 4, pb.H = 2, pb.L = big, pb.M = (index_t(1) << 21) + 1;
  pb.lengths = {12, 7};
  std::mt19937_64 rng(41);
  const vec x = round_through<double>(normal_vec(rng, pb.x_size()));
  // Offsets k / 8: the bounds t -+ o * 2^40 are integers, clamped to the sequence unless o = 0.
  vec o(pb.o_size());
  for (auto& v : o) v = static_cast<double>(uniform_int(rng, 0, 8)) / 8.0;
  const auto len = lengths_of(pb);
  std::vector<double> y(x.size(), -777.0);
  REQUIRE_NOTHROW(cpu::window_forward<double>(shape_of(pb, layout::tbc), window_of(pb), x.data(), o.data(), y.data(),
                                              lengths_ptr(len)));
  TT_CHECK_CLOSE("window_forward y", vec(y.begin(), y.end()), ref::window_forward(pb, x, o), 1e-12, 1.0);
  const vec dy = round_through<double>(normal_vec(rng, pb.x_size()));
  std::vector<double> dx(x.size(), -777.0), d_o(o.size(), -777.0);
  REQUIRE_NOTHROW(cpu::window_backward<double>(shape_of(pb, layout::btc), window_of(pb), to_layout<double>(x, layout::btc, pb.T, pb.B, pb.C).data(),
                                               to_layout<double>(o, layout::btc, pb.T, pb.B, pb.P()).data(),
                                               to_layout<double>(dy, layout::btc, pb.T, pb.B, pb.C).data(), dx.data(), d_o.data(),
                                               lengths_ptr(len)));
  vec want_dx, want_do;
  ref::window_backward(pb, x, o, dy, want_dx, want_do);
  TT_CHECK_CLOSE("window_backward dx", from_layout(dx.data(), layout::btc, pb.T, pb.B, pb.C), want_dx, 1e-12, 1.0);

  // The layer, forward and backward, with the same window.
  const talkconv::talk_conv<double> layer(talkconv::talk_config{pb.C, pb.H, pb.L, pb.M, false});
  const vec W = round_through<double>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 0.5));
  const vec bias = round_through<double>(normal_vec(rng, static_cast<size_t>(pb.P())));
  std::vector<double> ly(x.size(), -777.0), saved(pb.o_size());
  talkconv::forward_args<double> fa;
  fa.shape = shape_of(pb, layout::tbc), fa.x = x.data(), fa.weight = W.data(), fa.bias = bias.data(), fa.y = ly.data();
  fa.saved_offsets = saved.data(), fa.lengths = lengths_ptr(len);
  REQUIRE_NOTHROW(layer.forward(fa));
  TT_CHECK_CLOSE("layer y", vec(ly.begin(), ly.end()), ref::layer_forward(pb, x, W, bias, ref::dropout{}), 1e-9, 1.0);
  std::vector<double> ldx(x.size()), ldW(W.size()), ldb(bias.size());
  talkconv::backward_args<double> ba;
  ba.shape = fa.shape, ba.x = x.data(), ba.weight = W.data(), ba.bias = bias.data(), ba.dy = dy.data();
  ba.dx = ldx.data(), ba.dweight = ldW.data(), ba.dbias = ldb.data(), ba.lengths = fa.lengths;
  REQUIRE_NOTHROW(layer.backward(ba));
}

// regress-2H-overflow. H = 2^62 heads (C = 2^62, so C % H == 0) in bidirectional mode: P = 2H was
// computed as a signed product that overflows (undefined behaviour) inside the validation itself, and
// what came out was used as the offsets' width. Fixed in params.hpp: validate_window refuses H > max / 2
// with size_overflow naming "H" before P is formed.
TEST_CASE("fuzz_regressions: P = 2H overflowing is a size_overflow naming H") {
  const index_t H = index_t(1) << 62;
  std::vector<float> buf(16, 0.0f);
  const talkconv::seq_shape shape{1, 1, H, layout::tbc};
  const talkconv::window_params w{H, 1, 1, false};
  const auto e = refusal([&] { cpu::window_forward<float>(shape, w, buf.data(), buf.data(), buf.data()); });
  CHECK(e.code() == status::size_overflow);
  CHECK(e.argument() == "H");
  const auto e2 = refusal([&] { (void)talkconv::talk_conv<float>(talkconv::talk_config{H, H, 1, 1, false}); });
  CHECK(e2.code() == status::size_overflow);
  CHECK(e2.argument() == "H");
  // Causal mode has P = H, which fits; its weight P * C = 2^124 does not.
  const auto e3 = refusal([&] { (void)talkconv::talk_conv<float>(talkconv::talk_config{H, H, 1, 0, true}).make_decoder(4); });
  CHECK(e3.code() == status::size_overflow);
}

// regress-weight-size-overflow. A layer with C = 2^62 and H = 2^32 was accepted, though its weight has
// P * C = 2^95 elements: weight_size() then overflowed. Fixed in layer_args.hpp: the constructor refuses
// a configuration whose P * C overflows (size_overflow, argument "P*C").
TEST_CASE("fuzz_regressions: a layer whose weight size P * C overflows is refused") {
  const auto e = refusal([] {
    (void)talkconv::talk_conv<double>(talkconv::talk_config{index_t(1) << 62, index_t(1) << 32, 3, 2, false});
  });
  CHECK(e.code() == status::size_overflow);
  CHECK(e.argument() == "P*C");
  // The largest weight that fits is accepted.
  const talkconv::talk_conv<double> ok(talkconv::talk_config{index_t(1) << 61, 1, 3, 2, false});
  CHECK(ok.weight_size() == (index_t(1) << 62));
}

}  // TEST_SUITE
