// Finite differences (float64) of the library's own forward against its backward: the layer's dx,
// dweight, dbias (dropout on and off), and window_backward's dx and d_offsets. Bounds are kept away
// from integers, where SPEC's gradient convention (zero at the kinks) differs from a derivative.
#include "util.hpp"

using namespace tt;
namespace cpu = talkconv::cpu;

namespace {

std::vector<size_t> every_index(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

// FD step and bar: the forward is smooth (sigmoid) or piecewise linear between kinks, so central
// differences with h = 1e-6 are exact up to O(h^2) + rounding / h ~ 1e-9.
constexpr double fd_step = 1e-6, fd_tol = 1e-6;

std::vector<ref::problem> fd_problems() {
  std::vector<ref::problem> v;
  for (bool causal : {false, true}) {
    ref::problem pb;
    pb.T = 15, pb.B = 2, pb.C = 8, pb.H = 2, pb.L = 3, pb.M = causal ? 0 : 4, pb.causal = causal;
    v.push_back(pb);
    pb.T = 9, pb.B = 3, pb.C = 6, pb.H = 3, pb.L = 11, pb.M = causal ? 0 : 10;  // windows wider than T
    pb.lengths = {9, 4, 1};
    v.push_back(pb);
  }
  return v;
}

}  // namespace

TEST_SUITE("gradcheck") {

TEST_CASE("gradcheck: talk_conv<double> dx, dweight, dbias equal finite differences of forward") {
  std::mt19937_64 rng(4004);
  int cases = 0, nontrivial = 0;
  for (const ref::problem& pb : fd_problems())
    for (layout lay : {layout::tbc, layout::btc})
      for (float p : {0.0f, 0.1f, 0.5f}) {
        const talkconv::dropout_params dp{p, 321, p > 0.0f};
        const ref::dropout rd{dp.active(), p, dp.seed};
        vec x = normal_vec(rng, pb.x_size()), bias = normal_vec(rng, static_cast<size_t>(pb.P())), W;
        for (int tries = 0;; ++tries) {  // redraw W until every bound is at least 1e-4 from a kink
          REQUIRE(tries < 200);
          W = normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 0.7);
          vec o_pre, o;
          ref::offsets(pb, x, W, bias, rd, o_pre, o);
          if (ref::kink_distance(pb, o) > 1e-4) break;
        }
        const vec dy = normal_vec(rng, pb.x_size());
        INFO(pb.str(), " layout=", layout_name(lay), " p=", p);
        talkconv::talk_config cfg{pb.C, pb.H, pb.L, pb.M, pb.causal};
        const talkconv::talk_conv<double> conv(cfg);
        const auto len = lengths_of(pb);
        const auto dys = to_layout<double>(dy, lay, pb.T, pb.B, pb.C);
        auto loss = [&] {
          const auto xs = to_layout<double>(x, lay, pb.T, pb.B, pb.C);
          std::vector<double> y(xs.size());
          talkconv::forward_args<double> fa;
          fa.shape = shape_of(pb, lay), fa.x = xs.data(), fa.weight = W.data(), fa.bias = bias.data(), fa.y = y.data();
          fa.lengths = lengths_ptr(len), fa.dropout = dp;
          conv.forward(fa);
          return ref::dot(from_layout(y.data(), lay, pb.T, pb.B, pb.C), dy);
        };
        const auto xs = to_layout<double>(x, lay, pb.T, pb.B, pb.C);
        std::vector<double> dx(xs.size()), dW(W.size()), db(bias.size());
        talkconv::backward_args<double> ba;
        ba.shape = shape_of(pb, lay), ba.x = xs.data(), ba.weight = W.data(), ba.bias = bias.data(), ba.dy = dys.data();
        ba.dx = dx.data(), ba.dweight = dW.data(), ba.dbias = db.data(), ba.lengths = lengths_ptr(len), ba.dropout = dp;
        conv.backward(ba);
        const vec dx_c = from_layout(dx.data(), lay, pb.T, pb.B, pb.C);
        TT_CHECK_CLOSE("dx vs FD", dx_c, ref::finite_diff(x, every_index(x.size()), fd_step, loss), fd_tol, 1.0 + max_abs(dx_c));
        TT_CHECK_CLOSE("dweight vs FD", dW, ref::finite_diff(W, every_index(W.size()), fd_step, loss), fd_tol, 1.0 + max_abs(dW));
        TT_CHECK_CLOSE("dbias vs FD", db, ref::finite_diff(bias, every_index(bias.size()), fd_step, loss), fd_tol,
                       1.0 + max_abs(db));
        nontrivial += max_abs(dW) > 1e-6 ? 1 : 0;
        ++cases;
      }
  // The gradients are not trivially zero (some cases, e.g. T = 9 with L = 11 and p = 0.5, do clamp
  // every window): the comparison could fail.
  CHECK(nontrivial * 4 >= cases * 3);
}

TEST_CASE("gradcheck: window_backward dx and d_offsets equal finite differences of window_forward") {
  std::mt19937_64 rng(5005);
  int cases = 0, nontrivial = 0;
  for (const ref::problem& pb : fd_problems())
    for (layout lay : {layout::tbc, layout::btc})
      for (double hi : {1.0, 2.0}) {  // 2: offsets scaled as by dropout p = 0.5
        vec x = normal_vec(rng, pb.x_size()), o;
        for (int tries = 0;; ++tries) {
          REQUIRE(tries < 200);
          o = uniform_vec(rng, pb.o_size(), 0.02 * hi, 0.98 * hi);
          if (ref::kink_distance(pb, o) > 1e-4) break;
        }
        const vec dy = normal_vec(rng, pb.x_size());
        INFO(pb.str(), " layout=", layout_name(lay), " offsets in (0, ", hi, ")");
        const auto len = lengths_of(pb);
        const auto dys = to_layout<double>(dy, lay, pb.T, pb.B, pb.C);
        auto loss = [&] {
          const auto xs = to_layout<double>(x, lay, pb.T, pb.B, pb.C);
          const auto os = to_layout<double>(o, lay, pb.T, pb.B, pb.P());
          std::vector<double> y(xs.size());
          cpu::window_forward<double>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), y.data(), lengths_ptr(len));
          return ref::dot(from_layout(y.data(), lay, pb.T, pb.B, pb.C), dy);
        };
        const auto xs = to_layout<double>(x, lay, pb.T, pb.B, pb.C);
        const auto os = to_layout<double>(o, lay, pb.T, pb.B, pb.P());
        std::vector<double> dx(xs.size()), d_o(os.size());
        cpu::window_backward<double>(shape_of(pb, lay), window_of(pb), xs.data(), os.data(), dys.data(), dx.data(),
                                     d_o.data(), lengths_ptr(len));
        const vec dx_c = from_layout(dx.data(), lay, pb.T, pb.B, pb.C);
        const vec do_c = from_layout(d_o.data(), lay, pb.T, pb.B, pb.P());
        TT_CHECK_CLOSE("dx vs FD", dx_c, ref::finite_diff(x, every_index(x.size()), fd_step, loss), fd_tol, 1.0 + max_abs(dx_c));
        TT_CHECK_CLOSE("d_offsets vs FD", do_c, ref::finite_diff(o, every_index(o.size()), fd_step, loss), fd_tol,
                       1.0 + max_abs(do_c));
        nontrivial += max_abs(do_c) > 1e-6 ? 1 : 0;
        ++cases;
      }
  CHECK(nontrivial * 4 >= cases * 3);
}

}  // TEST_SUITE
