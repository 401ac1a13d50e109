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

// A row of b operands (k along the row) split hi + lo for 3xTF32, stored so that each lane's fragment
// operands are one 8-byte load: within each 8 k [8 kb, 8 kb + 8), 16 words, hi of k at word
// tf32_b_pair_word(k) = 16 kb + 2 (k % 4) + (k % 8) / 4 (so hi of k and k + 4, lane q's b registers 0 and 1
// for k = 8 kb + q, are adjacent at 16 kb + 2 q) and lo of k 8 words after (the projection's staged W,
// agent_project.cuh).
TALKCONV_HOST_DEVICE constexpr int tf32_b_pair_word(int k) { return 16 * (k / 8) + 2 * (k % 4) + (k % 8) / 4; }

// Rows of 64 bytes (32 16-bit elements: 4 chunks of 16 bytes) without padding, for ldmatrix: chunk c of row r at
// byte r * 64 + 16 (c ^ ((r / 2) % 4)). The 8 rows of an ldmatrix matrix (8 consecutive rows from a multiple of
// 8, one chunk each) then fill the 8 16-byte bank groups of a 128-byte line once, and so do 8 consecutive
// threads copying 2 rows x 4 chunks (the projection's cp.async ring, agent_project.cuh).
TALKCONV_HOST_DEVICE constexpr int swizzle64_byte(int row, int chunk) {
  return row * 64 + 16 * (chunk ^ ((row / 2) % 4));
}

// PTX mma.sync.m16n8k16 with 16-bit operands (bf16 / f16) and .f32 accumulators: 32-bit registers of two
// elements (k and k + 1). Register i of lane l (g = l / 4, q = l % 4) holds
//   a (16 x 16, row x k): i = 0..3 at row g + 8 (i % 2), k = 2 q + 8 (i / 2) (and k + 1);
//   b (16 x 8, k x column): i = 0..1 at k = 2 q + 8 i (and k + 1), column g;
//   d: as mma_m16n8k8's.
// ldmatrix.x4 (8 x 8 matrices of 16-bit elements, rows of 16 bytes): lane 8 j + r gives the address of row r
// of matrix j; lane l receives in register j row l / 4, elements 2 (l % 4) and + 1 of matrix j. The
// projection (agent_project.cuh) points lane l at x row ldsm_a_row(l), k ldsm_a_k(l) of its warp's 16 rows
// (register j = a register j), and at W row ldsm_b_row(l), k ldsm_b_k(l) of a pair of 8-column tiles
// (registers 0, 1 = b of the first tile, 2, 3 = b of the second).
struct mma_m16n8k16 {
  TALKCONV_HOST_DEVICE static constexpr int a_row(int lane, int i) { return lane / 4 + 8 * (i % 2); }
  TALKCONV_HOST_DEVICE static constexpr int a_k(int lane, int i) { return 2 * (lane % 4) + 8 * (i / 2); }
  TALKCONV_HOST_DEVICE static constexpr int b_k(int lane, int i) { return 2 * (lane % 4) + 8 * i; }
  TALKCONV_HOST_DEVICE static constexpr int b_col(int lane, int) { return lane / 4; }
};
TALKCONV_HOST_DEVICE constexpr int ldsm_a_row(int lane) { return lane % 16; }
TALKCONV_HOST_DEVICE constexpr int ldsm_a_k(int lane) { return (lane / 16) * 8; }
TALKCONV_HOST_DEVICE constexpr int ldsm_b_row(int lane) { return (lane / 16) * 8 + lane % 8; }
TALKCONV_HOST_DEVICE constexpr int ldsm_b_k(int lane) { return ((lane / 8) % 2) * 8; }

// ldmatrix.x4.trans row addresses of the bfloat16 dW (agent_dw_tc.cuh), both operands stored with the k
// dimension (rows of x and dz) as the row: lane l points at k row ldsm_t_a_k(l), offset column
// ldsm_t_a_m(l) of the dz tile (registers = a registers 0..3 of a 16-offset tile), and at k row
// ldsm_t_b_k(l), channel column ldsm_t_b_n(l) of x (registers 0, 1 = b of a first 8-channel tile, 2, 3
// of the next).
TALKCONV_HOST_DEVICE constexpr int ldsm_t_a_k(int lane) { return 8 * (lane / 16) + lane % 8; }
TALKCONV_HOST_DEVICE constexpr int ldsm_t_a_m(int lane) { return 8 * ((lane / 8) % 2); }
TALKCONV_HOST_DEVICE constexpr int ldsm_t_b_k(int lane) { return 8 * ((lane / 8) % 2) + lane % 8; }
TALKCONV_HOST_DEVICE constexpr int ldsm_t_b_n(int lane) { return 8 * (lane / 16); }

// The offset path's column order over a warp's 32 channels: column j of 8-column mma tile n is channel
// dx_tc_channel(n, j) = 8 (j / 2) + 2 n + j % 2, so that a lane's accumulator columns (2q, 2q + 1 of
// tiles n = 0..3) are the 8 consecutive channels 8q .. 8q + 7 of one row: one 16-byte load and store of
// dx per row. W's column for channel c sits at position dx_tc_position(c) = 8 n + j of that order.
TALKCONV_HOST_DEVICE constexpr int dx_tc_channel(int n, int j) { return 8 * (j / 2) + 2 * n + j % 2; }
TALKCONV_HOST_DEVICE constexpr int dx_tc_position(int c) { return 8 * ((c % 8) / 2) + 2 * (c / 8) + c % 2; }

