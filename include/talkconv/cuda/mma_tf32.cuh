// TF32 tensor-core primitives shared by the kernels that use them (the dz GEMMs in agent_dw_tc.cuh, the
// dx kernel's fused offset path in agent_window_input_grad.cuh): one m16n8k8 product and the split of a
// float into two TF32 parts.
#pragma once

namespace talkconv {
namespace cuda {
namespace detail {

// One m16n8k8 TF32 tensor-core product d += a b (PTX mma.sync), operands in registers, fragment layouts
// as detail::mma_m16n8k8 gives them (g = lane / 4, q = lane % 4; (row, k) for a, (k, column) for b):
// a = (g, q), (g + 8, q), (g, q + 4), (g + 8, q + 4);  b = (q, g), (q + 4, g);
// d = (g, 2q), (g, 2q + 1), (g + 8, 2q), (g + 8, 2q + 1). Loading fragments with plain shared-memory reads
// lets every load use an immediate offset from one base register (WMMA's TF32 loads go through generic
// addresses: one 64-bit address computation per element).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  (void)d;
  (void)a;
  (void)b;
#endif
}

// v ~ hi + lo, both valid TF32 bit patterns: hi = v with its low 13 significand bits cleared (exact: v - hi
// is a float), lo = (v - hi) likewise truncated. |v - hi - lo| < 2^-21 |v| over float's whole range (no
// scaling, no underflow of a 16-bit type); 3 instructions per value. Products by a TF32-exact operand are
// summed hi first. NaN and Inf stay NaN and Inf in hi + lo.
__device__ __forceinline__ void tf32_split(float v, float& hi, float& lo) {
  hi = __uint_as_float(__float_as_uint(v) & 0xffffe000u);
  lo = __uint_as_float(__float_as_uint(v - hi) & 0xffffe000u);
}

// A fragment's floats split (tf32_split) into the hi and lo operands of mma_tf32, as bit patterns.
template <int N>
__device__ __forceinline__ void tf32_split_fragment(const float (&v)[N], unsigned (&hi)[N], unsigned (&lo)[N]) {
#pragma unroll
  for (int e = 0; e < N; ++e) {
    float h, l;
    tf32_split(v[e], h, l);
    hi[e] = __float_as_uint(h);
    lo[e] = __float_as_uint(l);
  }
}

// One aligned 16-byte shared-memory read the compiler issues where it stands: a fragment read inside a
// step of the products is neither hoisted nor merged with another step's (which would hold them all in
// registers at once).
__device__ __forceinline__ float4 lds128_here(const float* p) {
  float4 v;
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ld.shared.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(a));
  return v;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
