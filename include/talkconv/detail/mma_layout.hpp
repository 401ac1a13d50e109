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

// The window dx kernel's fused offset path (agent_window_input_grad.cuh), dx^T += W^T dz^T per warp: M =
// the block's 64 channels (four 16-row mma tiles), N = the warp's 16 rows (two 8-column tiles), K = 32
// offsets per chunk (four k steps). A lane of the dx kernel owns 8 consecutive channels (vector v = lane
// / 4) of 4 consecutive rows (row group lane % 4 of the warp); these orders put exactly those 32 elements
// in its accumulators, so the window's dx is the mma's C operand and nothing moves between lanes:
//   M row i of tile m is channel dxf_channel(m, i) = 8 (i % 8) + 2 m + i / 8,
//   N column j of tile n is row dxf_row(n, j) = 4 (j / 2) + 2 n + j % 2 of the warp's 16,
//   k index k of step s is offset dxf_offset(s, k) = 8 (k % 4) + 2 s + k / 4 of the chunk's 32.
// Accumulator e of tiles (m, n) is then row 2 n + e % 2 and channel 2 m + e / 2 of the lane's own 4 x 8;
// b element e of step s is offset 8 (lane % 4) + 2 s + e of the lane's row: one lane reads the 8
// consecutive offsets 8 q .. 8 q + 7 of a row for all four steps. W^T (the a operand) is staged in shared
// memory in fragment order: the element for (channel c, offset p of the chunk) at dxf_a_position(c, p),
// a lane's four a elements of (m, s) contiguous at ((m * 4 + s) * 32 + lane) * 4.
TALKCONV_HOST_DEVICE constexpr int dxf_channel(int m, int i) { return 8 * (i % 8) + 2 * m + i / 8; }
TALKCONV_HOST_DEVICE constexpr int dxf_row(int n, int j) { return 4 * (j / 2) + 2 * n + j % 2; }
TALKCONV_HOST_DEVICE constexpr int dxf_offset(int s, int k) { return 8 * (k % 4) + 2 * s + k / 4; }
TALKCONV_HOST_DEVICE constexpr int dxf_d_row(int n, int e) { return 2 * n + e % 2; }      // of the lane's 4 rows
TALKCONV_HOST_DEVICE constexpr int dxf_d_channel(int m, int e) { return 2 * m + e / 2; }  // of its 8 channels
TALKCONV_HOST_DEVICE constexpr int dxf_b_offset(int s, int e) { return 2 * s + e; }       // of its 8 offsets
TALKCONV_HOST_DEVICE constexpr int dxf_a_position(int c, int p) {
  // c = 8 v + 2 m + e % 2 (lane / 4 = v), p = 8 q + 2 s + e / 2 (lane % 4 = q)
  return (((c % 8) / 2 * 4 + (p % 8) / 2) * 32 + 4 * (c / 8) + p / 8) * 4 + c % 2 + 2 * (p % 2);
}
// dz (the b operand) is staged per warp in fragment order too: the value of row r (of the warp's 16) and
// offset p (of the chunk's 32) at dxf_b_position(r, p), a lane's two b elements of (n, s) contiguous at
// ((n * 4 + s) * 32 + lane) * 2. Offsets p, p + 1 (p even) are adjacent; p + 2 is 64 floats on.
TALKCONV_HOST_DEVICE constexpr int dxf_b_position(int r, int p) {
  // r = 4 (j / 2) + 2 n + j % 2 with j = lane / 4; p = 8 q + 2 s + e with q = lane % 4
  return ((((r % 4) / 2) * 4 + (p % 8) / 2) * 32 + 4 * (2 * (r / 4) + r % 2) + p / 8) * 2 + p % 2;
}
constexpr int dxf_warp_b_floats = 2 * 4 * 32 * 2;  // one warp's 16 rows x 32 offsets
constexpr int dxf_b_row_step = 16;                  // dxf_b_position(r + 4, p) - dxf_b_position(r, p)
// Channels 8 v + u of one offset lie at dxf_a_position(8 v, p) + dxf_a_step(u): a staged 8-channel vector
// needs one position computed. A chunk of 32 offsets x 64 channels takes dxf_chunk_floats.
TALKCONV_HOST_DEVICE constexpr int dxf_a_step(int u) { return (u / 2) * 4 * 32 * 4 + u % 2; }
constexpr int dxf_chunk_floats = 4 * 4 * 32 * 4;

}  // namespace detail
}  // namespace talkconv
