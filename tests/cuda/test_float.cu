// float: every CUDA path against the CPU and the reference; determinism, errors, building blocks, long T.
#include "layer_cases.cuh"
#include "window_cases.cuh"

TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: float") { window_sweep<float>(6, 300); }

// Offsets above 1 (dropout's 1 / (1 - p), or a user's own) reach past the halo sized for max_offset = 1:
// those tokens take the direct path and must still be exact.
TALKCONV_GPU_CASE("window tokens beyond the shared-memory halo take the exact direct path: float") {
  for (bool causal : {false, true}) {
    test_case c = random_case(77 + causal, causal, layout::tbc, 600);
    c.pb.T = 600;
    c.pb.L = 40;
    c.pb.M = causal ? 0 : 30;
    c.pb.lengths.clear();
    // Offsets up to 6: windows reach 240 tokens, the halo was sized for 40 (max_offset passed as 1).
    window_case<float>(c, 6.0, 1.0f);
  }
  // A window longer than shared memory can hold at all.
  test_case big = random_case(99, false, layout::btc, 10);
  big.pb.T = 3000;
  big.pb.B = 1;
  big.pb.H = 1;
  big.pb.C = 70;
  big.pb.L = 1200;
  big.pb.M = 900;
  big.pb.lengths = {2900};
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
      for (long ch = 0; ch < pb.C; ++ch) CHECK(std::isnan(y_gpu[pb.xi(t, b, ch)]) == (t == 50 && b == 1 && ch < 4));
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
      check_close(to_double(S_gpu), to_double(S_cpu), 1e-5, "S vs CPU");  // the same recurrence (FMA aside)
      check_close(to_double(S_gpu), ref::prefix_sum(pb, to_double(x), 0.5, seg), 1e-5, "S vs reference");
    }
    dbuf<float> d_h(size_t(pb.T * pb.B * pb.H));
    tcu::head_sum<float>(c.shape(), c.window(), d_x.p, d_h.p, nullptr);
    std::vector<float> h_cpu(size_t(pb.T * pb.B * pb.H));
    cpu_side::head_sum<float>(c.canonical(), c.window(), x.data(), h_cpu.data());
    check_close(to_double(from_layout(d_h.download(), pb.T, pb.B, pb.H, lay)), to_double(h_cpu), 1e-5,
                "head sums vs CPU");
  }
}

// SPEC Numerics: float32 forward error <= 1e-5 * (window scale of |x|) at T = 10^6, x ~ N(1, 1): the
// local prefix sums restart per tile, so the error does not grow with T.
TALKCONV_GPU_CASE("float window forward error does not grow with T (T = 10^6)") {
  test_case c;
  c.pb.T = 1000000;
  c.pb.B = 1;
  c.pb.C = 16;
  c.pb.H = 2;
  c.pb.L = 16;
  c.pb.M = 16;
  const ref::problem& pb = c.pb;
  const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 31, 1.0, 1.0));
  const std::vector<float> o = to_type<float>(random_uniform(pb.o_size(), 32, 0.0, 1.0));
  dbuf<float> d_x(x), d_o(o), d_y(pb.x_size());
  tcu::window_forward<float>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, nullptr, nullptr);
  const std::vector<float> y = d_y.download();
  const ref::vec y_ref = ref::window_forward(pb, to_double(x), to_double(o));
  double scale = 0.0;
  for (float v : x) scale += std::fabs(double(v));
  scale /= double(x.size());  // the window scale of |x|: a window average of |x|
  double worst = 0.0, worst_late = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double e = std::fabs(double(y[i]) - y_ref[i]);
    worst = std::max(worst, e);
    if (i >= y.size() - y.size() / 10) worst_late = std::max(worst_late, e);
  }
  INFO("max error ", worst, " (last tenth of the sequence: ", worst_late, "), window scale ", scale);
  CHECK(worst <= 1e-5 * scale);
}

TALKCONV_GPU_CASE("layer forward and backward match the CPU and the reference: float") { layer_sweep<float>(4); }

TALKCONV_GPU_CASE("layer compile-time heads give the same bits as run-time heads") {
  test_case c = random_case(8080, false, layout::tbc, 100);
  c.pb.H = 4;
  c.pb.C = 64;
  const layer_data<float> h = make_layer_data<float>(c);
  dbuf<float> x(h.x), W(h.W), y1(c.pb.x_size()), y2(c.pb.x_size());
  talkconv::forward_args<float> f;
  f.shape = c.shape();
  f.x = x.p;
  f.weight = W.p;
  f.y = y1.p;
  tcu::talk_conv<float>(c.config()).forward(f, nullptr);
  f.y = y2.p;
  talkconv::talk_config cfg = c.config();
  cfg.heads = 0;
  tcu::talk_conv<float, 4>(cfg).forward(f, nullptr);
  CHECK(same_bits(y1.download(), y2.download()));
}

// SPEC: the same inputs give bitwise the same outputs and gradients, run after run.
TALKCONV_GPU_CASE("layer forward and backward are bitwise deterministic") {
  for (bool causal : {false, true}) {
    test_case c = random_case(9000 + causal, causal, layout::btc, 2000);
    c.pb.T = 2000;
    c.pb.B = 3;
    c.pb.H = 2;
    c.pb.C = 2 * 160;  // heads wider than a block: split head sums are combined in order
    const talkconv::dropout_params d{0.1f, 7, true};
    const layer_data<float> h = make_layer_data<float>(c);
    const layer_out<float> a = run_gpu<float>(c, h, d, true), b = run_gpu<float>(c, h, d, true),
                           e = run_gpu<float>(c, h, d, false);
    CHECK(same_bits(a.y, b.y));
    CHECK(same_bits(a.saved, b.saved));
    CHECK(same_bits(a.dx, b.dx));
    CHECK(same_bits(a.dW, b.dW));
    CHECK(same_bits(a.db, b.db));
    CHECK(same_bits(a.dx, e.dx));
    CHECK(same_bits(a.dW, e.dW));
  }
}

