// float: every CUDA path against the CPU and the reference; determinism, errors, building blocks, long T.
#include "layer_cases.cuh"
#include "offsets_cases.cuh"
#include "window_cases.cuh"

#include <memory>
#include <thread>

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
  window_long_halo_cases<float>();
}

// The banded dx and forward on TF32 tensor cores (R % 16 == 0; dx K <= 127, forward K <= 63; wider windows take the
// event kernel and the vector tiles): the 16-bit band family (segments, split and shared heads, causal, ragged; its
// K = 255 case takes the other kernels here), K = 127 in capped stages, and the benchmark's heads.
TALKCONV_GPU_CASE("banded dx and forward on TF32 tensor cores: segments past max_offset, K = 127, split and shared heads, causal, ragged: float") {
  window_band_cases<float>();
  window_case<float>(shaped_case(211, 600, 2, 96, 2, 63, 63, false, layout::btc, {600, 333}), 1.0);
  window_case<float>(shaped_case(212, 500, 1, 128, 2, 100, 0, true, layout::tbc, {480}), 1.5, 1.0f);
  window_case<float>(shaped_case(213, 300, 2, 1024, 16, 16, 16, false, layout::tbc, {300, 200}), 1.0);
  // the banded forward past its planned span (K = 61, offsets up to 4: several segments) and at K = 63
  window_case<float>(shaped_case(214, 700, 1, 64, 1, 30, 30, false, layout::tbc, {650}), 4.0, 1.0f);
  window_case<float>(shaped_case(215, 400, 2, 128, 4, 31, 31, false, layout::btc, {400, 257}), 1.0);
}

// Offsets that put bounds exactly on integers (0 and 1, dropout zeros) and NaN offsets.
TALKCONV_GPU_CASE("dx by sorted events and by the event kernel: K past the banded limit, heads of R % 16 != 0, several heads per block, heads split over blocks, W^T dz fused, ragged, both layouts: float") {
  dx_paths_case<float>(shaped_case(301, 1400, 2, 128, 2, 120, 80, false, layout::btc, {1400, 1111}), 1.0, true);
  dx_paths_case<float>(shaped_case(302, 700, 2, 72, 3, 9, 6, false, layout::tbc, {700, 555}), 1.0, true);
  dx_paths_case<float>(shaped_case(303, 1300, 1, 64, 4, 300, 0, true, layout::tbc, {1250}), 1.5, true);
  dx_paths_case<float>(shaped_case(304, 500, 2, 64, 16, 40, 30, false, layout::btc, {500, 77}), 1.0, true);  // 16 heads a block
  dx_paths_case<float>(shaped_case(305, 1300, 2, 160, 2, 100, 60, false, layout::tbc, {1300, 1299}), 1.0, true);  // heads split
}

TALKCONV_GPU_CASE("layer forward in one kernel (projection + banded window on 3xTF32): the fused path taken, bitwise the two kernels', within the bar of the reference: float") {
  fused_forward_cases<float>();
}

TALKCONV_GPU_CASE("layer backward: the window's offset gradients and dx in one kernel, the fused path taken, bitwise the two kernels', within the bar of the reference: float") {
  fused_backward_cases<float>();
}

