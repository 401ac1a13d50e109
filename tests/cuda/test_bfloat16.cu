// bfloat16: every CUDA path against the CPU and the reference.
#include "layer_cases.cuh"
#include "offsets_cases.cuh"
#include "window_cases.cuh"

TALKCONV_GPU_CASE("window forward and backward match the CPU and the reference: bfloat16") {
  window_sweep<__nv_bfloat16>(4, 300);
}

// Windows longer than shared memory can hold (T = 3000, L = 1200), ragged lengths, btc, split heads.
TALKCONV_GPU_CASE("window tokens beyond the shared-memory halo take the exact direct path: bfloat16") {
  window_long_halo_cases<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("dx by sorted events and by the event kernel: K past the banded limit, several heads per block, element vectors, W^T dz fused, ragged: bfloat16") {
  dx_paths_case<__nv_bfloat16>(shaped_case(321, 1500, 2, 128, 2, 300, 250, false, layout::tbc, {1500, 1001}), 1.0, true);
  dx_paths_case<__nv_bfloat16>(shaped_case(322, 1200, 2, 64, 4, 200, 150, false, layout::btc, {}), 1.0, true);
  dx_paths_case<__nv_bfloat16>(shaped_case(323, 400, 2, 72, 6, 9, 8, false, layout::tbc, {400, 250}), 1.0, false);  // R = 12: no vectors
}

TALKCONV_GPU_CASE("layer forward and backward match the CPU and the reference: bfloat16") {
  layer_sweep<__nv_bfloat16>(3);
}

TALKCONV_GPU_CASE("incremental decoding equals the causal forward, row by row: bfloat16") {
  for (std::uint64_t s = 1; s <= 3; ++s) decoder_case<__nv_bfloat16>(s + 30);
}

TALKCONV_GPU_CASE("a decoder step captured in a CUDA graph and replayed equals step() per token: bfloat16") {
  graph_sweep<__nv_bfloat16>(860);
}

TALKCONV_GPU_CASE("offset GEMMs: row / channel / offset tails, wide P, btc, ragged lengths and the dot form match the CPU: bfloat16") {
  offsets_gemm_sweep<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("layer backward on the fused dx path's shapes: chunks of 32 offsets, partial and element-staged chunks, narrow channel blocks, past the chunks: bfloat16") {
  fused_dx_sweep<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("layer backward: rows past the lengths get dx exactly 0 with NaN in x, dy there and an Inf in W: bfloat16") {
  padded_rows_case<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("banded dx on tensor cores: segments past max_offset, K = 255, split and shared heads, causal, ragged: bfloat16") {
  window_band_cases<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("window handles integer bounds and a NaN offset like the CPU, heads of 16: bfloat16") {
  window_nan_offset_case<__nv_bfloat16>(6, 4, 64);
}

TALKCONV_GPU_CASE("layer forward in one kernel (projection + banded window): the fused path taken, bitwise the two kernels', within the bar of the reference: bfloat16") {
  fused_forward_cases<__nv_bfloat16>();
}

TALKCONV_GPU_CASE("layer backward: the window's offset gradients and dx in one kernel, the fused path taken, bitwise the two kernels', within the bar of the reference: bfloat16") {
  fused_backward_cases<__nv_bfloat16>();
}
