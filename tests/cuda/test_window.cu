// CUDA building blocks against the CPU path and the float64 direct-form reference: window forward and
// backward (every dtype, causal and bidirectional, both layouts, heads narrower and wider than a block,
// lengths, offsets beyond the halo), offsets with dropout (same mask bits), prefix sums, head sums.
#include "gpu_util.cuh"

namespace {

using talkconv::layout;

template <class T>
void window_case(const test_case& c, double offset_hi) {
  using A = acc_t<T>;
  INFO(c.str(), " dtype=", tol<T>::name, " offsets in [0, ", offset_hi, "]");
  const ref::problem& pb = c.pb;
  const long P = pb.P();
  const std::vector<T> x = to_type<T>(random_vec(pb.x_size(), c.seed + 1, 1.0, 1.0));
  const std::vector<A> o = to_type<A>(random_uniform(pb.o_size(), c.seed + 2, 0.0, offset_hi));
  const std::vector<T> dy = to_type<T>(random_vec(pb.x_size(), c.seed + 3, 0.0, 1.0));
  const ref::vec xd = to_double(x), od = to_double(o), dyd = to_double(dy);
  lengths_on_device len(c);

  // Device, in the layout under test.
  dbuf<T> d_x(to_layout(x, pb.T, pb.B, pb.C, c.lay)), d_y(pb.x_size()), d_dy(to_layout(dy, pb.T, pb.B, pb.C, c.lay)),
      d_dx(pb.x_size());
  dbuf<A> d_o(to_layout(o, pb.T, pb.B, P, c.lay)), d_do(pb.o_size());
  cudaStream_t s = nullptr;
  tcu::window_forward<T>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, len.d(), s, static_cast<float>(offset_hi));
  std::size_t bytes = 0;
  tcu::window_backward<T>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s);
  dbuf<char> ws(bytes);
  tcu::window_backward<T>(ws.p, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s);
  const std::vector<T> y_gpu = from_layout(d_y.download(), pb.T, pb.B, pb.C, c.lay);
  const std::vector<T> dx_gpu = from_layout(d_dx.download(), pb.T, pb.B, pb.C, c.lay);
  const std::vector<A> do_gpu = from_layout(d_do.download(), pb.T, pb.B, P, c.lay);

  // CPU path (canonical layout) and the float64 reference.
  std::vector<T> y_cpu(pb.x_size()), dx_cpu(pb.x_size());
  std::vector<A> do_cpu(pb.o_size());
  cpu_side::window_forward<T>(c.canonical(), c.window(), x.data(), o.data(), y_cpu.data(), len.h());
  cpu_side::window_backward<T>(c.canonical(), c.window(), x.data(), o.data(), dy.data(), dx_cpu.data(), do_cpu.data(),
                               len.h());
  const ref::vec y_ref = ref::window_forward(pb, xd, od);
  ref::vec dx_ref, do_ref;
  ref::window_backward(pb, xd, od, dyd, dx_ref, do_ref);

  const double rel = tol<T>::value;
  check_close(to_double(y_gpu), to_double(y_cpu), rel, "y vs CPU");
  check_close(to_double(y_gpu), y_ref, rel, "y vs reference");
  check_close(to_double(dx_gpu), to_double(dx_cpu), rel, "dx vs CPU");
  check_close(to_double(dx_gpu), dx_ref, rel, "dx vs reference");
  check_close(to_double(do_gpu), to_double(do_cpu), 4 * rel, "d_offsets vs CPU");
  check_close(to_double(do_gpu), do_ref, 4 * rel, "d_offsets vs reference");
}

template <class T>
void window_sweep(int cases, long max_T) {
  for (int i = 0; i < cases; ++i)
    for (bool causal : {false, true})
      for (layout lay : {layout::tbc, layout::btc}) {
        const test_case c = random_case(1000 * std::uint64_t(i) + (causal ? 7 : 0) + (lay == layout::btc ? 3 : 0),
                                        causal, lay, max_T);
        window_case<T>(c, 1.0);
      }
}

}  // namespace

TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: float") { window_sweep<float>(6, 300); }
TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: double") { window_sweep<double>(4, 300); }
TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: half") { window_sweep<__half>(4, 300); }
TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: bfloat16") {
  window_sweep<__nv_bfloat16>(4, 300);
}

