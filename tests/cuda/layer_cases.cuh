// Layer and decoder cases shared by the per-dtype CUDA test files.
#pragma once

#include "gpu_util.cuh"

namespace {

using talkconv::layout;

template <class T>
struct layer_data {
  std::vector<T> x, W, bias, dy;
};

template <class T>
layer_data<T> make_layer_data(const test_case& c) {
  const ref::problem& pb = c.pb;
  layer_data<T> d;
  d.x = to_type<T>(random_vec(pb.x_size(), c.seed + 1, 1.0, 1.0));
  d.W = to_type<T>(random_vec(size_t(pb.P() * pb.C), c.seed + 2, 0.0, 1.0 / std::sqrt(double(pb.C))));
  d.bias = to_type<T>(random_vec(size_t(pb.P()), c.seed + 3, 0.0, 0.5));
  d.dy = to_type<T>(random_vec(pb.x_size(), c.seed + 4, 0.0, 1.0));
  return d;
}

// The arguments of one layer forward.
template <class T>
talkconv::forward_args<T> forward_of(const talkconv::seq_shape& shape, const T* x, const T* W, const T* bias, T* y,
                                     acc_t<T>* saved, const index_t* lengths, const talkconv::dropout_params& d) {
  talkconv::forward_args<T> f;
  f.shape = shape;
  f.x = x;
  f.weight = W;
  f.bias = bias;
  f.y = y;
  f.saved_offsets = saved;
  f.lengths = lengths;
  f.dropout = d;
  return f;
}

// Device outputs of one forward + backward.
template <class T>
struct layer_out {
  std::vector<T> y, dx, dW, db;
  std::vector<acc_t<T>> saved;
};

template <class T>
layer_out<T> run_gpu(const test_case& c, const layer_data<T>& h, const talkconv::dropout_params& d, bool pass_saved) {
  using A = acc_t<T>;
  const ref::problem& pb = c.pb;
  const long P = pb.P();
  lengths_on_device len(c);
  dbuf<T> x(to_layout(h.x, pb.T, pb.B, pb.C, c.lay)), W(h.W), b(h.bias), dy(to_layout(h.dy, pb.T, pb.B, pb.C, c.lay)),
      y(pb.x_size()), dx(pb.x_size()), dW(h.W.size()), db(h.bias.size());
  dbuf<A> saved(pb.o_size());
  const tcu::talk_conv<T> layer(c.config());
  const talkconv::forward_args<T> f = forward_of<T>(c.shape(), x.p, W.p, b.p, y.p, saved.p, len.d(), d);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreate(&s));
  layer.forward(f, s);  // convenience form: cudaMallocAsync workspace
  talkconv::backward_args<T> g;
  g.shape = c.shape();
  g.x = x.p;
  g.weight = W.p;
  g.bias = b.p;
  g.dy = dy.p;
  g.saved_offsets = pass_saved ? saved.p : nullptr;
  g.dx = dx.p;
  g.dweight = dW.p;
  g.dbias = db.p;
  g.lengths = len.d();
  g.dropout = d;
  std::size_t bytes = 0;
  layer.backward(nullptr, bytes, g, s);  // two-phase form
  dbuf<char> ws(bytes);
  layer.backward(ws.p, bytes, g, s);
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaStreamDestroy(s));
  layer_out<T> o;
  o.y = from_layout(y.download(), pb.T, pb.B, pb.C, c.lay);
  o.dx = from_layout(dx.download(), pb.T, pb.B, pb.C, c.lay);
  o.dW = dW.download();
  o.db = db.download();
  o.saved = from_layout(saved.download(), pb.T, pb.B, P, c.lay);
  return o;
}

template <class T>
void layer_case(const test_case& c, const talkconv::dropout_params& d) {
  using A = acc_t<T>;
  INFO(c.str(), " dtype=", tol<T>::name, " dropout p=", d.p, " training=", d.training);
  const ref::problem& pb = c.pb;
  const layer_data<T> h = make_layer_data<T>(c);
  const layer_out<T> g = run_gpu<T>(c, h, d, true);
  const layer_out<T> g2 = run_gpu<T>(c, h, d, false);  // offsets recomputed in backward

  // CPU layer, canonical layout.
  lengths_on_device len(c);
  layer_out<T> cpu;
  cpu.y.resize(pb.x_size());
  cpu.dx.resize(pb.x_size());
  cpu.dW.resize(h.W.size());
  cpu.db.resize(h.bias.size());
  cpu.saved.resize(pb.o_size());
  cpu_side::layer_forward<T>(
      c.config(), forward_of<T>(c.canonical(), h.x.data(), h.W.data(), h.bias.data(), cpu.y.data(), cpu.saved.data(),
                                len.h(), d));
  talkconv::backward_args<T> b;
  b.shape = c.canonical();
  b.x = h.x.data();
  b.weight = h.W.data();
  b.bias = h.bias.data();
  b.dy = h.dy.data();
  b.saved_offsets = cpu.saved.data();
  b.dx = cpu.dx.data();
  b.dweight = cpu.dW.data();
  b.dbias = cpu.db.data();
  b.lengths = len.h();
  b.dropout = d;
  cpu_side::layer_backward<T>(c.config(), b);

  // The float64 reference from the T-rounded inputs.
  const ref::dropout rd{d.active(), d.p, d.seed};
  const ref::vec xd = to_double(h.x), Wd = to_double(h.W), bd = to_double(h.bias), dyd = to_double(h.dy);
  ref::vec pre_ref, dx_ref, dW_ref, db_ref;
  const ref::vec y_ref = ref::layer_forward(pb, xd, Wd, bd, rd, &pre_ref);
  ref::layer_backward(pb, xd, Wd, bd, rd, dyd, dx_ref, dW_ref, db_ref);

  const double rel = tol<T>::value;
  check_close(to_double(g.y), to_double(cpu.y), rel, "y vs CPU");
  check_close(to_double(g.y), y_ref, rel, "y vs reference");
  check_close(to_double(g.saved), to_double(cpu.saved), std::is_same<A, double>::value ? 1e-12 : 1e-5, "o_pre vs CPU");
  check_close(to_double(g.saved), pre_ref, std::is_same<T, double>::value ? 1e-12 : 1e-5 + rel / 8,
              "o_pre vs reference");
  for (const layer_out<T>* o : {&g, &g2}) {
    check_close(to_double(o->dx), to_double(cpu.dx), rel, "dx vs CPU");
    check_close(to_double(o->dx), dx_ref, rel, "dx vs reference");
    check_close(to_double(o->dW), to_double(cpu.dW), 4 * rel, "dW vs CPU");
    check_close(to_double(o->dW), dW_ref, 4 * rel, "dW vs reference");
    check_close(to_double(o->db), to_double(cpu.db), 4 * rel, "dbias vs CPU");
    check_close(to_double(o->db), db_ref, 4 * rel, "dbias vs reference");
  }
}

