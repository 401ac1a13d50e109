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
  talkconv::forward_args<T> f;
  f.shape = c.shape();
  f.x = x.p;
  f.weight = W.p;
  f.bias = b.p;
  f.y = y.p;
  f.saved_offsets = saved.p;
  f.lengths = len.d();
  f.dropout = d;
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
  talkconv::forward_args<T> f;
  f.shape = c.canonical();
  f.x = h.x.data();
  f.weight = h.W.data();
  f.bias = h.bias.data();
  f.y = cpu.y.data();
  f.saved_offsets = cpu.saved.data();
  f.lengths = len.h();
  f.dropout = d;
  cpu_side::layer_forward<T>(c.config(), f);
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
  talkconv::forward_args<T> f;
  f.shape = c.canonical();
  f.x = x.p;
  f.weight = W.p;
  f.bias = b.p;
  f.y = y_full.p;
  layer.forward(f, nullptr);
  std::vector<T> y_cpu(pb.x_size());
  cpu_side::decode<T>(c.config(), pb.B, steps, h.x.data(), h.W.data(), h.bias.data(), y_cpu.data());
  const ref::vec y_ref = ref::layer_forward(pb, to_double(h.x), to_double(h.W), to_double(h.bias), ref::dropout{});
  const std::vector<T> y_dec = y.download();
  check_close(to_double(y_dec), to_double(y_cpu), tol<T>::value, "decoder vs CPU decoder");
  check_close(to_double(y_dec), to_double(y_full.download()), tol<T>::value, "decoder vs causal forward");
  check_close(to_double(y_dec), y_ref, tol<T>::value, "decoder vs reference");
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