// Offsets above 1 (dropout's 1 / (1 - p), or a user's own) reach past the halo sized for max_offset = 1:
// those tokens take the direct path and must still be exact.
TALKCONV_GPU_CASE("window tokens beyond the shared-memory halo take the exact direct path") {
  for (bool causal : {false, true}) {
    test_case c = random_case(77 + causal, causal, layout::tbc, 600);
    c.pb.T = 600;
    c.pb.L = 40;
    c.pb.M = causal ? 0 : 30;
    c.pb.lengths.clear();
    // Offsets up to 6: windows reach 240 tokens, the halo was sized for 40 (max_offset passed as 1).
    test_case d = c;
    window_case<float>(d, 6.0);
    window_case<double>(d, 6.0);
  }
  // A window longer than shared memory can hold at all (double: about 400 rows per block).
  test_case big = random_case(99, false, layout::btc, 10);
  big.pb.T = 3000;
  big.pb.B = 1;
  big.pb.H = 1;
  big.pb.C = 70;
  big.pb.L = 1200;
  big.pb.M = 900;
  big.pb.lengths = {2900};
  window_case<double>(big, 1.0);
  window_case<float>(big, 1.0);
}

// Offsets that put bounds exactly on integers (0 and 1, dropout zeros) and NaN offsets.
TALKCONV_GPU_CASE("window handles integer bounds and NaN offsets like the CPU") {
  test_case c = random_case(5, false, layout::tbc, 100);
  c.pb.T = 100;
  c.pb.B = 2;
  c.pb.H = 2;
  c.pb.C = 8;
  c.pb.L = 5;
  c.pb.M = 4;
  c.pb.lengths.clear();
  using A = float;
  const ref::problem& pb = c.pb;
  std::vector<A> o = to_type<A>(random_uniform(pb.o_size(), 11, 0.0, 1.0));
  for (size_t i = 0; i < o.size(); i += 3) o[i] = (i % 2) ? 1.0f : 0.0f;
  o[pb.oi(50, 1, 0)] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 12, 1.0, 1.0));
  dbuf<float> d_x(x), d_y(pb.x_size());
  dbuf<A> d_o(o);
  tcu::window_forward<float>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, nullptr, nullptr);
  std::vector<float> y_cpu(pb.x_size());
  cpu_side::window_forward<float>(c.canonical(), c.window(), x.data(), o.data(), y_cpu.data(), nullptr);
  const std::vector<float> y_gpu = d_y.download();
  check_close(to_double(y_gpu), to_double(y_cpu), 2e-5, "y vs CPU");
  // The NaN stays in its head (channels 0..3 of token (50, 1)), nowhere else.
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long ch = 0; ch < pb.C; ++ch)
        CHECK(std::isnan(y_gpu[pb.xi(t, b, ch)]) == (t == 50 && b == 1 && ch < 4));
}

TALKCONV_GPU_CASE("offsets: projection, sigmoid and dropout match the CPU, with bitwise the same mask") {
  for (bool causal : {false, true})
    for (layout lay : {layout::tbc, layout::btc}) {
      const test_case c = random_case(300 + causal * 2 + (lay == layout::btc), causal, lay, 200);
      INFO(c.str());
      const ref::problem& pb = c.pb;
      const long P = pb.P();
      const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 1, 1.0, 1.0));
      const std::vector<float> W = to_type<float>(random_vec(size_t(P * pb.C), 2, 0.0, 1.0 / std::sqrt(double(pb.C))));
      const std::vector<float> bias = to_type<float>(random_vec(size_t(P), 3, 0.0, 0.5));
      const talkconv::dropout_params d{0.3f, 0x1234567890abcdefULL + c.seed, true};
      lengths_on_device len(c);
      dbuf<float> d_x(to_layout(x, pb.T, pb.B, pb.C, lay)), d_W(W), d_b(bias), d_o(pb.o_size()), d_pre(pb.o_size());
      tcu::offsets_forward<float>(c.shape(), c.window(), d_x.p, d_W.p, d_b.p, d, d_o.p, d_pre.p, len.d(), nullptr);
      const std::vector<float> o_gpu = from_layout(d_o.download(), pb.T, pb.B, P, lay);
      const std::vector<float> pre_gpu = from_layout(d_pre.download(), pb.T, pb.B, P, lay);
      std::vector<float> o_cpu(pb.o_size()), pre_cpu(pb.o_size());
      cpu_side::offsets_forward<float>(c.canonical(), c.window(), x.data(), W.data(), bias.data(), d, o_cpu.data(),
                                       pre_cpu.data(), len.h());
      check_close(to_double(pre_gpu), to_double(pre_cpu), 1e-5, "o_pre vs CPU");
      check_close(to_double(o_gpu), to_double(o_cpu), 2e-5, "o vs CPU");
      size_t dropped = 0, mismatched = 0;
      for (size_t i = 0; i < o_gpu.size(); ++i) {
        mismatched += (o_gpu[i] == 0.0f) != (o_cpu[i] == 0.0f);
        dropped += o_gpu[i] == 0.0f;
      }
      CHECK(mismatched == 0);
      CHECK(dropped > 0);
      // And the mask is the shared definition: every dropped valid offset is one dropout_keep rejects.
      for (long b = 0; b < pb.B; ++b)
        for (long t = 0; t < pb.n(b); ++t)
          for (long j = 0; j < P; ++j)
            if (!talkconv::detail::dropout_keep(d.seed, t, b, j, d.p)) CHECK(o_gpu[pb.oi(t, b, j)] == 0.0f);
    }
}