TALKCONV_GPU_CASE("window handles integer bounds and NaN offsets like the CPU") {
  window_nan_offset_case<float>(5, 2, 8);   // heads of 4 channels
  window_nan_offset_case<float>(6, 4, 64);  // heads of 16: the banded forward
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
// local prefix sums restart per tile (heads of 8 channels: the vector tiles), the banded product has none
// (heads of 16: TF32 tensor cores, 3xTF32), so the error does not grow with T.
TALKCONV_GPU_CASE("float window forward error does not grow with T (T = 10^6)") {
  for (long H : {2, 1}) {
    test_case c;
    c.pb.T = 1000000;
    c.pb.B = 1;
    c.pb.C = 16;
    c.pb.H = H;
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
    INFO("H=", H, " max error ", worst, " (last tenth of the sequence: ", worst_late, "), window scale ", scale);
    CHECK(worst <= 1e-5 * scale);
  }
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

TALKCONV_GPU_CASE("a decoder step captured in a CUDA graph and replayed equals step() per token: float") {
  graph_sweep<float>(800);
}

// A decoder over caller memory zeroes its position on the stream of its first call; capturing that first
// call would record the zeroing into the graph (every replay would start over), so it is refused before
// anything is enqueued. reset(stream) first, and the capture works.
TALKCONV_GPU_CASE("capturing a decoder whose position is still to be zeroed fails; after reset(stream) it works") {
  const talkconv::window_params w{2, 3, 0, true};
  const long C = 8, B = 2;
  const std::size_t state = tcu::decoder<float>::state_bytes(w, C, B);
  dbuf<char> st(state);
  dbuf<float> x(std::vector<float>(C * B, 1.0f)), W(std::vector<float>(2 * C, 0.1f)), y(C * B);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  tcu::decoder<float> dec(w, C, B, st.p, state);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt == 1) dec.reset(s);
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    talkconv::status code = talkconv::status::success;
    try {
      dec.step(x.p, W.p, nullptr, y.p, s);
    } catch (const talkconv::error& e) {
      code = e.code();
    }
    cudaGraph_t g = nullptr;
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CHECK(code == (attempt == 0 ? talkconv::status::cuda_error : talkconv::status::success));
    if (g) CUDA_OK(cudaGraphDestroy(g));
  }
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaStreamDestroy(s));
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
  // A non-empty problem never asks for 0 bytes, whatever saved_offsets and dropout are: a 0-byte allocation
  // is a null pointer, which the second call would read as another size query (and launch nothing).
  for (bool saved : {false, true})
    for (bool drop : {false, true}) {
      talkconv::forward_args<float> q = f;
      q.saved_offsets = saved ? fake : nullptr;
      q.dropout = drop ? talkconv::dropout_params{0.25f, 7, true} : talkconv::dropout_params{};
      std::size_t need = 0;
      layer.forward(nullptr, need, q, nullptr);
      CHECK(need > 0);
      talkconv::backward_args<float> r;
      r.shape = s;
      r.saved_offsets = q.saved_offsets;
      r.dropout = q.dropout;
      need = 0;
      layer.backward(nullptr, need, r, nullptr);
      CHECK(need > 0);
    }
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

// 16-byte vector tiles when x's address and strides allow, element tiles otherwise. The two are different
// kernels with different sums (the vector tile scales by 1/K once at the end, the element tile scales x
// first), so their bits may differ (seen on an H200): each must match the float64 reference, and each
// must give the same bits when run again.
TALKCONV_GPU_CASE("window forward from aligned and misaligned x: both match the reference, each bitwise repeatable") {
  test_case c = random_case(4242, false, layout::btc, 300);
  c.pb.H = 2;
  c.pb.C = 128;  // blocks of 64 channels: vectorizable when aligned
  const ref::problem& pb = c.pb;
  INFO(c.str());
  // x and o in the canonical order [T, B, .] for the reference, in the case's layout on the device.
  const std::vector<float> x = to_type<float>(random_vec(pb.x_size(), 1, 1.0, 1.0));
  std::vector<float> o = to_type<float>(random_uniform(pb.o_size(), 2, 0.0, 1.0));
  keep_bounds_off_integers(pb, o);
  const std::vector<float> x_lay = to_layout(x, pb.T, pb.B, pb.C, c.lay);
  std::vector<float> shifted(x.size() + 1, 0.0f);
  std::copy(x_lay.begin(), x_lay.end(), shifted.begin() + 1);
  dbuf<float> d_x(x_lay), d_xs(shifted), d_o(to_layout(o, pb.T, pb.B, pb.P(), c.lay)), d_y(pb.x_size()),
      d_ys(pb.x_size()), d_again(pb.x_size());
  lengths_on_device len(c);
  const ref::vec y_ref = ref::window_forward(pb, to_double(x), to_double(o));
  tcu::window_forward<float>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, len.d(), nullptr);
  tcu::window_forward<float>(c.shape(), c.window(), d_xs.p + 1, d_o.p, d_ys.p, len.d(), nullptr);
  auto canonical = [&](const dbuf<float>& d) { return to_double(from_layout(d.download(), pb.T, pb.B, pb.C, c.lay)); };
  check_close(canonical(d_y), y_ref, tol<float>::value, "y from aligned x vs reference");
  check_close(canonical(d_ys), y_ref, tol<float>::value, "y from misaligned x vs reference");
  tcu::window_forward<float>(c.shape(), c.window(), d_x.p, d_o.p, d_again.p, len.d(), nullptr);
  CHECK(same_bits(d_y.download(), d_again.download()));
  tcu::window_forward<float>(c.shape(), c.window(), d_xs.p + 1, d_o.p, d_again.p, len.d(), nullptr);
  CHECK(same_bits(d_ys.download(), d_again.download()));
}

