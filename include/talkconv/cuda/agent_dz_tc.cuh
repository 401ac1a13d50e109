// What the dz GEMMs on tensor cores share (dW in agent_dw_tc.cuh, the offset path dx += dz W in
// agent_offset_path_tc.cuh): dz loads, dz split hi + lo for TF32 (tf32_split), and the walk of rows' validity.
#pragma once

#include "talkconv/cuda/agent_dz_gemm.cuh"
#include "talkconv/cuda/mma_tf32.cuh"

#include <cstdint>

namespace talkconv {
namespace cuda {
namespace detail {

// dz[p .. p + 4) of one row at `q` (the element of offset p), zero at offsets >= P: one 16-byte load when
// `vec` (P % 4 == 0 and dz 16-byte aligned) and the four exist, else element loads.
__device__ __forceinline__ float4 load_dz4(const float* q, index_t p, index_t P, bool vec) {
  if (vec && p + 4 <= P) return __ldg(reinterpret_cast<const float4*>(q));
  return make_float4(p < P ? q[0] : 0.0f, p + 1 < P ? q[1] : 0.0f, p + 2 < P ? q[2] : 0.0f, p + 3 < P ? q[3] : 0.0f);
}

// dz = hi + lo (tf32_split), four values stored at hi[0..4) and lo[0..4) (16-byte aligned): the A operand
// of the dz GEMMs.
__device__ __forceinline__ void store_tf32_split(float* hi, float* lo, float4 v) {
  const float x[4] = {v.x, v.y, v.z, v.w};
  float h[4], l[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) tf32_split(x[u], h[u], l[u]);
  *reinterpret_cast<float4*>(hi) = make_float4(h[0], h[1], h[2], h[3]);
  *reinterpret_cast<float4*>(lo) = make_float4(l[0], l[1], l[2], l[3]);
}

// Row r's validity walked k_rows rows at a time without a division per step: (outer, inner) is r's
// position in the [outer][inner] row order (tbc: t, b; btc: b, t).
struct row_walk {
  index_t outer = 0, inner = 0, d_outer = 0, d_inner = 0, S = 1;
  __device__ __forceinline__ void start(const seq_geom& g, index_t r, int step) {
    S = g.lay == 0 ? g.B : g.T;
    outer = r / S;
    inner = r - outer * S;
    d_outer = step / S;
    d_inner = step - d_outer * S;
  }
  __device__ __forceinline__ bool valid(const seq_geom& g) const {
    if (g.lengths == nullptr) return true;
    return g.lay == 0 ? outer < g.length(inner) : inner < g.length(outer);
  }
  __device__ __forceinline__ void advance() {
    outer += d_outer;
    inner += d_inner;
    if (inner >= S) {
      inner -= S;
      ++outer;
    }
  }
};

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
