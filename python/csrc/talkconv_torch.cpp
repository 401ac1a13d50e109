// talkconv_torch._C: talkconv's layer and decoder for PyTorch tensors, CPU and CUDA.
//
// One translation unit with the torch headers (kept to ATen's tensor and pybind11's caster: the whole of
// <torch/extension.h> doubles the build time); the CUDA calls go through bridge.hpp to
// talkconv_torch_cuda.cu, compiled only when PyTorch has CUDA (TALKCONV_TORCH_WITH_CUDA).
// The autograd Function, argument handling and layouts are in Python (talkconv_torch/_function.py);
// this file takes tensors already made contiguous in the layout it is told.
#include "bridge.hpp"

#include <talkconv/talkconv.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

namespace py = pybind11;

namespace talkconv_torch {
namespace {

static_assert(sizeof(Eigen::half) == sizeof(at::Half) && sizeof(Eigen::bfloat16) == sizeof(at::BFloat16),
              "the 16-bit types are reinterpreted bitwise");

template <class T>
struct tag {
  using type = T;
};

[[noreturn]] void fail(talkconv::status code, const std::string& argument, const std::string& message) {
  throw talkconv::error(code, argument, message);
}

dtype dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return dtype::f32;
    case at::kDouble:
      return dtype::f64;
    case at::kHalf:
      return dtype::f16;
    case at::kBFloat16:
      return dtype::bf16;
    default:
      throw py::type_error(std::string("talkconv: ") + name + " must be float32, float64, float16 or bfloat16, not " +
                           std::string(c10::toString(t.scalar_type())));
  }
}

// The CPU path's storage type for a dtype: Eigen's 16-bit types have torch's bit layout.
template <class Fn>
void dispatch_cpu(dtype t, Fn&& fn) {
  switch (t) {
    case dtype::f32:
      return fn(tag<float>{});
    case dtype::f64:
      return fn(tag<double>{});
    case dtype::f16:
      return fn(tag<Eigen::half>{});
    case dtype::bf16:
      return fn(tag<Eigen::bfloat16>{});
  }
}

at::ScalarType acc_scalar(dtype t) { return t == dtype::f64 ? at::kDouble : at::kFloat; }

void require_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
  if (t.scalar_type() != x.scalar_type())
    throw py::type_error(std::string("talkconv: ") + name + " is " + std::string(c10::toString(t.scalar_type())) +
                         " but x is " + std::string(c10::toString(x.scalar_type())));
  if (t.device() != x.device())
    throw py::value_error(std::string("talkconv: ") + name + " is on " + t.device().str() + " but x is on " +
                          x.device().str());
  if (!t.is_contiguous()) throw py::value_error(std::string("talkconv: ") + name + " must be contiguous");
}

// The layer's configuration with the parameter shapes checked against it (named errors).
talkconv::talk_config config_of(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                index_t heads, index_t max_left, index_t max_right, bool causal) {
  if (x.dim() != 3)
    fail(talkconv::status::invalid_shape, "x",
         "x must have 3 dimensions ([T, B, C] or [B, T, C]), not " + std::to_string(x.dim()));
  talkconv::talk_config cfg{x.size(2), heads, max_left, max_right, causal};
  const talkconv::basic_talk_conv<talkconv::dynamic_heads> layer(cfg);  // validates C, H, L, M
  const index_t P = layer.num_offsets();
  if (weight.dim() != 2 || weight.size(0) != P || weight.size(1) != cfg.channels)
    fail(talkconv::status::invalid_shape, "weight",
         "weight must be [P, C] = [" + std::to_string(P) + ", " + std::to_string(cfg.channels) + "], not " +
             c10::str(weight.sizes()));
  require_like(weight, x, "weight");
  if (bias) {
    if (bias->dim() != 1 || bias->size(0) != P)
      fail(talkconv::status::invalid_shape, "bias",
           "bias must be [P] = [" + std::to_string(P) + "], not " + c10::str(bias->sizes()));
    require_like(*bias, x, "bias");
  }
  return cfg;
}

talkconv::seq_shape shape_of(const at::Tensor& x, bool btc) {
  if (!x.is_contiguous()) throw py::value_error("talkconv: x must be contiguous in its layout");
  return btc ? talkconv::seq_shape{x.size(1), x.size(0), x.size(2), talkconv::layout::btc}
             : talkconv::seq_shape{x.size(0), x.size(1), x.size(2), talkconv::layout::tbc};
}

