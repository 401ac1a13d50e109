// double: every CUDA path against the CPU and the reference; windows beyond shared memory.
#include "layer_cases.cuh"
#include "offsets_cases.cuh"
#include "window_cases.cuh"

TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: double") {
  window_sweep<double>(4, 300);
}

// Offsets up to 6 with the halo sized for 1, and a window longer than shared memory can hold at all
// (double: about 400 rows per block): the direct path, exact.
TALKCONV_GPU_CASE("window tokens beyond the shared-memory halo take the exact direct path: double") {
  for (bool causal : {false, true}) {
    test_case c = random_case(77 + causal, causal, layout::tbc, 600);
    c.pb.T = 600;
    c.pb.L = 40;
    c.pb.M = causal ? 0 : 30;
    c.pb.lengths.clear();
    window_case<double>(c, 6.0, 1.0f);
  }
  window_long_halo_cases<double>();
}

TALKCONV_GPU_CASE("dx by sorted events and by the event kernel, ragged, btc: double") {
  dx_paths_case<double>(shaped_case(311, 600, 2, 64, 2, 40, 30, false, layout::btc, {600, 321}), 1.0, false);
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
      d_do(to_layout(dout, pb.T, pb.B, P, lay)), d_dx(to_layout(dx0, pb.T, pb.B, pb.C, lay)),
      d_dW(static_cast<size_t>(P * pb.C)), d_db(static_cast<size_t>(P));
  std::size_t bytes = 0;
  tcu::offsets_backward<double>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_W.p, d_pre.p, d_do.p, d, d_dx.p, d_dW.p,
                                d_db.p, len.d(), nullptr);
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

TALKCONV_GPU_CASE("layer forward and backward match the CPU and the reference: double") { layer_sweep<double>(3); }

TALKCONV_GPU_CASE("incremental decoding equals the causal forward, row by row: double") {
  for (std::uint64_t s = 1; s <= 3; ++s) decoder_case<double>(s + 10);
}

TALKCONV_GPU_CASE("a decoder step captured in a CUDA graph and replayed equals step() per token: double") {
  graph_sweep<double>(820);
}

TALKCONV_GPU_CASE("decoder reorder continues each sequence bitwise from the state it names: double") {
  reorder_sweep<double>(700);
}

TALKCONV_GPU_CASE("offset GEMMs: row / channel / offset tails, wide P, btc, ragged lengths and the dot form match the CPU: double") {
  offsets_gemm_sweep<double>();
}

TALKCONV_GPU_CASE("layer backward: rows past the lengths get dx exactly 0 with NaN in x, dy there and an Inf in W: double") {
  padded_rows_case<double>();
}