TALKCONV_GPU_CASE("offsets backward matches the CPU (dx += W^T dz, dW, dbias)") {
  const test_case c = random_case(404, false, layout::btc, 150);
  INFO(c.str());
  const ref::problem& pb = c.pb;
  const long P = pb.P();
  const std::vector<double> x = to_type<double>(random_vec(pb.x_size(), 1, 1.0, 1.0));
  const std::vector<double> W = to_type<double>(random_vec(size_t(P * pb.C), 2, 0.0, 0.2));
  const std::vector<double> pre = to_type<double>(random_uniform(pb.o_size(), 3, 0.05, 0.95));
  const std::vector<double> dout = to_type<double>(random_vec(pb.o_size(), 4, 0.0, 1.0));
  const std::vector<double> dx0 = to_type<double>(random_vec(pb.x_size(), 5, 0.0, 1.0));
  const talkconv::dropout_params d{0.25f, 99, true};
  lengths_on_device len(c);
  const auto lay = c.lay;
  dbuf<double> d_x(to_layout(x, pb.T, pb.B, pb.C, lay)), d_W(W), d_pre(to_layout(pre, pb.T, pb.B, P, lay)),
      d_do(to_layout(dout, pb.T, pb.B, P, lay)), d_dx(to_layout(dx0, pb.T, pb.B, pb.C, lay)), d_dW(static_cast<size_t>(P * pb.C)),
      d_db(static_cast<size_t>(P));
  std::size_t bytes = 0;
  tcu::offsets_backward<double>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_W.p, d_pre.p, d_do.p, d, d_dx.p,
                                d_dW.p, d_db.p, len.d(), nullptr);
  dbuf<char> ws(bytes);
  tcu::offsets_backward<double>(ws.p, bytes, c.shape(), c.window(), d_x.p, d_W.p, d_pre.p, d_do.p, d, d_dx.p, d_dW.p,
                                d_db.p, len.d(), nullptr);
  std::vector<double> dx_cpu = dx0, dW_cpu(static_cast<size_t>(P * pb.C)), db_cpu(static_cast<size_t>(P));
  cpu_side::offsets_backward<double>(c.canonical(), c.window(), x.data(), W.data(), pre.data(), dout.data(), d,
                                     dx_cpu.data(), dW_cpu.data(), db_cpu.data(), len.h());
  check_close(from_layout(d_dx.download(), pb.T, pb.B, pb.C, lay), dx_cpu, 1e-12, "dx vs CPU");
  check_close(d_dW.download(), dW_cpu, 1e-12, "dW vs CPU");
  check_close(d_db.download(), db_cpu, 1e-12, "dbias vs CPU");
}

TALKCONV_GPU_CASE("prefix sums and head sums match the CPU") {
  for (layout lay : {layout::tbc, layout::btc}) {
    test_case c = random_case(500 + (lay == layout::btc), false, lay, 400);
    INFO(c.str());
    const ref::problem& pb = c.pb;
    const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 1, 1.0, 1.0));
    dbuf<float> d_x(to_layout(x, pb.T, pb.B, pb.C, lay)), d_S(pb.x_size());
    for (index_t seg : {index_t(0), index_t(7), index_t(64)}) {
      tcu::prefix_sum<float>(c.shape(), d_x.p, d_S.p, 0.5f, seg, nullptr);
      std::vector<float> S_cpu(pb.x_size());
      cpu_side::prefix_sum<float>(c.canonical(), x.data(), S_cpu.data(), 0.5f, seg);
      const std::vector<float> S_gpu = from_layout(d_S.download(), pb.T, pb.B, pb.C, lay);
      CHECK(same_bits(S_gpu, S_cpu));  // the same recurrence, element by element
      check_close(to_double(S_gpu), ref::prefix_sum(pb, to_double(x), 0.5, seg), 1e-5, "S vs reference");
    }
    dbuf<float> d_h(size_t(pb.T * pb.B * pb.H));
    tcu::head_sum<float>(c.shape(), c.window(), d_x.p, d_h.p, nullptr);
    std::vector<float> h_cpu(size_t(pb.T * pb.B * pb.H));
    cpu_side::head_sum<float>(c.canonical(), c.window(), x.data(), h_cpu.data());
    check_close(to_double(from_layout(d_h.download(), pb.T, pb.B, pb.H, lay)), to_double(h_cpu), 1e-5, "head sums vs CPU");
  }
}