// ---- beam search: decoder.reorder ------------------------------------------------------------------

TALKCONV_GPU_CASE("decoder reorder continues each sequence bitwise from the state it names: float") {
  reorder_sweep<float>(600);
}

// An order entry outside [0, B) cannot be refused on the host (device memory): it sets that sequence's
// state to NaN and touches nothing else (the others continue bitwise as the replay).
TALKCONV_GPU_CASE("decoder reorder with an entry outside [0, B) poisons only that sequence") {
  test_case c = random_case(650, true, layout::tbc, 10);
  c.pb.L = 4;
  c.pb.B = 3;
  c.pb.T = 30;
  c.pb.lengths.clear();
  const ref::problem& pb = c.pb;
  const long B = pb.B, C = pb.C, at = 10;
  const layer_data<float> h = make_layer_data<float>(c);
  const std::vector<index_t> order = {1, 7, -1}, fine = {1, 1, 1};
  dbuf<float> x(h.x), W(h.W), b(h.bias), y(pb.x_size()), y2(pb.x_size());
  dbuf<index_t> d_order(order), d_fine(fine);
  for (int run = 0; run < 2; ++run) {
    tcu::decoder<float> dec(c.window(), C, B, nullptr);
    for (long t = 0; t < pb.T; ++t) {
      if (t == at) dec.reorder(run == 0 ? d_order.p : d_fine.p, nullptr);
      dec.step(x.p + t * B * C, W.p, b.p, (run == 0 ? y.p : y2.p) + t * B * C, nullptr);
    }
  }
  const std::vector<float> yd = y.download(), yf = y2.download();
  size_t bad = 0;
  for (long t = 0; t < pb.T; ++t)
    for (long q = 0; q < B; ++q)
      for (long ch = 0; ch < C; ++ch) {
        const size_t i = pb.xi(t, q, ch);
        if (t >= at && q > 0)
          bad += !std::isnan(yd[i]);
        else
          bad += std::memcmp(&yd[i], &yf[i], sizeof(float)) != 0;  // sequence 0 (order 1) as with a valid order
      }
  CHECK(bad == 0);
}

// ---- one layer object on several streams at once (hostile-input issue) -------------------------------
namespace {

// One forward + backward problem for a given layer, with its own device buffers and workspaces.
struct stream_job {
  const tcu::talk_conv<float>* layer;
  test_case c;
  layer_data<float> h;
  talkconv::dropout_params d;
  std::vector<index_t> len_h;
  dbuf<float> x, W, b, dy, y, dx, dW, db, saved;
  dbuf<index_t> len;
  std::size_t fbytes = 0, bbytes = 0;
  std::unique_ptr<dbuf<char>> wsf, wsb;