// The window dx kernel's fused offset path (agent_window_input_grad.cuh), dx^T += W^T dz^T per warp. A lane
// of the dx kernel owns `cv` consecutive channels (its vector) of `rv` consecutive rows (its row group):
// 8 x 4 for 16-bit x, 4 x 8 for float. Lane l of a warp has vector l / 4 and row group l % 4 of the warp's
// 8 cv channels and 4 rv rows. The product: M = those 8 cv channels (cv / 2 tiles of 16 rows), N = those
// 4 rv rows (rv / 2 tiles of 8 columns), K = 32 offsets per chunk (four k steps). The orders
//   M row i of tile m is channel dxf_channel(cv, m, i) = cv (i % 8) + 2 m + i / 8 of the warp's,
//   N column j of tile n is row dxf_row(rv, n, j) = rv (j / 2) + 2 n + j % 2 of the warp's,
//   k index k of step s is offset dxf_offset(s, k) = 8 (k % 4) + 2 s + k / 4 of the chunk's 32
// put in a lane's accumulators exactly its own rv x cv elements: accumulator e of tiles (m, n) is row
// dxf_d_row(n, e) = 2 n + e % 2 and channel dxf_d_channel(m, e) = 2 m + e / 2 of the lane's own, so the
// window's dx is the C operand and nothing moves between lanes. b element e of step s is offset
// 8 (lane % 4) + 2 s + e of the lane's b row.
// Staged operands, in fragment order (one 16-byte read per a fragment, one 8-byte read per b fragment):
//   W^T: block channel c (of 64) and offset p (of the chunk's 32) at dxf_a_position(cv, c, p); the warp
//        holding channel c is c / (8 cv) of the block's 64 / (8 cv); lane l's a elements of (m, s) sit at
//        dxf_a_fragment(cv, c / (8 cv), m, s, l) .. + 3; a chunk takes dxf_chunk_floats.
//   dz:  row r of a row block (the 4 rv rows one or two warps share) and offset p at dxf_b_position(rv, r, p),
//        lane l's b elements of (n, s) at ((n * 4 + s) * 32 + l) * 2 .. + 1; a row block takes 128 rv floats.
TALKCONV_HOST_DEVICE constexpr int dxf_channel(int cv, int m, int i) { return cv * (i % 8) + 2 * m + i / 8; }
TALKCONV_HOST_DEVICE constexpr int dxf_row(int rv, int n, int j) { return rv * (j / 2) + 2 * n + j % 2; }
TALKCONV_HOST_DEVICE constexpr int dxf_offset(int s, int k) { return 8 * (k % 4) + 2 * s + k / 4; }
TALKCONV_HOST_DEVICE constexpr int dxf_d_row(int n, int e) { return 2 * n + e % 2; }      // of the lane's rv rows
TALKCONV_HOST_DEVICE constexpr int dxf_d_channel(int m, int e) { return 2 * m + e / 2; }  // of its cv channels
TALKCONV_HOST_DEVICE constexpr int dxf_b_offset(int s, int e) { return 2 * s + e; }       // of its 8 offsets
TALKCONV_HOST_DEVICE constexpr int dxf_a_fragment(int cv, int h, int m, int s, int lane) {
  return (((h * (cv / 2) + m) * 4 + s) * 32 + lane) * 4;
}
TALKCONV_HOST_DEVICE constexpr int dxf_a_position(int cv, int c, int p) {
  // c = 8 cv h + cv v + 2 m + e % 2 (v = lane / 4), p = 8 q + 2 s + e / 2 (q = lane % 4)
  return dxf_a_fragment(cv, c / (8 * cv), (c % cv) / 2, (p % 8) / 2, 4 * ((c % (8 * cv)) / cv) + p / 8) + c % 2 +
         2 * (p % 2);
}
TALKCONV_HOST_DEVICE constexpr int dxf_b_position(int rv, int r, int p) {
  // r = rv (j / 2) + 2 n + j % 2 with j = lane / 4; p = 8 q + 2 s + e with q = lane % 4
  return ((((r % rv) / 2) * 4 + (p % 8) / 2) * 32 + 4 * (2 * (r / rv) + r % 2) + p / 8) * 2 + p % 2;
}
// Channels c0 + u (c0 % cv == 0, u < cv) of one offset lie at dxf_a_position(cv, c0, p) + dxf_a_step(u),
// whatever cv: a staged vector needs one position computed.
TALKCONV_HOST_DEVICE constexpr int dxf_a_step(int u) { return (u / 2) * 4 * 32 * 4 + u % 2; }
constexpr int dxf_chunk_floats = 64 * 32;                                      // W^T of one chunk, 64 channels
TALKCONV_HOST_DEVICE constexpr int dxf_block_b_floats(int rv) { return 128 * rv; }  // one row block's dz

}  // namespace detail
}  // namespace talkconv
