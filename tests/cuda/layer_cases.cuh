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

}  // namespace
