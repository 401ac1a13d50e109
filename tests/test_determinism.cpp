// Determinism (SPEC Numerics): the same inputs give bitwise the same outputs and gradients, run after
// run and whatever the thread count. Problems are large enough for the parallel path (T*B*C >= 32768).
#include "util.hpp"

#if TALKCONV_HAS_OPENMP
#include <omp.h>
#endif

using namespace tt;
namespace cpu = talkconv::cpu;

namespace {

void check_same(const outputs& a, const outputs& b) {
  REQUIRE(a.bufs.size() == b.bufs.size());
  for (size_t i = 0; i < a.bufs.size(); ++i) {
    INFO("output ", a.names[i]);
    CHECK(a.bufs[i] == b.bufs[i]);
  }
}

ref::problem big_problem(bool causal) {
  ref::problem pb;
  pb.T = 1024, pb.B = 2, pb.C = 128, pb.H = 4, pb.L = 20, pb.M = causal ? 0 : 20, pb.causal = causal;
  if (small) pb.T = 256;  // 256 * 2 * 128 = 65536: still the parallel path
  pb.lengths = {pb.T, pb.T - 77};
  return pb;
}

// Runs the layer and every building block once. `fill` is written into every output first, so an
// output that is read before it is written (or not written at all) shows up as a difference.
template <class T>
outputs run_all(const ref::problem& pb, layout lay, double fill) {
  using A = talkconv::acc_t<T>;
  REQUIRE(pb.T * pb.B * pb.C >= 32768);
  std::mt19937_64 rng(8008);  // the same inputs on every call
  const auto x = to_layout<T>(normal_vec(rng, pb.x_size()), lay, pb.T, pb.B, pb.C);
  const auto dy = to_layout<T>(normal_vec(rng, pb.x_size()), lay, pb.T, pb.B, pb.C);
  const auto W = to_store_vec<T>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C), 0.0, 0.15));
  const auto bias = to_store_vec<T>(normal_vec(rng, static_cast<size_t>(pb.P())));
  const auto o_in = to_layout<A>(uniform_vec(rng, pb.o_size(), 0.0, 2.0), lay, pb.T, pb.B, pb.P());
  const auto len = lengths_of(pb);
  const auto shape = shape_of(pb, lay);
  const auto win = window_of(pb);
  const talkconv::dropout_params dp{0.1f, 99, true};
  const T f = to_store<T>(fill);
  outputs out;

  const talkconv::talk_conv<T> conv(talkconv::talk_config{pb.C, pb.H, pb.L, pb.M, pb.causal});
  std::vector<T> y(x.size(), f), dx(x.size(), f), dW(W.size(), f), db(bias.size(), f);
  std::vector<A> saved(pb.o_size(), A(fill));
  talkconv::forward_args<T> fa;
  fa.shape = shape, fa.x = x.data(), fa.weight = W.data(), fa.bias = bias.data(), fa.y = y.data();
  fa.saved_offsets = saved.data(), fa.lengths = lengths_ptr(len), fa.dropout = dp;
  conv.forward(fa);
  talkconv::backward_args<T> ba;
  ba.shape = shape, ba.x = x.data(), ba.weight = W.data(), ba.bias = bias.data(), ba.dy = dy.data();
  ba.saved_offsets = saved.data(), ba.dx = dx.data(), ba.dweight = dW.data(), ba.dbias = db.data();
  ba.lengths = lengths_ptr(len), ba.dropout = dp;
  conv.backward(ba);
  out.add("layer y", y), out.add("layer saved_offsets", saved), out.add("layer dx", dx), out.add("layer dweight", dW);
  out.add("layer dbias", db);
  std::vector<T> dx2(x.size(), f), dW2(W.size(), f), db2(bias.size(), f);
  ba.saved_offsets = nullptr, ba.dx = dx2.data(), ba.dweight = dW2.data(), ba.dbias = db2.data();
  conv.backward(ba);
  out.add("layer dx (recomputed offsets)", dx2), out.add("layer dweight (recomputed)", dW2), out.add("layer dbias (recomputed)", db2);

  std::vector<A> o(pb.o_size(), A(fill)), o_pre(pb.o_size(), A(fill));
  cpu::offsets_forward<T>(shape, win, x.data(), W.data(), bias.data(), dp, o.data(), o_pre.data(), lengths_ptr(len));
  out.add("offsets", o), out.add("offsets_pre", o_pre);
  std::vector<T> wy(x.size(), f), wdx(x.size(), f);
  std::vector<A> wdo(pb.o_size(), A(fill));
  cpu::window_forward<T>(shape, win, x.data(), o_in.data(), wy.data(), lengths_ptr(len));
  cpu::window_backward<T>(shape, win, x.data(), o_in.data(), dy.data(), wdx.data(), wdo.data(), lengths_ptr(len));
  out.add("window y", wy), out.add("window dx", wdx), out.add("window d_offsets", wdo);
  std::vector<T> odx = dy, odW(W.size(), f), odb(bias.size(), f);  // offsets_backward accumulates into dx
  cpu::offsets_backward<T>(shape, win, x.data(), W.data(), o_pre.data(), wdo.data(), dp, odx.data(), odW.data(), odb.data(),
                           lengths_ptr(len));
  out.add("offsets_backward dx", odx), out.add("offsets_backward dweight", odW), out.add("offsets_backward dbias", odb);
  std::vector<A> S(x.size(), A(fill));
  cpu::prefix_sum<T>(shape, x.data(), S.data(), A(0.5), 300);
  out.add("prefix_sum", S);
  if constexpr (std::is_same<T, A>::value) {
    std::vector<A> hs(static_cast<size_t>(pb.T * pb.B * pb.H), A(fill));
    cpu::head_sum<A>(shape, win, x.data(), hs.data());
    out.add("head_sum", hs);
  }
  return out;
}

template <class T>
void two_runs() {
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc}) {
      INFO(dtype_name<T>(), " ", big_problem(causal).str(), " layout=", layout_name(lay));
      check_same(run_all<T>(big_problem(causal), lay, 0.0), run_all<T>(big_problem(causal), lay, -12345.0));
    }
}

template <class T>
void thread_counts() {
#if TALKCONV_HAS_OPENMP
  const int before = omp_get_max_threads();
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc}) {
      INFO(dtype_name<T>(), " ", big_problem(causal).str(), " layout=", layout_name(lay));
      omp_set_num_threads(1);
      REQUIRE(omp_get_max_threads() == 1);
      const outputs one = run_all<T>(big_problem(causal), lay, 0.0);
      for (int n : {2, 3}) {
        CAPTURE(n);
        omp_set_num_threads(n);
        REQUIRE(omp_get_max_threads() == n);  // > 1 and T*B*C >= 32768: the parallel path
        check_same(one, run_all<T>(big_problem(causal), lay, 7.0));
      }
    }
  omp_set_num_threads(before);
#else
  // Without OpenMP there is one thread: say so in the log rather than passing silently.
  MESSAGE("talkconv built without OpenMP: thread-count determinism reduces to run-to-run determinism");
  two_runs<T>();
#endif
}

}  // namespace

TEST_SUITE("determinism") {

TEST_CASE_TEMPLATE("determinism: two runs give bitwise the same outputs and gradients", T, float, double, Eigen::bfloat16) {
  two_runs<T>();
}

TEST_CASE_TEMPLATE("determinism: 1, 2 and 3 threads give bitwise the same outputs and gradients", T, float, double,
                   Eigen::half) {
  thread_counts<T>();
}

}  // TEST_SUITE