// lengths: int64, B entries. Host lengths are checked here (the CUDA layer cannot read device memory
// without a synchronization, so it clamps instead); device lengths only go to the CUDA path.
const index_t* lengths_of(const std::optional<at::Tensor>& lengths, const at::Tensor& x, const talkconv::seq_shape& s) {
  if (!lengths) return nullptr;
  const at::Tensor& n = *lengths;
  if (n.scalar_type() != at::kLong || n.dim() != 1 || n.size(0) != s.B || !n.is_contiguous())
    fail(talkconv::status::invalid_shape, "lengths",
         "lengths must be a contiguous int64 tensor of B = " + std::to_string(s.B) + " entries");
  if (n.device() != x.device())
    throw py::value_error("talkconv: lengths is on " + n.device().str() + " but x is on " + x.device().str());
  if (n.is_cpu()) {
    const index_t* p = n.data_ptr<int64_t>();
    for (index_t b = 0; b < s.B; ++b)
      if (p[b] < 0 || p[b] > s.T)
        fail(talkconv::status::invalid_length, "lengths[" + std::to_string(b) + "]",
             "lengths[" + std::to_string(b) + "] = " + std::to_string(p[b]) +
                 " is outside [0, T = " + std::to_string(s.T) + "]");
  }
  return n.data_ptr<int64_t>();
}

talkconv::dropout_params dropout_of(double p, std::uint64_t seed, bool training) {
  talkconv::dropout_params d;
  d.p = static_cast<float>(p);
  d.seed = seed;
  d.training = training;
  if (!(p >= 0.0 && p < 1.0))  // the float rounding of p must not hide a p of 1 - tiny
    fail(talkconv::status::invalid_dropout, "dropout", "dropout p = " + std::to_string(p) + " is outside [0, 1)");
  return d;
}

// A workspace allocator over PyTorch's caching allocator on x's device; the tensors live as long as it.
struct torch_alloc {
  at::TensorOptions options;
  std::vector<at::Tensor> held;
  void* operator()(std::size_t bytes) {
    held.push_back(at::empty({static_cast<int64_t>(bytes)}, options.dtype(at::kByte)));
    return held.back().data_ptr();
  }
};

#ifndef TALKCONV_TORCH_WITH_CUDA
[[noreturn]] void no_cuda() {
  throw py::value_error(
      "talkconv: this build of talkconv_torch has no CUDA support (PyTorch had no CUDA when it was built)");
}
#endif

// forward(x, weight, bias, heads, max_left, max_right, causal, btc, lengths, p, seed, training, save, stream)
//   -> (y, saved offsets or None)
py::tuple forward(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, index_t heads,
                  index_t max_left, index_t max_right, bool causal, bool btc, const std::optional<at::Tensor>& lengths,
                  double p, std::uint64_t seed, bool training, bool save, std::uintptr_t stream) {
  const dtype t = dtype_of(x, "x");
  const talkconv::talk_config cfg = config_of(x, weight, bias, heads, max_left, max_right, causal);
  const talkconv::seq_shape s = shape_of(x, btc);
  const index_t* n = lengths_of(lengths, x, s);
  const talkconv::dropout_params d = dropout_of(p, seed, training);
  const index_t P = talkconv::basic_talk_conv<talkconv::dynamic_heads>(cfg).num_offsets();
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor saved;
  if (save) saved = at::empty({x.size(0), x.size(1), P}, x.options().dtype(acc_scalar(t)));
  if (x.is_cuda()) {
#ifdef TALKCONV_TORCH_WITH_CUDA
    call c{cfg,
           s,
           x.data_ptr(),
           weight.data_ptr(),
           bias ? bias->data_ptr() : nullptr,
           n,
           d,
           reinterpret_cast<void*>(stream)};
    torch_alloc alloc{x.options(), {}};
    cuda::forward(t, c, y.data_ptr(), save ? saved.data_ptr() : nullptr, std::ref(alloc));
#else
    (void)stream;
    no_cuda();
#endif
  } else {
    dispatch_cpu(t, [&](auto tg) {
      using T = typename decltype(tg)::type;
      const talkconv::talk_conv<T> layer(cfg);
      talkconv::forward_args<T> a;
      a.shape = s;
      a.x = static_cast<const T*>(x.data_ptr());
      a.weight = static_cast<const T*>(weight.data_ptr());
      a.bias = bias ? static_cast<const T*>(bias->data_ptr()) : nullptr;
      a.y = static_cast<T*>(y.data_ptr());
      a.saved_offsets = save ? static_cast<talkconv::acc_t<T>*>(saved.data_ptr()) : nullptr;
      a.lengths = n;
      a.dropout = d;
      py::gil_scoped_release nogil;
      layer.forward(a);
    });
  }
  return py::make_tuple(y, save ? py::cast(saved) : py::none());
}

