// Window building-block cases shared by the per-dtype CUDA test files.
#pragma once

#include "gpu_util.cuh"

namespace {

using talkconv::layout;

// offset_hi: offsets are drawn from [0, offset_hi]; hint: the max_offset the halo is sized for (tokens
// reaching further take the direct path).
template <class T>
void window_case(const test_case& c, double offset_hi, float hint = 1.0f) {
  using A = acc_t<T>;
  INFO(c.str(), " dtype=", tol<T>::name, " offsets in [0, ", offset_hi, "], halo sized for ", hint);
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
  tcu::window_forward<T>(c.shape(), c.window(), d_x.p, d_o.p, d_y.p, len.d(), s, hint);
  std::size_t bytes = 0;
  tcu::window_backward<T>(nullptr, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s,
                          hint);
  dbuf<char> ws(bytes);
  tcu::window_backward<T>(ws.p, bytes, c.shape(), c.window(), d_x.p, d_o.p, d_dy.p, d_dx.p, d_do.p, len.d(), s, hint);
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
        const test_case c =
            random_case(1000 * std::uint64_t(i) + (causal ? 7 : 0) + (lay == layout::btc ? 3 : 0), causal, lay, max_T);
        window_case<T>(c, 1.0);
      }
}

}  // namespace