template <class T>
void layer_sweep(int cases) {
  for (int i = 0; i < cases; ++i)
    for (bool causal : {false, true})
      for (layout lay : {layout::tbc, layout::btc}) {
        const test_case c =
            random_case(7000 + 100 * std::uint64_t(i) + causal * 2 + (lay == layout::btc), causal, lay, 200);
        layer_case<T>(c, talkconv::dropout_params{});
        layer_case<T>(c, talkconv::dropout_params{0.2f, 42 + std::uint64_t(i), true});
      }
}

// The layer backward on shapes chosen for the dx kernel's fused offset path (16-bit x and float with 16-byte
// vectors: W^T dz added in the window's dx pass, agent_window_input_grad.cuh) and its edges: one chunk of 32 offsets
// and a partial one (P = 24, staged by elements when P % 4 != 0: P = 30), several chunks (P = 64, 100), a
// channel block narrower than 64, causal, ragged lengths, both layouts, dropout; and P = 144, past the fused
// path's chunks (the separate offset path). Shapes with heads of 16 channels run the banded dx's fused path instead.
template <class T>
void fused_dx_sweep() {
  struct shape {
    long t, b, c, h, l, m;
    bool causal;
    layout lay;
    std::vector<long> lengths;
  };
  const shape shapes[] = {
      {300, 2, 256, 16, 16, 16, false, layout::tbc, {300, 157}},  // P = 32: one whole chunk
      {200, 1, 96, 12, 5, 9, false, layout::btc, {}},             // P = 24: a partial chunk; blocks of 64 + 32
      {130, 2, 120, 15, 7, 3, false, layout::tbc, {130, 61}},     // P = 30: element staging
      {150, 1, 512, 32, 20, 11, false, layout::btc, {}},          // P = 64: two chunks
      {90, 2, 400, 50, 3, 30, false, layout::tbc, {0, 77}},       // P = 100: four chunks, the last partial
      {260, 3, 128, 16, 40, 0, true, layout::btc, {260, 1, 199}},  // causal, P = 16
      {40, 1, 1152, 72, 6, 6, false, layout::tbc, {}},            // P = 144: not fused
      // Heads of 16 channels take the banded dx (16-bit x; float with K <= 127) for the shapes above: these
      // keep whole chunks of 32 (P = 32, 64) on the event kernel's fused path (heads of 8 channels)
      {210, 2, 128, 16, 12, 10, false, layout::tbc, {210, 99}},    // P = 32, R = 8
      {120, 1, 256, 32, 9, 14, false, layout::btc, {}},            // P = 64, R = 8
  };
  std::uint64_t seed = 9100;
  for (const shape& sh : shapes) {
    const test_case c = shaped_case(++seed, sh.t, sh.b, sh.c, sh.h, sh.l, sh.m, sh.causal, sh.lay, sh.lengths);
    layer_case<T>(c, talkconv::dropout_params{});
    if (seed % 2 == 0) layer_case<T>(c, talkconv::dropout_params{0.1f, seed, true});
  }
}

// A shape of the fused-kernel cases and its test case: B sequences of t tokens so that the grid has >= 2 tiles of
// 128 rows per SM (the fused launches' rule), ragged lengths (every 7th pattern: full, 0, 128, 129, t - 1, t / 3, 1)
// when asked.
struct fused_shape {
  long t, c, h, l, m;
  bool causal;
  layout lay;
  int lengths;  // 0: all T; 1: ragged
  float p;      // dropout
};
inline test_case fused_shape_case(const fused_shape& sh, std::uint64_t seed) {
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const long tiles = (sh.t + 127) / 128, B = (2 * sms + tiles - 1) / tiles + 1;
  std::vector<long> lengths;
  if (sh.lengths)
    for (long b = 0; b < B; ++b) {
      const long pick[] = {sh.t, 0, 128, 129, sh.t - 1, sh.t / 3, 1};
      lengths.push_back(pick[b % 7]);
    }
  return shaped_case(seed, sh.t, B, sh.c, sh.h, sh.l, sh.m, sh.causal, sh.lay, lengths);
}