  stream_job(const tcu::talk_conv<float>& l, const test_case& tc, const talkconv::dropout_params& dp)
      : layer(&l),
        c(tc),
        h(make_layer_data<float>(tc)),
        d(dp),
        len_h(tc.lengths()),
        x(to_layout(h.x, tc.pb.T, tc.pb.B, tc.pb.C, tc.lay)),
        W(h.W),
        b(h.bias),
        dy(to_layout(h.dy, tc.pb.T, tc.pb.B, tc.pb.C, tc.lay)),
        y(tc.pb.x_size()),
        dx(tc.pb.x_size()),
        dW(h.W.size()),
        db(h.bias.size()),
        saved(tc.pb.o_size()),
        len(len_h) {
    layer->forward(nullptr, fbytes, fwd(), nullptr);
    layer->backward(nullptr, bbytes, bwd(), nullptr);
    wsf = std::make_unique<dbuf<char>>(fbytes);
    wsb = std::make_unique<dbuf<char>>(bbytes);
  }
  talkconv::forward_args<float> fwd() const {
    talkconv::forward_args<float> f;
    f.shape = c.shape();
    f.x = x.p;
    f.weight = W.p;
    f.bias = b.p;
    f.y = y.p;
    f.saved_offsets = saved.p;
    f.lengths = len_h.empty() ? nullptr : len.p;
    f.dropout = d;
    return f;
  }
  talkconv::backward_args<float> bwd() const {
    talkconv::backward_args<float> g;
    g.shape = c.shape();
    g.x = x.p;
    g.weight = W.p;
    g.bias = b.p;
    g.dy = dy.p;
    g.saved_offsets = saved.p;
    g.dx = dx.p;
    g.dweight = dW.p;
    g.dbias = db.p;
    g.lengths = len_h.empty() ? nullptr : len.p;
    g.dropout = d;
    return g;
  }
  // Outputs set to NaN bytes first: a result not written by the run cannot match.
  void clear() {
    for (dbuf<float>* o : {&y, &dx, &dW, &db, &saved}) o->fill_bytes(0xff);
  }
  // Host side only (may run on another host thread): throws talkconv::error on failure.
  void enqueue(cudaStream_t s, bool convenience) {
    if (convenience) {
      layer->forward(fwd(), s);
      layer->backward(bwd(), s);
    } else {
      layer->forward(wsf->p, fbytes, fwd(), s);
      layer->backward(wsb->p, bbytes, bwd(), s);
    }
  }
  std::vector<std::vector<float>> results() const {
    return {y.download(), dx.download(), dW.download(), db.download(), saved.download()};
  }
};

void check_same_as_serial(std::vector<std::unique_ptr<stream_job>>& jobs,
                          const std::vector<std::vector<std::vector<float>>>& serial, const char* how) {
  for (size_t i = 0; i < jobs.size(); ++i) {
    INFO(how, ": job ", i, " ", jobs[i]->c.str());
    const auto got = jobs[i]->results();
    for (size_t k = 0; k < got.size(); ++k) {
      INFO("output ", k, " (y, dx, dW, dbias, saved offsets)");
      CHECK(same_bits(got[k], serial[i][k]));
    }
  }
}

// Runs the jobs one after the other on the legacy default stream, then concurrently on one stream each,
// launched from this thread (two-phase workspaces) and from one host thread per job (convenience forms:
// stream-ordered cudaMallocAsync), and requires the serial bits from both concurrent runs.
void concurrency_case(std::vector<std::unique_ptr<stream_job>>& jobs, int rounds) {
  std::vector<std::vector<std::vector<float>>> serial;
  for (auto& j : jobs) {
    j->clear();
    j->enqueue(nullptr, false);
    CUDA_OK(cudaDeviceSynchronize());
    serial.push_back(j->results());
  }
  std::vector<cudaStream_t> streams(jobs.size());
  for (cudaStream_t& s : streams) CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int r = 0; r < rounds; ++r) {
    for (auto& j : jobs) j->clear();
    CUDA_OK(cudaDeviceSynchronize());
    for (size_t i = 0; i < jobs.size(); ++i) jobs[i]->enqueue(streams[i], false);
    CUDA_OK(cudaDeviceSynchronize());
    check_same_as_serial(jobs, serial, "streams from one host thread");

    for (auto& j : jobs) j->clear();
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<std::string> errors(jobs.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < jobs.size(); ++i)
      threads.emplace_back([&, i] {
        try {
          for (int k = 0; k < 3; ++k) jobs[i]->enqueue(streams[i], k % 2 == 0);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (std::thread& t : threads) t.join();
    CUDA_OK(cudaDeviceSynchronize());
    for (size_t i = 0; i < jobs.size(); ++i) {
      INFO("host thread ", i, ": ", errors[i]);
      CHECK(errors[i].empty());
    }
    check_same_as_serial(jobs, serial, "one stream per host thread");
  }
  for (cudaStream_t s : streams) CUDA_OK(cudaStreamDestroy(s));
}

}  // namespace

TALKCONV_GPU_CASE("one talk_conv used on several streams at once gives bitwise the serial results") {
  for (bool causal : {false, true}) {
    test_case base = random_case(6100 + causal, causal, layout::tbc, 10);
    base.pb.H = 2;
    base.pb.C = 2 * 96;  // heads wider than a block: split head sums and their combine
    base.pb.L = 20;
    base.pb.M = causal ? 0 : 13;
    const tcu::talk_conv<float> layer(base.config());
    std::vector<std::unique_ptr<stream_job>> jobs;
    for (int i = 0; i < 4; ++i) {
      test_case c = base;
      c.seed = 6200 + 10 * std::uint64_t(i) + causal;
      c.lay = i % 2 ? layout::btc : layout::tbc;  // shape and layout are per call, not per layer
      c.pb.T = 300 + 170 * i;
      c.pb.B = 1 + i % 3;
      c.pb.lengths.clear();
      if (i >= 2)
        for (long q = 0; q < c.pb.B; ++q) c.pb.lengths.push_back(c.pb.T - 37 * q);
      const talkconv::dropout_params d{i % 2 ? 0.15f : 0.0f, 99 + std::uint64_t(i), i % 2 == 1};
      jobs.push_back(std::make_unique<stream_job>(layer, c, d));
    }
    concurrency_case(jobs, 2);
  }
}

// Kernels are shared by every layer: two layers whose tiles need different (opt-in, > 48 KiB) shared
// memory, launched at once from several host threads, must not undo each other's launch settings.
TALKCONV_GPU_CASE("layers with different shared-memory needs run at once from several host threads") {
  test_case base = random_case(6300, false, layout::tbc, 10);
  base.pb.H = 4;
  base.pb.C = 64;
  base.pb.lengths.clear();
  talkconv::talk_config small = base.config(), large = base.config();
  small.max_left = small.max_right = 100;  // about 100 KiB of shared memory per window tile
  large.max_left = large.max_right = 300;  // about 200 KiB
  const tcu::talk_conv<float> a(small), b(large);
  std::vector<std::unique_ptr<stream_job>> jobs;
  for (int i = 0; i < 4; ++i) {
    test_case c = base;
    c.seed = 6400 + std::uint64_t(i);
    c.pb.L = c.pb.M = i % 2 ? 300 : 100;
    c.pb.T = 700;
    c.pb.B = 2;
    jobs.push_back(std::make_unique<stream_job>(i % 2 ? b : a, c, talkconv::dropout_params{}));
  }
  concurrency_case(jobs, 3);
}

// ---- host-side limits (no GPU needed: nothing is launched) ---------------------------------------------
// A call the CUDA grid cannot run is refused with size_overflow by its workspace query already, before
// anything is launched; sizes whose byte counts overflow size_t are refused instead of wrapping around.
TEST_CASE("CUDA calls beyond the grid or size_t are refused by the query, before any launch") {
  using talkconv::status;
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const talkconv::error& e) {
      return e.code();
    }
    return status::success;
  };
  float* fake = reinterpret_cast<float*>(std::uintptr_t(256));  // never dereferenced
  // R = 65 channels per head: two channel blocks per head, 80000 blocks in all (grid y allows 65535).
  const tcu::talk_conv<float> wide(talkconv::talk_config{65 * 40000, 40000, 2, 2, false});
  talkconv::forward_args<float> f;
  f.shape = talkconv::seq_shape{4, 1, 65 * 40000, layout::tbc};
  f.x = f.weight = f.y = fake;
  std::size_t bytes = 0;
  CHECK(code_of([&] { wide.forward(nullptr, bytes, f, nullptr); }) == status::size_overflow);
  bytes = std::size_t(1) << 40;
  CHECK(code_of([&] { wide.forward(fake, bytes, f, nullptr); }) == status::size_overflow);
  talkconv::backward_args<float> g;
  g.shape = f.shape;
  CHECK(code_of([&] { wide.backward(nullptr, bytes, g, nullptr); }) == status::size_overflow);
  CHECK(code_of([&] { tcu::window_forward<float>(f.shape, wide.window(), fake, fake, fake, nullptr, nullptr); }) ==
        status::size_overflow);
  CHECK(code_of([&] {
          tcu::window_backward<float>(nullptr, bytes, f.shape, wide.window(), fake, fake, fake, fake, fake, nullptr,
                                      nullptr);
        }) == status::size_overflow);
  // B * tiles beyond grid x.
  const tcu::talk_conv<float> narrow(talkconv::talk_config{2, 1, 1, 1, false});
  f.shape = talkconv::seq_shape{index_t(1) << 40, 1, 2, layout::tbc};
  CHECK(code_of([&] { narrow.forward(nullptr, bytes, f, nullptr); }) == status::size_overflow);
  // The decoder's state: (L + 2) * B * C accumulators of 8 bytes overflow size_t (it used to wrap).
  const talkconv::window_params huge_left{1, index_t(1) << 60, 0, true};
  CHECK(code_of([&] { (void)tcu::decoder<double>::state_bytes(huge_left, 4, 1); }) == status::size_overflow);
  CHECK(code_of([&] { (void)tcu::decoder<float>::state_bytes(huge_left, 1, 1); }) == status::success);
  // Workspace queries of ordinary problems are what the pieces add up to.
  const tcu::talk_conv<float> layer(talkconv::talk_config{130, 2, 5, 3, false});  // R = 65: split heads
  f.shape = talkconv::seq_shape{300, 2, 130, layout::btc};
  layer.forward(nullptr, bytes, f, nullptr);
  CHECK(bytes == (300 * 2 * 4 * sizeof(float) + 255) / 256 * 256);
  g.shape = f.shape;
  std::size_t with_saved = 0, without = 0;
  g.saved_offsets = fake;
  layer.backward(nullptr, with_saved, g, nullptr);
  g.saved_offsets = nullptr;
  layer.backward(nullptr, without, g, nullptr);
  CHECK(without == with_saved + (300 * 2 * 4 * sizeof(float) + 255) / 256 * 256);
}

TALKCONV_GPU_CASE("offset GEMMs: row / channel / offset tails, wide P, btc, ragged lengths and the dot form match the CPU: float") {
  offsets_gemm_sweep<float>();
}

TALKCONV_GPU_CASE("layer backward on the fused dx path's shapes: chunks of 32 offsets, partial and element-staged chunks, narrow channel blocks, past the chunks: float") {
  fused_dx_sweep<float>();
}

TALKCONV_GPU_CASE("layer backward: rows past the lengths get dx exactly 0 with NaN in x, dy there and an Inf in W: float") {
  padded_rows_case<float>();
}