// backward(dy, x, weight, bias, saved, heads, max_left, max_right, causal, btc, lengths, p, seed, training, stream)
//   -> (dx, dweight, dbias or None)
py::tuple backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& saved, index_t heads,
                   index_t max_left, index_t max_right, bool causal, bool btc, const std::optional<at::Tensor>& lengths,
                   double p, std::uint64_t seed, bool training, std::uintptr_t stream) {
  const dtype t = dtype_of(x, "x");
  const talkconv::talk_config cfg = config_of(x, weight, bias, heads, max_left, max_right, causal);
  const talkconv::seq_shape s = shape_of(x, btc);
  require_like(dy, x, "dy");
  if (!dy.sizes().equals(x.sizes())) fail(talkconv::status::invalid_shape, "dy", "dy must have the shape of x");
  const index_t* n = lengths_of(lengths, x, s);
  const talkconv::dropout_params d = dropout_of(p, seed, training);
  if (saved && (saved->scalar_type() != acc_scalar(t) || saved->device() != x.device() || !saved->is_contiguous()))
    throw py::value_error("talkconv: saved offsets of the wrong type or device");
  at::Tensor dx = at::empty(x.sizes(), x.options());
  at::Tensor dw = at::empty(weight.sizes(), weight.options());
  at::Tensor db;
  if (bias) db = at::empty(bias->sizes(), bias->options());
  const void* sv = saved ? saved->data_ptr() : nullptr;
  if (x.is_cuda()) {
#ifdef TALKCONV_TORCH_WITH_CUDA
    call c{cfg,
           s,
           x.data_ptr(),
           weight.data_ptr(),
           bias ? bias->data_ptr() : nullptr,
           n,
           d,
           reinterpret_cast<void*>(stream)};
    torch_alloc alloc{x.options(), {}};
    cuda::backward(t, c, dy.data_ptr(), sv, dx.data_ptr(), dw.data_ptr(), bias ? db.data_ptr() : nullptr,
                   std::ref(alloc));
#else
    (void)stream;
    no_cuda();
#endif
  } else {
    dispatch_cpu(t, [&](auto tg) {
      using T = typename decltype(tg)::type;
      const talkconv::talk_conv<T> layer(cfg);
      talkconv::backward_args<T> a;
      a.shape = s;
      a.x = static_cast<const T*>(x.data_ptr());
      a.weight = static_cast<const T*>(weight.data_ptr());
      a.bias = bias ? static_cast<const T*>(bias->data_ptr()) : nullptr;
      a.dy = static_cast<const T*>(dy.data_ptr());
      a.saved_offsets = static_cast<const talkconv::acc_t<T>*>(sv);
      a.dx = static_cast<T*>(dx.data_ptr());
      a.dweight = static_cast<T*>(dw.data_ptr());
      a.dbias = bias ? static_cast<T*>(db.data_ptr()) : nullptr;
      a.lengths = n;
      a.dropout = d;
      py::gil_scoped_release nogil;
      layer.backward(a);
    });
  }
  return py::make_tuple(dx, dw, bias ? py::cast(db) : py::none());
}

// Incremental decoding of `batch` sequences on the device and dtype of `like`: talkconv's cpu::decoder
// or cuda::decoder (whose state is a byte tensor from PyTorch's caching allocator).
class decoder_state {
 public:
  decoder_state(const at::Tensor& like, index_t channels, index_t heads, index_t max_left, index_t batch)
      : options_(like.options()), dtype_(dtype_of(like, "x")), cfg_{channels, heads, max_left, 0, true}, batch_(batch) {
    if (like.is_cuda()) {
#ifdef TALKCONV_TORCH_WITH_CUDA
      const std::size_t bytes = cuda::decoder_state_bytes(dtype_, cfg_, batch);
      state_ = at::empty({static_cast<int64_t>(bytes)}, options_.dtype(at::kByte));
      cuda_ = cuda::make_decoder(dtype_, cfg_, batch, state_.data_ptr(), bytes);
#else
      no_cuda();
#endif
    } else {
      dispatch_cpu(dtype_, [&](auto tg) {
        using T = typename decltype(tg)::type;
        cpu_ = std::make_shared<cpu_decoder<T>>(talkconv::talk_conv<T>(cfg_).make_decoder(batch));
      });
    }
  }