// The fused layer forward (projection and banded window in one kernel, agent_forward_fused.cuh; 16-bit x on 16-bit
// tensor cores, float on 3xTF32) on the shapes it takes: enough time tiles for two blocks per SM (B scaled to the
// device), a partial last tile, ragged lengths (0, inside a tile, a tile's edge), both layouts, causal, dropout, P
// from 4 to 64 (BN 8 to 32; two offset tiles, the second partial at P = 40), heads of 16 to 128 channels (a head
// across two channel blocks), a partial channel block, K up to 201 (16-bit x) and 63 (float, with 8 heads: its stage,
// 512 bytes a token, keeps two blocks on an H100 / H200 SM up to K = 47 with 16 heads, 63 with 8). Each: the layer forward takes the fused path wherever two blocks
// fit an SM (checked, so that the test cannot pass on the two kernels alone; a 100 KB SM, and float on a 164 KB one,
// skip those that do not fit), y and o_pre are bitwise the two-kernel path's (launch_project then
// launch_window_forward: the same K loop, epilogue, segments and k steps), and y is within the dtype's bar of the
// float64 reference.
template <class T>
void fused_forward_cases() {
  namespace td = talkconv::cuda::detail;
  using A = acc_t<T>;
  const std::vector<fused_shape> shapes =
      std::is_same<T, float>::value
          ? std::vector<fused_shape>{
                {1100, 128, 8, 16, 16, false, layout::tbc, 1, 0.0f},  // P = 16, the benchmark's window
                {700, 256, 16, 10, 5, false, layout::btc, 0, 0.1f},   // P = 32 (BN = 32), dropout
                {520, 192, 6, 30, 0, true, layout::tbc, 1, 0.0f},     // causal, P = 6 (BN = 8), heads of 32
                {300, 256, 2, 7, 7, false, layout::btc, 1, 0.2f},     // P = 4, heads of 128 (two channel blocks each)
                {640, 96, 6, 12, 12, false, layout::tbc, 0, 0.0f},    // a partial channel block (64 + 32)
                {400, 512, 32, 3, 4, false, layout::tbc, 1, 0.1f},    // P = 64: two offset tiles in the block
                {330, 320, 20, 6, 3, false, layout::btc, 1, 0.0f},    // P = 40: the second tile partial
                {900, 128, 8, 31, 31, false, layout::btc, 1, 0.0f},   // K = 63, the banded forward's widest: 192 stage rows
            }
          : std::vector<fused_shape>{
                {1100, 128, 8, 16, 16, false, layout::tbc, 1, 0.0f},  // P = 16, the benchmark's window
                {700, 256, 16, 30, 5, false, layout::btc, 0, 0.1f},   // P = 32 (BN = 32), dropout
                {520, 192, 6, 40, 0, true, layout::tbc, 1, 0.0f},     // causal, P = 6, heads of 32
                {300, 256, 2, 7, 7, false, layout::btc, 1, 0.2f},     // P = 4, heads of 128 (two channel blocks each)
                {640, 96, 6, 100, 100, false, layout::tbc, 0, 0.0f},  // K = 201, a partial channel block (64 + 32)
                {400, 512, 32, 9, 12, false, layout::tbc, 1, 0.1f},   // P = 64: two offset tiles in the block
                {330, 320, 20, 6, 3, false, layout::btc, 1, 0.0f},    // P = 40: the second tile partial (register path)
            };
  // Whether two blocks' shared memory fit an SM (the launcher's rule; on a 100 KB SM only the smaller plans do)
  int smem_sm = 0;
  CUDA_OK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
  auto fits = [&](const test_case& c, const talkconv::cuda::talk_conv<T>& layer, double max_offset) {
    const talkconv::window_params w = c.window();
    const int nh = td::heads_per_block(td::make_window_args<T>(c.shape(), layer.window(), nullptr).w);
    std::size_t smem = 0;
    td::dispatch_heads(w.num_offsets(), [&](auto pc) {  // the launcher's offset tile
      constexpr int BN = td::project_bn<T, decltype(pc)::value>();
      smem = td::plan_forward_fused<T, BN>(c.shape(), w, max_offset, nh, std::size_t(smem_sm)).smem;
    });
    return 2 * (smem + 128 + td::smem_reserved_per_block) <= std::size_t(smem_sm);
  };
  std::uint64_t seed = 9400;
  for (const fused_shape& sh : shapes) {
    const test_case c = fused_shape_case(sh, ++seed);
    const talkconv::dropout_params d{sh.p, seed, sh.p > 0};
    INFO(c.str(), " dtype=", tol<T>::name, " dropout p=", d.p);
    const ref::problem& pb = c.pb;
    const layer_data<T> h = make_layer_data<T>(c);
    lengths_on_device len(c);
    dbuf<T> x(to_layout(h.x, pb.T, pb.B, pb.C, c.lay)), W(h.W), b(h.bias), y(pb.x_size()), y2(pb.x_size());
    dbuf<A> pre(pb.o_size()), pre2(pb.o_size()), o2(pb.o_size());
    dbuf<T> y3(pb.x_size());
    for (auto* buf : {&y, &y2, &y3}) buf->fill_bytes(0xff);  // NaN: a value left unwritten cannot match
    for (auto* buf : {&pre, &pre2}) buf->fill_bytes(0xff);
    const tcu::talk_conv<T> layer(c.config());
    const double max_offset = d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0;

    // the fused path takes it
    td::window_args<T> wa = td::make_window_args<T>(c.shape(), layer.window(), len.d());
    wa.x = x.p;
    wa.y = y.p;
    td::offsets_args<T> oa = td::make_offsets_args<T>(c.shape(), layer.window(), len.d(), d);
    oa.x = x.p;
    oa.weight = W.p;
    oa.bias = b.p;
    oa.o_pre = pre.p;
    const bool fused = td::launch_forward_fused(oa, wa, c.shape(), layer.window(), max_offset, nullptr, false);
    REQUIRE(fused == fits(c, layer, max_offset));  // every other condition holds by the shape's choice
    if (!fused) {
      MESSAGE("not fused on this GPU (two blocks' shared memory exceed an SM's ", smem_sm, " bytes): ", c.str());
      continue;
    }

    talkconv::forward_args<T> f = forward_of<T>(c.shape(), x.p, W.p, b.p, y.p, pre.p, len.d(), d);
    layer.forward(f, nullptr);
    f.y = y3.p;
    f.saved_offsets = nullptr;  // o_pre not stored: the same y
    layer.forward(f, nullptr);

    // the two kernels
    oa.o_pre = pre2.p;
    oa.o = o2.p;
    td::launch_project(oa, c.shape(), nullptr);
    wa.y = y2.p;
    wa.offsets = o2.p;
    td::launch_window_forward(wa, c.shape(), layer.window(), max_offset, nullptr);
    CUDA_OK(cudaDeviceSynchronize());

    const std::vector<T> yf = y.download(), yu = y2.download();
    const std::vector<A> pf = pre.download(), pu = pre2.download();
    CHECK(std::memcmp(yf.data(), yu.data(), yf.size() * sizeof(T)) == 0);
    // every element written (the 0xff fill is NaN): o_pre is finite everywhere, 0 past the lengths
    CHECK(std::all_of(pf.begin(), pf.end(), [](A v) { return std::isfinite(double(v)); }));
    const std::vector<T> yn = y3.download();
    CHECK(std::memcmp(yf.data(), yn.data(), yf.size() * sizeof(T)) == 0);
    CHECK(std::memcmp(pf.data(), pu.data(), pf.size() * sizeof(A)) == 0);

    const ref::dropout rd{d.active(), d.p, d.seed};
    const ref::vec y_ref = ref::layer_forward(pb, to_double(h.x), to_double(h.W), to_double(h.bias), rd, nullptr);
    check_close(to_double(from_layout(yf, pb.T, pb.B, pb.C, c.lay)), y_ref, tol<T>::value, "fused y vs reference");
  }
  // Short sequences in a large batch: the projection alone takes its dot-product form (other sums), so the fused
  // kernel must not take the layer, whatever the SM count.
  {
    int sms = 0;
    CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const test_case c = shaped_case(9450, 8, 2 * sms + 1, 128, 8, 4, 4, false, layout::tbc);
    const tcu::talk_conv<T> layer(c.config());
    dbuf<T> x(c.pb.x_size()), y(c.pb.x_size());
    td::window_args<T> wa = td::make_window_args<T>(c.shape(), layer.window(), nullptr);
    wa.x = x.p;
    wa.y = y.p;
    const td::offsets_args<T> oa = td::make_offsets_args<T>(c.shape(), layer.window(), nullptr, {});
    CHECK_FALSE(td::launch_forward_fused(oa, wa, c.shape(), layer.window(), 1.0, nullptr, false));
  }
}