TALKCONV_GPU_CASE("incremental decoding equals the causal forward, row by row: float") {
  for (std::uint64_t s = 1; s <= 3; ++s) decoder_case<float>(s + 0);
}

// Host-side validation: no GPU needed, nothing is launched (these run, and pass, without a GPU).
TEST_CASE("CUDA entry points fail with the CPU's named errors before touching memory") {
  using talkconv::status;
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const talkconv::error& e) {
      return e.code();
    }
    return status::success;
  };
  const talkconv::seq_shape s{10, 2, 8, layout::tbc};
  float* fake = reinterpret_cast<float*>(std::uintptr_t(256));  // never dereferenced: validation comes first
  CHECK(code_of([&] { tcu::talk_conv<float>(talkconv::talk_config{10, 3, 2, 2, false}); }) == status::invalid_shape);
  CHECK(code_of([&] { tcu::talk_conv<float>(talkconv::talk_config{8, 2, -1, 2, false}); }) == status::invalid_window);
  CHECK(code_of([&] { tcu::talk_conv<float>(talkconv::talk_config{8, 2, 2, 2, true}); }) == status::invalid_window);
  CHECK(code_of([&] {
          tcu::window_forward<float>(talkconv::seq_shape{-1, 2, 8, layout::tbc},
                                     talkconv::window_params{2, 2, 2, false}, fake, fake, fake, nullptr, nullptr);
        }) == status::invalid_shape);
  CHECK(code_of([&] {
          tcu::window_forward<float>(s, talkconv::window_params{2, 2, 2, false}, nullptr, fake, fake, nullptr, nullptr);
        }) == status::null_pointer);
  CHECK(code_of([&] {
          tcu::window_forward<float>(talkconv::seq_shape{10, 2, 8, static_cast<layout>(7)},
                                     talkconv::window_params{2, 2, 2, false}, fake, fake, fake, nullptr, nullptr);
        }) == status::invalid_layout);
  const tcu::talk_conv<float> layer(talkconv::talk_config{8, 2, 2, 2, false});
  talkconv::forward_args<float> f;
  f.shape = s;
  f.x = fake;
  f.weight = fake;
  f.y = fake;
  std::size_t bytes = 0;
  layer.forward(nullptr, bytes, f, nullptr);
  CHECK(bytes > 0);
  std::size_t small = bytes - 1;
  CHECK(code_of([&] { layer.forward(fake, small, f, nullptr); }) == status::workspace_too_small);
  f.dropout = talkconv::dropout_params{1.0f, 0, true};
  CHECK(code_of([&] { layer.forward(nullptr, bytes, f, nullptr); }) == status::invalid_dropout);
  f.dropout = talkconv::dropout_params{};
  f.shape.C = 16;
  CHECK(code_of([&] { layer.forward(nullptr, bytes, f, nullptr); }) == status::invalid_shape);
  // An empty problem is a success that launches nothing and needs no workspace.
  f.shape = talkconv::seq_shape{0, 2, 8, layout::tbc};
  bytes = 123;
  layer.forward(nullptr, bytes, f, nullptr);
  CHECK(bytes == 0);
  CHECK(code_of([&] { layer.forward(fake, bytes, f, nullptr); }) == status::success);
  talkconv::backward_args<float> g;
  g.shape = s;
  layer.backward(nullptr, bytes, g, nullptr);
  CHECK(bytes > 0);
  CHECK(code_of([&] { layer.backward(fake, bytes, g, nullptr); }) == status::null_pointer);
  CHECK(code_of([&] {
          tcu::decoder<float>(talkconv::window_params{2, 2, 2, false}, 8, 2, fake, 1 << 20);
        }) == status::invalid_window);
  CHECK(code_of([&] {
          tcu::decoder<float>(talkconv::window_params{2, 2, 0, true}, 8, 2, fake, 16);
        }) == status::workspace_too_small);
}

// 16-byte vector loads when x's address and strides allow, element loads otherwise: the same sums, so
// the same bits, from an aligned and a misaligned copy of x.
TALKCONV_GPU_CASE("window forward gives the same bits from aligned and misaligned x") {
  test_case c = random_case(4242, false, layout::btc, 300);
  c.pb.H = 2;
  c.pb.C = 128;  // blocks of 64 channels: vectorizable when aligned
  const ref::problem& pb = c.pb;
  const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 1, 1.0, 1.0));
  const std::vector<float> o = to_type<float>(random_uniform(pb.o_size(), 2, 0.0, 1.0));
  std::vector<float> shifted(x.size() + 1, 0.0f);
  std::copy(x.begin(), x.end(), shifted.begin() + 1);
  dbuf<float> d_x(x), d_xs(shifted), d_o(o), d_y(pb.x_size()), d_ys(pb.x_size());
  lengths_on_device len(c);
  tcu::window_forward<float>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, len.d(), nullptr);
  tcu::window_forward<float>(c.shape(), c.window(), d_xs.p + 1, d_o.p, d_ys.p, len.d(), nullptr);
  CHECK(same_bits(d_y.download(), d_ys.download()));
}