  // x_t [B, C] contiguous -> y_t [B, C]
  at::Tensor step(const at::Tensor& x_t, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  std::uintptr_t stream) {
    if (x_t.dim() != 2 || x_t.size(0) != batch_ || x_t.size(1) != cfg_.channels)
      fail(talkconv::status::invalid_shape, "x",
           "a decoder step takes x of [B, C] = [" + std::to_string(batch_) + ", " + std::to_string(cfg_.channels) +
               "], not " + c10::str(x_t.sizes()));
    if (x_t.scalar_type() != options_.dtype().toScalarType() || x_t.device() != options_.device())
      throw py::type_error("talkconv: a decoder step's x must keep the dtype and device the decoder was made for");
    if (!x_t.is_contiguous()) throw py::value_error("talkconv: x must be contiguous");
    const at::Tensor x3 = x_t.unsqueeze(0);
    config_of(x3, weight, bias, cfg_.heads, cfg_.max_left, 0, true);
    at::Tensor y = at::empty(x_t.sizes(), x_t.options());
    const void* b = bias ? bias->data_ptr() : nullptr;
    if (cuda_) {
#ifdef TALKCONV_TORCH_WITH_CUDA
      cuda_->step(x_t.data_ptr(), weight.data_ptr(), b, y.data_ptr(), reinterpret_cast<void*>(stream));
#endif
    } else {
      (void)stream;
      cpu_->step(x_t.data_ptr(), weight.data_ptr(), b, y.data_ptr());
    }
    return y;
  }

  // new_order: int64, B entries in [0, B), on the decoder's device.
  void reorder(const at::Tensor& new_order, std::uintptr_t stream) {
    if (new_order.scalar_type() != at::kLong || new_order.dim() != 1 || new_order.size(0) != batch_ ||
        !new_order.is_contiguous() || new_order.device() != options_.device())
      fail(talkconv::status::invalid_shape, "new_order",
           "new_order must be a contiguous int64 tensor of B = " + std::to_string(batch_) +
               " entries on the decoder's device");
    if (cuda_) {
#ifdef TALKCONV_TORCH_WITH_CUDA
      torch_alloc alloc{options_, {}};
      cuda_->reorder(new_order.data_ptr<int64_t>(), std::ref(alloc), reinterpret_cast<void*>(stream));
#endif
    } else {
      (void)stream;
      cpu_->reorder(new_order.data_ptr<int64_t>());
    }
  }

  void reset() {
#ifdef TALKCONV_TORCH_WITH_CUDA
    if (cuda_) return cuda_->reset();
#endif
    cpu_->reset();
  }
  index_t position() const {
#ifdef TALKCONV_TORCH_WITH_CUDA
    if (cuda_) return cuda_->position();
#endif
    return cpu_->position();
  }
  index_t batch() const { return batch_; }

 private:
  struct cpu_base {
    virtual ~cpu_base() = default;
    virtual void step(const void* x, const void* w, const void* b, void* y) = 0;
    virtual void reorder(const index_t* order) = 0;
    virtual void reset() = 0;
    virtual index_t position() const = 0;
  };
  template <class T>
  struct cpu_decoder final : cpu_base {
    explicit cpu_decoder(talkconv::cpu::decoder<T>&& d) : d(std::move(d)) {}
    void step(const void* x, const void* w, const void* b, void* y) override {
      d.step(static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y));
    }
    void reorder(const index_t* order) override { d.reorder(order); }
    void reset() override { d.reset(); }
    index_t position() const override { return d.position(); }
    talkconv::cpu::decoder<T> d;
  };

  at::TensorOptions options_;
  dtype dtype_;
  talkconv::talk_config cfg_;
  index_t batch_;
  at::Tensor state_;
  std::shared_ptr<cpu_base> cpu_;
#ifdef TALKCONV_TORCH_WITH_CUDA
  std::unique_ptr<cuda::decoder> cuda_;
#else
  std::unique_ptr<int> cuda_;  // always null without CUDA
#endif
};

}  // namespace
}  // namespace talkconv_torch

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace talkconv_torch;
  m.doc() = "talkconv's TaLK convolution layer for PyTorch tensors (use talkconv_torch, not this module)";
  // talkconv::error -> talkconv_torch.TalkConvError(message, code, argument), a ValueError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const talkconv::error& e) {
      py::object cls = py::module_::import("talkconv_torch._errors").attr("TalkConvError");
      py::object err = cls(std::string(e.what()), static_cast<int>(e.code()), e.argument());
      PyErr_SetObject(cls.ptr(), err.ptr());
    }
  });
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("has_cuda", [] {
#ifdef TALKCONV_TORCH_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("openmp_threads", [] { return talkconv::cpu::max_threads(); });
  py::class_<decoder_state>(m, "Decoder")
      .def(py::init<const at::Tensor&, index_t, index_t, index_t, index_t>())
      .def("step", &decoder_state::step)
      .def("reorder", &decoder_state::reorder)
      .def("reset", &decoder_state::reset)
      .def_property_readonly("position", &decoder_state::position)
      .def_property_readonly("batch", &decoder_state::batch);
}
