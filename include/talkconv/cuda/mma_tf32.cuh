// Tensor-core primitives shared by the kernels that use them (the dz GEMMs in agent_dw_tc.cuh and
// agent_offset_path_tc.cuh, the dx kernels' offset paths, the banded float window kernels, the projection in
// agent_project.cuh): one m16n8k8 TF32 product, the split of a float into two TF32 parts and the 3xTF32
// product of split operands, one m16n8k16 16-bit product and ldmatrix.
#pragma once

#include <cuda_bf16.h>

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

// One m16n8k16 product d += a b on 16-bit operands (bfloat16 or half, float accumulators), fragments as
// ldmatrix gives them: a = 4 registers (rows g, g + 8 x k pairs 2q, 2q + 8), b = 2 registers (k pairs 2q,
// 2q + 8 x column g), d as mma_tf32's.
template <bool Bf16>
__device__ __forceinline__ void mma_16bit(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (Bf16)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)d;
  (void)a;
  (void)b0;
  (void)b1;
#endif
}

// Four 8 x 8 matrices of 16-bit elements from shared memory (ldmatrix.x4): lanes 8 i .. 8 i + 7 give the row
// addresses (16 bytes each, 32-bit shared addresses) of matrix i, r[i] receives it in the mma fragment order
// (lane l: row l / 4, elements 2 (l % 4), + 1). Trans (.trans): lane l receives rows 2 (l % 4) and + 1 at
// column l / 4 instead (the fragment of the transposed matrix).
template <bool Trans = false>
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
  (void)addr;
  r[0] = r[1] = r[2] = r[3] = 0u;
#endif
}

// v ~ hi + mid + lo in bfloat16 (bit patterns in the low 16 bits): hi and mid truncated (exact remainders,
// never an overflow to infinity), lo rounded to nearest: |v - hi - mid - lo| < 2^-23 |v| (each truncation
// leaves less than 2^-7 of its input, the rounding at most 2^-9 of the last remainder), float's range
// (bfloat16 has float's exponent). Products with a bfloat16 x are exact in float.
__device__ __forceinline__ void bf16_split3(float v, unsigned& hi, unsigned& mid, unsigned& lo) {
  const unsigned hb = __float_as_uint(v) & 0xffff0000u;
  const float r1 = v - __uint_as_float(hb);
  const unsigned mb = __float_as_uint(r1) & 0xffff0000u;
  const float r2 = r1 - __uint_as_float(mb);
  hi = hb >> 16;
  mid = mb >> 16;
  lo = static_cast<unsigned>(__bfloat16_as_ushort(__float2bfloat16_rn(r2)));
}

// v ~ hi + lo, both valid TF32 bit patterns: hi = v with its low 13 significand bits cleared (exact: v - hi
// is a float), lo = (v - hi) likewise truncated. |v - hi - lo| < 2^-21 |v| over float's whole range (no
// scaling, no underflow of a 16-bit type); 3 instructions per value. Products by a TF32-exact operand are
// summed hi first. A NaN stays NaN in hi and lo; an Inf stays Inf in hi, its lo is NaN (Inf - Inf): callers that
// must carry an Inf set lo to 0 (the banded float dx's staged W).
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

// d += a b in 3xTF32 (hi hi + hi lo + lo hi, in that order; lo lo dropped): a and b each split by
// tf32_split into its hi and lo parts. |error| ~ 2^-21 of each product's terms (tf32_split), float-class
// accuracy on TF32 tensor cores. The one place the three products are written.
__device__ __forceinline__ void mma_tf32x3(float (&d)[4], const unsigned (&ahi)[4], const unsigned (&alo)[4],
                                           const unsigned (&bhi)[2], const unsigned (&blo)[2]) {
  mma_tf32(d, ahi, bhi);
  mma_tf32(d, ahi, blo);
  mma_tf32(d, alo, bhi);
}

// The same with b as staged by the banded float kernels: one float4 holding b's hi parts (x, y) and lo parts
// (z, w), as bit patterns.
__device__ __forceinline__ void mma_tf32x3(float (&d)[4], const unsigned (&ahi)[4], const unsigned (&alo)[4], const float4 b) {
  const unsigned bhi[2] = {__float_as_uint(b.x), __float_as_uint(b.y)};
  const unsigned blo[2] = {__float_as_uint(b.z), __float_as_uint(b.w)};
  mma_tf32x3(d, ahi, alo, bhi, blo);
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