// The window backward in one kernel (16-bit x, agent_backward_fused.cuh): where it applies the fused path is taken
// (asserted), dz and dx are bitwise the two kernels' (gather with its finish, then the banded dx with W^T dz: the same
// call with fuse = false), every output element written (NaN-filled first), and the layer's backward, which takes the
// fused path at these shapes, is within the dtype's bar of the float64 reference. Heads of 16, 32 and 64 channels,
// a partial channel block, causal, ragged lengths, dropout, P = 64; heads of 128 (two channel blocks each) are not
// fused (the finish needs whole heads).
template <class T>
void fused_backward_cases() {
  namespace td = talkconv::cuda::detail;
  using A = acc_t<T>;
  if (TALKCONV_CUDA_FUSED_BACKWARD == 0 || TALKCONV_CUDA_BAND == 0) {
    MESSAGE("the fused backward is built out (TALKCONV_CUDA_FUSED_BACKWARD=0 or TALKCONV_CUDA_BAND=0): nothing to compare");
    return;
  }
  if (!td::band_kernels_built<T>()) {
    MESSAGE("the banded kernels are not built for this GPU (sm_80 or later): the fused backward never runs");
    return;
  }
  const long wide = std::is_same<T, float>::value ? 60 : 100;  // float's banded dx: K <= 127
  const fused_shape shapes[] = {
      {1100, 128, 8, 16, 16, false, layout::tbc, 1, 0.0f},  // the benchmark's window, heads of 16
      {700, 256, 16, 30, 5, false, layout::btc, 0, 0.1f},   // dropout
      {520, 192, 6, 40, 0, true, layout::tbc, 1, 0.0f},     // causal, heads of 32
      {640, 96, 6, wide, wide, false, layout::tbc, 0, 0.0f},    // K = 201 (float: 121), a partial channel block
      {400, 512, 32, 9, 12, false, layout::tbc, 1, 0.1f},   // P = 64
      {330, 320, 5, 6, 3, false, layout::btc, 1, 0.0f},     // heads of 64, P = 10
      {300, 256, 2, 7, 7, false, layout::btc, 1, 0.0f},     // heads of 128: not fused
  };
  std::uint64_t seed = 9500;
  for (const fused_shape& sh : shapes) {
    const test_case c = fused_shape_case(sh, ++seed);
    const talkconv::dropout_params d{sh.p, seed, sh.p > 0};
    INFO(c.str(), " dtype=", tol<T>::name, " dropout p=", d.p);
    const ref::problem& pb = c.pb;
    const layer_data<T> h = make_layer_data<T>(c);
    lengths_on_device len(c);
    const tcu::talk_conv<T> layer(c.config());
    const talkconv::window_params w = layer.window();
    const td::window_geom wg = td::window_geom::make(w, c.shape().C);
    const double max_offset = d.active() ? 1.0 / (1.0 - double(d.p)) : 1.0;
    dbuf<T> x(to_layout(h.x, pb.T, pb.B, pb.C, c.lay)), W(h.W), b(h.bias), dy(to_layout(h.dy, pb.T, pb.B, pb.C, c.lay)),
        y(pb.x_size()), dx(pb.x_size()), dx2(pb.x_size());
    dbuf<A> pre(pb.o_size()), o(pb.o_size()), dz(pb.o_size()), dz2(pb.o_size());
    dbuf<unsigned long long> reach(2);
    std::vector<T> w_off(h.W.size() + 1);  // W one element in: not 16-byte aligned (the 2-byte W staging)
    std::copy(h.W.begin(), h.W.end(), w_off.begin() + 1);
    dbuf<T> W_off(w_off), dx3(pb.x_size());
    layer.forward(forward_of<T>(c.shape(), x.p, W.p, b.p, y.p, pre.p, len.d(), d), nullptr);

    // the window backward's arguments as the layer's backward sets them (talk_conv::backward_at)
    td::offsets_args<T> oa = td::make_offsets_args<T>(c.shape(), w, len.d(), d);
    oa.o_pre = pre.p;
    oa.o = o.p;
    if (d.active()) td::launch_apply_dropout(oa, nullptr);
    td::window_args<T> wa = td::make_window_args<T>(c.shape(), w, len.d());
    wa.x = x.p;
    wa.offsets = d.active() ? o.p : pre.p;
    wa.dy = dy.p;
    wa.weight = W.p;
    wa.finish.on = true;
    wa.finish.o_pre = pre.p;
    wa.finish.dropout = oa.dropout;
    wa.finish.p = oa.p;
    wa.finish.seed = oa.seed;
    wa.finish.t_base = 0;
    auto args = [&](T* dxp, A* dzp) {
      td::window_args<T> a = wa;
      a.dx = dxp;
      a.partial = dzp;
      a.dz = dzp;
      return a;
    };
    const bool fused = td::launch_backward_fused(args(dx.p, dz.p), c.shape(), w, max_offset, reach.p, true, nullptr, false);
    if (wg.subs > 1) {
      CHECK_FALSE(fused);
      continue;
    }
    // two blocks' shared memory per SM (the launcher's rule): on a 100 KB SM (sm_86 / 89) float's larger plans do not fit
    int smem_sm = 0;
    CUDA_OK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
    const std::size_t smem = td::plan_backward_fused<T>(c.shape(), w, max_offset, td::heads_per_block(wg), std::size_t(smem_sm)).smem;
    if (2 * (smem + td::smem_reserved_per_block) > std::size_t(smem_sm)) {
      CHECK_FALSE(fused);
      MESSAGE("two blocks of the fused backward do not fit this GPU's SM at this shape: the two kernels run");
      continue;
    }
    REQUIRE(fused);  // every other condition holds by the shape's choice
    // the planned max_offset, and a third of it: spans past the plan, several segments per tile
    for (const double plan_offset : {max_offset, max_offset / 3}) {
      INFO("planned max_offset=", plan_offset);
      for (auto* buf : {&dx, &dx2}) buf->fill_bytes(0xff);  // NaN: a value left unwritten cannot match
      for (auto* buf : {&dz, &dz2}) buf->fill_bytes(0xff);
      // the fused kernel itself (reach zeroed as launch_window_backward does), then the two kernels
      CUDA_OK(cudaMemset(reach.p, 0, 2 * sizeof(unsigned long long)));
      REQUIRE(td::launch_backward_fused(args(dx.p, dz.p), c.shape(), w, plan_offset, reach.p, true, nullptr));
      bool finished = false;
      const bool wtdz = td::launch_window_backward(
          args(dx2.p, dz2.p), c.shape(), w, plan_offset, reach.p, nullptr, [&](bool f) { finished = f; }, false);
      CHECK(finished);  // dz finished in the gather (whole heads per channel block)
      CHECK(wtdz);      // W^T dz added by the banded dx
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<T> xf = dx.download(), xu = dx2.download();
      const std::vector<A> zf = dz.download(), zu = dz2.download();
      CHECK(std::memcmp(xf.data(), xu.data(), xf.size() * sizeof(T)) == 0);
      CHECK(std::memcmp(zf.data(), zu.data(), zf.size() * sizeof(A)) == 0);
      CHECK(std::all_of(zf.begin(), zf.end(), [](A v) { return std::isfinite(double(v)); }));
      // W not 16-byte aligned: its fragments staged 2 bytes at a time, the same floats
      dx3.fill_bytes(0xff);
      td::window_args<T> m = args(dx3.p, dz2.p);
      m.weight = W_off.p + 1;
      CUDA_OK(cudaMemset(reach.p, 0, 2 * sizeof(unsigned long long)));
      REQUIRE(td::launch_backward_fused(m, c.shape(), w, plan_offset, reach.p, true, nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<T> xm = dx3.download();
      CHECK(std::memcmp(xf.data(), xm.data(), xf.size() * sizeof(T)) == 0);
    }

    // the layer's backward (the fused path at this shape), recomputed and saved offsets, against float64
    const ref::dropout rd{d.active(), d.p, d.seed};
    ref::vec dx_ref, dW_ref, db_ref;
    ref::layer_backward(pb, to_double(h.x), to_double(h.W), to_double(h.bias), rd, to_double(h.dy), dx_ref, dW_ref,
                        db_ref);
    for (const bool saved : {true, false}) {
      const layer_out<T> g = run_gpu<T>(c, h, d, saved);
      check_close(to_double(g.dx), dx_ref, tol<T>::value, "fused dx vs reference");
      check_close(to_double(g.dW), dW_ref, 4 * tol<T>::value, "fused dW vs reference");
      check_close(to_double(g.db), db_ref, 4 * tol<T>::value, "fused dbias vs reference");
    }
  }
}

// Rows past the lengths get dx exactly 0, whatever x and dy hold there (NaN) and even with an Inf in W: the
// fused dx path multiplies W^T by the zero dz of those rows (Inf * 0 = NaN) and must still write zeros.
template <class T>
void padded_rows_case() {
  test_case c = shaped_case(9300, 70, 3, 128, 8, 5, 7, false, layout::tbc, {70, 23, 0});
  INFO(c.str(), " dtype=", tol<T>::name, " NaN past the lengths, Inf in W");
  const ref::problem& pb = c.pb;
  layer_data<T> h = make_layer_data<T>(c);
  const std::vector<T> special =
      to_type<T>(ref::vec{std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()});
  for (long b = 0; b < pb.B; ++b)
    for (long t = pb.n(b); t < pb.T; ++t)
      for (long ch = 0; ch < pb.C; ++ch) h.x[pb.xi(t, b, ch)] = h.dy[pb.xi(t, b, ch)] = special[0];
  h.W[3 * size_t(pb.C) + 17] = special[1];
  for (layout lay : {layout::tbc, layout::btc}) {
    c.lay = lay;
    const layer_out<T> g = run_gpu<T>(c, h, talkconv::dropout_params{}, false);
    const ref::vec dx = to_double(g.dx);
    size_t bad = 0;
    for (long b = 0; b < pb.B; ++b)
      for (long t = pb.n(b); t < pb.T; ++t)
        for (long ch = 0; ch < pb.C; ++ch) bad += !(dx[pb.xi(t, b, ch)] == 0.0);
    CHECK(bad == 0);
  }
}

template <class T>
void decoder_case(std::uint64_t seed) {
  test_case c = random_case(seed, true, layout::tbc, 10);
  c.pb.L = 1 + static_cast<long>(seed % 9);
  c.pb.B = 3;
  c.pb.lengths.clear();
  const long steps = 4 * (c.pb.L + 2) + 5;  // several re-bases of the ring
  c.pb.T = steps;
  INFO(c.str(), " dtype=", tol<T>::name);
  const layer_data<T> h = make_layer_data<T>(c);
  const ref::problem& pb = c.pb;
  dbuf<T> x(h.x), W(h.W), b(h.bias), y(pb.x_size()), y_full(pb.x_size());
  tcu::talk_conv<T> layer(c.config());
  {
    tcu::decoder<T> dec = layer.make_decoder(pb.B, nullptr);
    for (long t = 0; t < steps; ++t) dec.step(x.p + t * pb.B * pb.C, W.p, b.p, y.p + t * pb.B * pb.C, nullptr);
    CHECK(dec.position() == steps);
  }
  layer.forward(forward_of<T>(c.canonical(), x.p, W.p, b.p, y_full.p, nullptr, nullptr, {}), nullptr);
  std::vector<T> y_cpu(pb.x_size());
  cpu_side::decode<T>(c.config(), pb.B, steps, h.x.data(), h.W.data(), h.bias.data(), y_cpu.data());
  const ref::vec y_ref = ref::layer_forward(pb, to_double(h.x), to_double(h.W), to_double(h.bias), ref::dropout{});
  const std::vector<T> y_dec = y.download();
  check_close(to_double(y_dec), to_double(y_cpu), tol<T>::value, "decoder vs CPU decoder");
  check_close(to_double(y_dec), to_double(y_full.download()), tol<T>::value, "decoder vs causal forward");
  check_close(to_double(y_dec), y_ref, tol<T>::value, "decoder vs reference");
}

// Serving-style decoding: one step() captured in a CUDA graph (static input and output buffers, the
// position on the device) and replayed once per token equals step() called per token, bitwise (the same
// kernel on the same inputs); reset(stream) between replays starts over; the state stays window-sized (the
// replays cross several re-bases of the ring). Also: a misaligned x (element loads instead of 16-byte
// vectors) gives the same bits, and the CPU decoder agrees within the dtype's tolerance.
template <class T>
void graph_case(std::uint64_t seed, long C, long H, long L, long B) {
  test_case c = random_case(seed, true, layout::tbc, 10);
  c.pb.C = C;
  c.pb.H = H;
  c.pb.L = L;
  c.pb.B = B;
  c.pb.lengths.clear();
  const long steps = 3 * (L + 2) + 4, BC = B * C;
  c.pb.T = steps;
  INFO(c.str(), " dtype=", tol<T>::name, " graph replay");
  const ref::problem& pb = c.pb;
  const layer_data<T> h = make_layer_data<T>(c);
  const size_t n = pb.x_size(), row = static_cast<size_t>(BC);
  dbuf<T> x(h.x), W(h.W), b(h.bias), y_plain(n), y_graph(n), y_again(n), x_in(row), y_out(row);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  {
    tcu::decoder<T> dec(c.window(), C, B, s);
    for (long t = 0; t < steps; ++t) dec.step(x.p + t * BC, W.p, b.p, y_plain.p + t * BC, s);
    CHECK(dec.position() == steps);
    CUDA_OK(cudaStreamSynchronize(s));
  }
  const std::size_t state = tcu::decoder<T>::state_bytes(c.window(), C, B);
  dbuf<char> st(state);
  {
    tcu::decoder<T> dec(c.window(), C, B, st.p, state, s);  // position zeroed on s
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    dec.step(x_in.p, W.p, b.p, y_out.p, s);
    CUDA_OK(cudaStreamEndCapture(s, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    auto replay = [&](long count, T* y_dst) {
      for (long t = 0; t < count; ++t) {
        CUDA_OK(cudaMemcpyAsync(x_in.p, x.p + t * BC, row * sizeof(T), cudaMemcpyDeviceToDevice, s));
        CUDA_OK(cudaGraphLaunch(exec, s));
        CUDA_OK(cudaMemcpyAsync(y_dst + t * BC, y_out.p, row * sizeof(T), cudaMemcpyDeviceToDevice, s));
      }
    };
    replay(steps, y_graph.p);
    index_t t_dev = -1;
    CUDA_OK(cudaMemcpyAsync(&t_dev, dec.device_position(), sizeof(index_t), cudaMemcpyDeviceToHost, s));
    CUDA_OK(cudaStreamSynchronize(s));
    CHECK(t_dev == steps);
    CHECK(dec.position() == 1);  // the host mirror counts the one step() issued (captured), not the replays
    CHECK(same_bits(y_graph.download(), y_plain.download()));
    dec.reset(s);  // stream-ordered: the replays after it start from token 0
    CHECK(dec.position() == 0);
    const long again = L + 3;
    replay(again, y_again.p);
    CUDA_OK(cudaStreamSynchronize(s));
    const std::vector<T> ya = y_again.download(), yp = y_plain.download();
    CHECK(same_bits(std::vector<T>(ya.begin(), ya.begin() + again * BC), std::vector<T>(yp.begin(), yp.begin() + again * BC)));
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
  }
  {
    // One element off: x, y no longer vector-aligned.
    std::vector<T> shifted(n + 1, talkconv::from_acc<T>(acc_t<T>(0)));
    std::copy(h.x.begin(), h.x.end(), shifted.begin() + 1);
    dbuf<T> xs(shifted), ys(n + 1);
    tcu::decoder<T> dec(c.window(), C, B, s);
    for (long t = 0; t < steps; ++t) dec.step(xs.p + 1 + t * BC, W.p, b.p, ys.p + 1 + t * BC, s);
    CUDA_OK(cudaStreamSynchronize(s));
    const std::vector<T> yd = ys.download();
    CHECK(same_bits(std::vector<T>(yd.begin() + 1, yd.end()), y_plain.download()));
  }
  std::vector<T> y_cpu(n);
  cpu_side::decode<T>(c.config(), B, steps, h.x.data(), h.W.data(), h.bias.data(), y_cpu.data());
  check_close(to_double(y_graph.download()), to_double(y_cpu), tol<T>::value, "graph-replayed decoder vs CPU decoder");
  CUDA_OK(cudaStreamDestroy(s));
}

template <class T>
void graph_sweep(std::uint64_t seed0) {
  graph_case<T>(seed0 + 1, 1024, 16, 63, 2);  // the benchmark's layer: 16-byte vectors everywhere
  graph_case<T>(seed0 + 2, 24, 8, 5, 3);      // R = 3: element accesses in the ring
  graph_case<T>(seed0 + 3, 12, 3, 2, 2);      // C = 12: element loads in the projection (bf16, half)
  graph_case<T>(seed0 + 4, 15, 3, 0, 1);      // L = 0: a ring of 2 rows, re-based every other step
}

// Beam search: decoder.reorder(new_order) continues sequence b from the state new_order[b] had. Checked
// bitwise against a second device decoder that is fed, from the start, the inputs each sequence's state
// was built from (the device decoder computes every sequence independently, so the bits must agree), and
// against the CPU decoder's reorder within the dtype's tolerance (its projection sums in another order).
// orders[k] is applied after steps[k] tokens; the last segment runs to the end.
template <class T>
void reorder_case(std::uint64_t seed, const std::vector<std::vector<index_t>>& orders, const std::vector<long>& at,
                  long total) {
  const long B = static_cast<long>(orders.front().size());
  test_case c = random_case(seed, true, layout::tbc, 10);
  c.pb.L = 1 + static_cast<long>(seed % 7);
  c.pb.B = B;
  c.pb.T = total;
  c.pb.lengths.clear();
  std::string when;
  for (long t : at) when += " " + std::to_string(t);
  INFO(c.str(), " dtype=", tol<T>::name, " reorders after tokens", when);
  const ref::problem& pb = c.pb;
  const long C = pb.C;
  const layer_data<T> h = make_layer_data<T>(c);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  dbuf<T> x(h.x), W(h.W), b(h.bias), y(pb.x_size()), x_replay(pb.x_size()), y_replay(pb.x_size());
  std::vector<index_t> all_orders;  // orders[k] at k * B on the device
  for (const auto& o : orders) all_orders.insert(all_orders.end(), o.begin(), o.end());
  const dbuf<index_t> d_orders(all_orders);
  auto order_at = [&](size_t k) { return d_orders.p + k * static_cast<size_t>(B); };
  // src[t][q]: the sequence whose token t sequence q's state holds, updated by every reorder.
  std::vector<std::vector<index_t>> src(static_cast<size_t>(total), std::vector<index_t>(static_cast<size_t>(B)));
  for (auto& row : src)
    for (long q = 0; q < B; ++q) row[static_cast<size_t>(q)] = q;
  {
    // Caller-owned state and a two-phase workspace for the first reorder, the convenience form after.
    const std::size_t state = tcu::decoder<T>::state_bytes(c.window(), C, B);
    dbuf<char> st(state);
    tcu::decoder<T> dec(c.window(), C, B, st.p, state);
    std::size_t bytes = 0;
    dec.reorder(nullptr, bytes, order_at(0), s);
    CHECK(bytes == dec.reorder_workspace_bytes());
    dbuf<char> ws(bytes);
    size_t k = 0;
    for (long t = 0; t < total; ++t) {
      while (k < at.size() && at[k] == t) {
        if (k == 0)
          dec.reorder(ws.p, bytes, order_at(k), s);
        else
          dec.reorder(order_at(k), s);
        for (long u = 0; u < t; ++u) {
          const std::vector<index_t> old = src[static_cast<size_t>(u)];
          for (long q = 0; q < B; ++q)
            src[static_cast<size_t>(u)][static_cast<size_t>(q)] =
                old[static_cast<size_t>(orders[k][static_cast<size_t>(q)])];
        }
        CHECK(dec.position() == t);
        ++k;
      }
      dec.step(x.p + t * B * C, W.p, b.p, y.p + t * B * C, s);
    }
    CHECK(dec.position() == total);
    CUDA_OK(cudaStreamSynchronize(s));
  }
  // The replay: a fresh decoder fed x[t][src[t][q]].
  std::vector<T> xr(pb.x_size());
  for (long t = 0; t < total; ++t)
    for (long q = 0; q < B; ++q)
      std::copy_n(h.x.begin() + (t * B + src[static_cast<size_t>(t)][static_cast<size_t>(q)]) * C, C,
                  xr.begin() + (t * B + q) * C);
  x_replay.upload(xr);
  {
    tcu::decoder<T> dec(c.window(), C, B, s);
    for (long t = 0; t < total; ++t) dec.step(x_replay.p + t * B * C, W.p, b.p, y_replay.p + t * B * C, s);
    CUDA_OK(cudaStreamSynchronize(s));
  }
  const long from = at.empty() ? 0 : at.back();  // the segment after the last reorder
  const std::vector<T> yd = y.download(), yr = y_replay.download();
  const std::vector<T> tail(yd.begin() + from * B * C, yd.end()), tail_r(yr.begin() + from * B * C, yr.end());
  CHECK(same_bits(tail, tail_r));
  if (at.size() == 1) {  // one reorder: the CPU decoder's reorder, same inputs
    std::vector<T> y_cpu(pb.x_size());
    cpu_side::decode_reorder<T>(c.config(), B, at[0], total - at[0], orders[0].data(), h.x.data(), h.W.data(),
                                h.bias.data(), y_cpu.data());
    check_close(to_double(yd), to_double(y_cpu), tol<T>::value, "reordered decoder vs CPU decoder's reorder");
  }
  CUDA_OK(cudaStreamDestroy(s));
}

template <class T>
void reorder_sweep(std::uint64_t seed0) {
  const std::vector<index_t> repeats = {2, 0, 2, 3}, reversed = {3, 2, 1, 0}, identity = {0, 1, 2, 3};
  for (long at : {0L, 1L, 3L, 7L, 23L}) {  // before any step, inside the first ring turn, after re-bases
    reorder_case<T>(seed0 + static_cast<std::uint64_t>(at), {repeats}, {at}, at + 19);
    reorder_case<T>(seed0 + 100 + static_cast<std::uint64_t>(at), {reversed}, {at}, at + 11);
  }
  reorder_case<T>(seed0 + 200, {identity}, {9}, 20);
  reorder_case<T>(seed0 + 300, {repeats, reversed}, {5, 17}, 40);  // two reorders compose
}

}  // namespace
