// Where a tensor-core fragment's elements live, host+device so the CPU tests check the tile mappings
// the CUDA kernels build on them (agent_dw_tc.cuh).
//
// PTX mma.sync.m16n8k8 with .tf32 operands and .f32 accumulators (PTX ISA, "Matrix fragments for mma.m16n8k8"):
// lane l holds, with g = l / 4 and q = l % 4,
//   a (16 x 8, row x k):    e = 0..3 at (g + 8 (e % 2), q + 4 (e / 2));
//   b (8 x 8, k x column):  e = 0..1 at (q + 4 e, g);
//   d (16 x 8, row x column): e = 0..3 at (g + 8 (e / 2), 2 q + e % 2).
#pragma once

#include "talkconv/config.hpp"

namespace talkconv {
namespace detail {

struct mma_m16n8k8 {
  TALKCONV_HOST_DEVICE static constexpr int a_row(int lane, int e) { return lane / 4 + 8 * (e % 2); }
  TALKCONV_HOST_DEVICE static constexpr int a_k(int lane, int e) { return lane % 4 + 4 * (e / 2); }
  TALKCONV_HOST_DEVICE static constexpr int b_k(int lane, int e) { return lane % 4 + 4 * e; }
  TALKCONV_HOST_DEVICE static constexpr int b_col(int lane, int) { return lane / 4; }
  TALKCONV_HOST_DEVICE static constexpr int d_row(int lane, int e) { return lane / 4 + 8 * (e / 2); }
  TALKCONV_HOST_DEVICE static constexpr int d_col(int lane, int e) { return 2 * (lane % 4) + e % 2; }
};

// The offset path's column order over a warp's 32 channels: column j of 8-column mma tile n is channel
// dx_tc_channel(n, j) = 8 (j / 2) + 2 n + j % 2, so that a lane's accumulator columns (2q, 2q + 1 of
// tiles n = 0..3) are the 8 consecutive channels 8q .. 8q + 7 of one row: one 16-byte load and store of
// dx per row. W's column for channel c sits at position dx_tc_position(c) = 8 n + j of that order.
TALKCONV_HOST_DEVICE constexpr int dx_tc_channel(int n, int j) { return 8 * (j / 2) + 2 * n + j % 2; }
TALKCONV_HOST_DEVICE constexpr int dx_tc_position(int c) { return 8 * ((c % 8) / 2) + 2 * (c / 8) + c % 2; }

}  // namespace detail
}  // namespace talkconv
