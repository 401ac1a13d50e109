// The seam between the binding (talkconv_torch.cpp: torch headers, no CUDA headers) and the CUDA
// translation unit (talkconv_torch_cuda.cu: talkconv's CUDA headers, no torch headers). Plain
// descriptors only, so nvcc never parses PyTorch and the binding never parses CUDA.
#pragma once

#include <talkconv/layer_args.hpp>

#include <cstddef>
#include <functional>
#include <memory>

namespace talkconv_torch {

using talkconv::index_t;

// The element types the binding dispatches on; the CPU path stores 16-bit types as Eigen::half /
// Eigen::bfloat16, the CUDA path as __half / __nv_bfloat16 (bitwise torch's at::Half / at::BFloat16).
enum class dtype : int { f32, f64, f16, bf16 };

// Device memory for a call's workspace, from PyTorch's caching allocator (kept alive by the binding
// until the call returns; stream-ordered, so the caller's stream may still be using it).
using alloc_fn = std::function<void*(std::size_t)>;

// One layer call. Pointers are device memory; x, y, dx, dy and the offsets use `lay`.
struct call {
  talkconv::talk_config cfg;
  talkconv::seq_shape shape;
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const index_t* lengths = nullptr;  // device, B entries, or null
  talkconv::dropout_params dropout;
  void* stream = nullptr;  // cudaStream_t
};

namespace cuda {

// y (and saved, the pre-dropout offsets in the accumulator type, when not null) from x.
void forward(dtype t, const call& c, void* y, void* saved, const alloc_fn& alloc);
// dx, dweight, dbias (may be null) from dy; saved may be null (recomputed).
void backward(dtype t, const call& c, const void* dy, const void* saved, void* dx, void* dweight, void* dbias,
              const alloc_fn& alloc);

// talkconv::cuda::decoder behind a type-erased handle; its state lives in memory the binding owns.
class decoder {
 public:
  virtual ~decoder() = default;
  virtual void step(const void* x_t, const void* weight, const void* bias, void* y_t, void* stream) = 0;
  virtual void reorder(const index_t* new_order, const alloc_fn& alloc, void* stream) = 0;
  virtual void reset() = 0;
  virtual index_t position() const = 0;
};
std::size_t decoder_state_bytes(dtype t, const talkconv::talk_config& cfg, index_t batch);
std::unique_ptr<decoder> make_decoder(dtype t, const talkconv::talk_config& cfg, index_t batch, void* state,
                                      std::size_t bytes);

}  // namespace cuda
}  // namespace talkconv_torch
