// The CUDA dx kernel's plan and arithmetic, run on the host: detail/dx_plan.hpp (tile rows, candidate
// tokens, tap events) and an emulation of input_grad_tile (agent_window_input_grad.cuh) step by step —
// the same batches of (token, head) pairs, the same bucket order (pair / 32, tap, lane), 1/K folded into
// each event's weight, the same carry split
// over row groups, the same suffix and raking order, fused multiply-adds where the kernel has FFMA —
// against the float64 reference. No GPU runs here: this is how the kernel's tiling is tested in CI.
#include "util.hpp"

#include "talkconv/detail/dx_plan.hpp"
#include "talkconv/detail/dx_sorted.hpp"
#include "talkconv/detail/mma_layout.hpp"
#include "talkconv/detail/window_tile.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <climits>

using namespace tt;

namespace {

namespace td = talkconv::detail;

// The window kernels' channel plan (cuda::detail::window_geom, restated: the test builds without CUDA):
// blocks of 64 channels holding whole heads, or splits of a head wider than 64.
struct channel_block {
  long c0;
  int cn;
};
std::vector<channel_block> channel_blocks(long C, long H) {
  const long R = C / H;
  std::vector<channel_block> v;
  if (R <= 64) {
    const long width = (64 / R) * R;
    for (long c0 = 0; c0 < C; c0 += width) v.push_back({c0, static_cast<int>(std::min(width, C - c0))});
  } else {
    for (long h = 0; h < H; ++h)
      for (long s = 0; s * 64 < R; ++s) v.push_back({h * R + s * 64, static_cast<int>(std::min(64L, R - s * 64))});
  }
  return v;
}

// The reach the device computes (window_reach_kernel, or the offset gradients' tap tables in passing): every tap
// of token t lies in [t - left, t + right].
template <class A>
void device_reach(const ref::problem& pb, const std::vector<A>& o, long& left, long& right) {
  left = right = 0;
  for (long b = 0; b < pb.B; ++b)
    for (long t = 0; t < pb.n(b); ++t)
      for (long h = 0; h < pb.H; ++h) {
        const auto k = td::make_taps<A, long>(t, o[pb.oi(t, b, h)], pb.causal ? A(0) : o[pb.oi(t, b, pb.H + h)],
                                                 pb.L, pb.M, pb.n(b), pb.causal);
        left = std::max(left, t - td::taps_min(k));
        right = std::max(right, td::taps_max(k) - t);
      }
}

// The end of a dx tile as both dx kernels finish it (detail::dx_tile_finish): each thread's rows suffix-summed,
// the raking over row groups with the carry (the block's last tile: the chain, 0, plus its row groups' carry sums
// in group order; a lower tile: the chain), the output, and the chain for the tile below.
template <class A>
void finish_dx_tile(const ref::problem& pb, const td::dx_block_shape& S, const channel_block& cb, long b, long t0,
                    long t1, bool last, std::vector<A>& acc, const std::vector<A>& car, std::vector<A>& chain, vec& dx) {
  // Suffix within each thread's rows, raking over groups (carry first), then the output.
  for (int c = 0; c < cb.cn; ++c) {
    for (int g = 0; g < S.groups; ++g)
      for (int r = S.rows - 2; r >= 0; --r)
        acc[size_t(g * S.rows + r) * 64 + size_t(c)] += acc[size_t(g * S.rows + r + 1) * 64 + size_t(c)];
    std::vector<A> above(size_t(S.groups));
    A x = chain[size_t(c)];
    if (last)
      for (int g = 0; g < S.groups; ++g) x += car[size_t(g) * 64 + size_t(c)];
    else
      for (int g = 0; g < S.groups; ++g) REQUIRE(car[size_t(g) * 64 + size_t(c)] == A(0));  // no carry events
    for (int g = S.groups - 1; g >= 0; --g) {
      above[size_t(g)] = x;
      x += acc[size_t(g * S.rows) * 64 + size_t(c)];
    }
    chain[size_t(c)] = x;
    for (long t = t0; t < t1; ++t) {
      const int row = static_cast<int>(t - t0);
      dx[pb.xi(t, b, cb.c0 + c)] =
          double(acc[size_t(row) * 64 + size_t(c)] + above[size_t(row / S.rows)]);
    }
  }
}

// The dx kernels' walk: per sequence b and channel block, blocks of `per_block` tiles of `tile` rows (the event kernel's
// dx_tiles_per_block, the sorted-events kernel's dx_sorted_tiles_per_block), each block's
// tiles from the last to the first (last: the block's last tile, which gathers the carry; the lower tiles take the chain,
// 64 accumulators per block, from the tile above). f(b, cb, last, t0, t1, chain) does one tile.
template <class A, class F>
void walk_dx_tiles(const ref::problem& pb, long tile, long per_block, F&& f) {
  const long tiles = (pb.T + tile - 1) / tile;
  for (long b = 0; b < pb.B; ++b)
    for (const channel_block& cb : channel_blocks(pb.C, pb.H))
      for (long k0 = 0; k0 < tiles; k0 += per_block) {
        const long kend = std::min(k0 + per_block, tiles);
        std::vector<A> chain(64, A(0));
        for (long kt = kend - 1; kt >= k0; --kt) f(b, cb, kt == kend - 1, kt * tile, std::min(kt * tile + tile, pb.T), chain);
      }
}

// dx (window part) as input_grad_tile computes it, for accumulator A (dy given in A) and vector width vec.
// stage_rows > 0: the 16-bit path's staged dy (vec 8): at most 256 records and stage_rows distinct tokens per batch,
// one row per token, copied to a stage at detail::dx_stage_key / dx_stage_byte, the gather reading its vector
// there through the event's key (a wrong layout reads another token's or another vector's dy).
template <class A>
vec emulate_dx(const ref::problem& pb, const std::vector<A>& o, const std::vector<A>& dy, int vec_width,
               int stage_rows = 0) {
  REQUIRE((stage_rows == 0 || vec_width == 8));
  const td::dx_block_shape S = td::make_dx_block_shape(int(sizeof(A)), vec_width);
  const long R = pb.R();
  const int nh_max = R <= 64 ? static_cast<int>(64 / R) : 1;
  const int tile = td::dx_tile_rows(S.tile, nh_max);
  long reach_l, reach_r;
  device_reach(pb, o, reach_l, reach_r);
  const A inv_k = A(1) / A(pb.L + pb.M + 1);
  vec dx(pb.x_size(), 0.0);
  struct event {
    long u;
    A w;
    unsigned key;  // staged: the row's key
  };
  const unsigned stage_at = 384;  // any multiple of 128 (the kernel's is after its other buffers)
  walk_dx_tiles<A>(pb, tile, td::dx_tiles_per_block, [&](long b, const channel_block& cb, bool last, long t0, long t1, std::vector<A>& chain) {
    const long n = pb.n(b);
    const long h_first = cb.c0 / R;
    const int nh = static_cast<int>((cb.c0 + cb.cn - 1) / R - h_first + 1);
    REQUIRE(nh <= nh_max);
    const int rows1 = tile + 1;
    long u0, u1;
    td::dx_candidates<long>(t0, t1, n, std::min(reach_l, pb.T), std::min(reach_r, pb.T), u0, u1);
    std::vector<A> acc(size_t(S.tile) * 64, A(0)), car(size_t(S.groups) * 64, A(0));
    // The pairs' events in this tile (bucket keys, -1: none; weights), as the kernel's pair_events.
    auto pair_events = [&](long u, int ph, std::array<int, 4>& key, std::array<A, 4>& w) {
      const long h = h_first + ph;
      const auto k = td::make_taps<A, long>(u, o[pb.oi(u, b, h)], pb.causal ? A(0) : o[pb.oi(u, b, pb.H + h)], pb.L,
                                            pb.M, n, pb.causal);
      int kk[4];
      A ww[4];
      td::dx_events<A, long>(k, t0, t1, tile, kk, ww, last);
      for (int j = 0; j < 4; ++j) {
        key[size_t(j)] = kk[j] >= 0 ? ph * rows1 + kk[j] : -1;
        w[size_t(j)] = ww[j];
      }
    };
    // Rounds of per_round tokens x nh heads queue the pairs with an event, in pair order; batches take up to
    // 256 queued records (the kernel interleaves rounds and batches; the queue is first in, first out, so the
    // batches are these), staged: and at most stage_rows distinct tokens, one stage row each.
    const int per_round = td::dx_tokens_per_round(S.threads, nh);
    std::vector<std::pair<long, int>> records;
    for (long ur = u0; ur < u1; ur += per_round)
      for (int p = 0; p < S.threads; ++p) {
        const int pu = p / nh, ph = p - pu * nh;
        const long u = ur + pu;
        if (pu >= per_round || u >= u1) continue;
        const long h = h_first + ph;
        const auto k = td::make_taps<A, long>(u, o[pb.oi(u, b, h)], pb.causal ? A(0) : o[pb.oi(u, b, pb.H + h)],
                                              pb.L, pb.M, n, pb.causal);
        if (td::dx_pair_queued<A, long>(k, t0, t1, last)) records.push_back({u, ph});
      }
    for (size_t r0 = 0; r0 < records.size();) {
      // the batch: records [r0, r0 + np), srow[p] = the stage row of record r0 + p (its token's)
      std::vector<int> srow;
      int rows = 0;
      for (size_t r = r0; r < records.size() && srow.size() < size_t(S.threads); ++r) {
        const bool opens = r == r0 || records[r].first != records[r - 1].first;
        if (stage_rows > 0 && opens && rows == stage_rows) break;
        rows += opens;
        srow.push_back(rows - 1);
      }
      const int np = static_cast<int>(srow.size());
      // Staged: stage row i holds the dy of the batch's i-th token (the block's 64 channels, 8 vectors of 8
      // per row), by byte.
      std::vector<A> stage;
      if (stage_rows > 0) {
        REQUIRE(rows <= stage_rows);
        stage.assign(size_t(stage_at + 128u * unsigned(stage_rows)) / 2, std::numeric_limits<A>::quiet_NaN());
        for (int p = 0; p < np; ++p)
          for (int sv = 0; sv < 8; ++sv)
            for (int i = 0; i < 8 && sv * 8 + i < cb.cn; ++i)
              stage[td::dx_stage_byte(td::dx_stage_key(stage_at, srow[size_t(p)]), sv) / 2 + size_t(i)] =
                  dy[pb.xi(records[r0 + size_t(p)].first, b, cb.c0 + sv * 8 + i)];
      }
      auto dy_of = [&](const event& e, int c) {
        if (stage_rows == 0) return dy[pb.xi(e.u, b, cb.c0 + c)];
        return stage[td::dx_stage_byte(e.key, c / 8) / 2 + size_t(c % 8)];
      };
      // Events of each thread's record, then buckets in (warp, tap, lane) order.
      std::vector<std::array<int, 4>> key(size_t(S.threads));
      std::vector<std::array<A, 4>> w(size_t(S.threads));
      for (int p = 0; p < S.threads; ++p) {
        key[size_t(p)] = {-1, -1, -1, -1};
        if (p < np) pair_events(records[r0 + size_t(p)].first, records[r0 + size_t(p)].second, key[size_t(p)], w[size_t(p)]);
      }
      std::vector<std::vector<event>> bucket(size_t(nh * rows1));
      for (int wp = 0; wp < S.warps; ++wp)
        for (int j = 0; j < 4; ++j)
          for (int lane = 0; lane < 32; ++lane) {
            const int p = wp * 32 + lane;
            const int bin = key[size_t(p)][size_t(j)];
            if (bin >= 0)
              bucket[size_t(bin)].push_back(
                  {records[r0 + size_t(p)].first, w[size_t(p)][size_t(j)] * inv_k,
                   td::dx_stage_key(stage_at, srow[size_t(p)])});
          }
      // Gather: thread (g, v) sums its rows' buckets, and carry events e with e % groups == g.
      for (int c = 0; c < cb.cn; ++c) {
        const int hv = static_cast<int>((cb.c0 + c) / R - h_first);
        for (int row = 0; row < tile; ++row)
          for (const event& e : bucket[size_t(hv * rows1 + row)]) {
            A& a = acc[size_t(row) * 64 + size_t(c)];
            a = std::fma(e.w, dy_of(e, c), a);
          }
        const auto& cv = bucket[size_t(hv * rows1 + tile)];
        for (size_t e = 0; e < cv.size(); ++e) {
          A& a = car[(e % size_t(S.groups)) * 64 + size_t(c)];
          a = std::fma(cv[e].w, dy_of(cv[e], c), a);
        }
      }
      r0 += size_t(np);
    }
    finish_dx_tile(pb, S, cb, b, t0, t1, last, acc, car, chain, dx);
  });
  return dx;
}

// dx (window part) as the sorted-events path computes it (agent_window_input_grad_sorted.cuh): every (token, head)
// writes its four tap events keyed by (sequence, head, row) in (sequence, token, head, tap) order, a stable sort
// (CUB's radix sort is stable; std::stable_sort here), then per block and tile, last to first, thread (g, v) sums its
// rows' events in sorted order; the block's last tile adds the carry of the tokens straddling its end, in rounds of
// `threads` (token, head) pairs, pair p of a round summed by row group p % groups. 1/K is folded into the weights.
template <class A>
vec emulate_dx_sorted(const ref::problem& pb, const std::vector<A>& o, const std::vector<A>& dy, int vec_width) {
  const td::dx_block_shape S = td::make_dx_block_shape(int(sizeof(A)), vec_width);
  const long R = pb.R(), T = pb.T, H = pb.H;
  long reach_l, reach_r;
  device_reach(pb, o, reach_l, reach_r);
  const A inv_k = A(1) / A(pb.L + pb.M + 1);
  const long N = pb.B * T * H * td::dx_sorted_taps;
  const int bits = td::dx_sorted_key_bits(std::uint64_t(pb.B * H * T));
  const std::uint64_t sentinel = td::dx_sorted_sentinel(bits);
  auto taps_of = [&](long b, long u, long h) {
    return td::make_taps<A, long>(u, o[pb.oi(u, b, h)], pb.causal ? A(0) : o[pb.oi(u, b, pb.H + h)], pb.L, pb.M,
                                  pb.n(b), pb.causal);
  };
  // The event pass.
  std::vector<std::uint64_t> key(size_t(N), sentinel);
  std::vector<td::dx_sorted_value<A, long>> val(size_t(N), {0, A(0)});
  for (long b = 0; b < pb.B; ++b)
    for (long u = 0; u < pb.n(b); ++u)
      for (long h = 0; h < H; ++h) {
        long row[4];
        A w[4];
        td::dx_sorted_events<A, long>(taps_of(b, u, h), row, w);
        for (int j = 0; j < 4; ++j) {
          const long e = td::dx_sorted_event_index<long>(b, u, h, j, T, H);
          if (row[j] < 0) continue;
          REQUIRE(row[j] < pb.n(b));
          key[size_t(e)] = td::dx_sorted_key<std::uint64_t, long>(b, h, row[j], T, H);
          REQUIRE(key[size_t(e)] < sentinel);
          val[size_t(e)] = {u, w[j] * inv_k};
        }
      }
  // The sort.
  std::vector<size_t> order(static_cast<size_t>(N));
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return key[x] < key[y]; });
  std::vector<std::uint64_t> ks(static_cast<size_t>(N));
  std::vector<td::dx_sorted_value<A, long>> vs(static_cast<size_t>(N));
  for (size_t i = 0; i < order.size(); ++i) ks[i] = key[order[i]], vs[i] = val[order[i]];
  auto first_at = [&](std::uint64_t k) { return static_cast<long>(std::lower_bound(ks.begin(), ks.end(), k) - ks.begin()); };
  // The tiles.
  vec dx(pb.x_size(), 0.0);
  walk_dx_tiles<A>(pb, S.tile, td::dx_sorted_tiles_per_block, [&](long b, const channel_block& cb, bool last, long t0, long t1, std::vector<A>& chain) {
    const long n = pb.n(b);
    const long h_first = cb.c0 / R;
    const int nh = static_cast<int>((cb.c0 + cb.cn - 1) / R - h_first + 1);
    std::vector<A> acc(size_t(S.tile) * 64, A(0)), car(size_t(S.groups) * 64, A(0));
    for (int c = 0; c < cb.cn; ++c) {
      const long h = (cb.c0 + c) / R;
      const std::uint64_t k0h = td::dx_sorted_key<std::uint64_t, long>(b, h, t0, T, H);
      const long hi = first_at(td::dx_sorted_key<std::uint64_t, long>(b, h, t1, T, H));
      for (long e = first_at(k0h); e < hi; ++e) {
        A& a = acc[size_t(ks[size_t(e)] - k0h) * 64 + size_t(c)];
        a = std::fma(vs[size_t(e)].w, dy[pb.xi(vs[size_t(e)].u, b, cb.c0 + c)], a);
      }
    }
    if (last && t1 < n) {  // the carry at t1: tokens whose taps lie on both sides of it
      long u0, u1;
      td::dx_candidates<long>(t1, t1, n, std::min(reach_l, T), std::min(reach_r, T), u0, u1);
      const int per_round = td::dx_tokens_per_round(S.threads, nh);
      for (long ur = u0; ur < u1; ur += per_round)
        for (int p = 0; p < S.threads; ++p) {
          const int pu = p / nh, ph = p - pu * nh;
          const long u = ur + pu;
          A w;
          if (pu >= per_round || u >= u1 || !td::dx_sorted_carry<A, long>(taps_of(b, u, h_first + ph), t1, w))
            continue;
          const A cw = w * inv_k;
          if (cw == A(0)) continue;  // underflowed: the kernel skips it too
          for (int c = 0; c < cb.cn; ++c)
            if ((cb.c0 + c) / R == h_first + ph) {
              A& a = car[size_t(p % S.groups) * 64 + size_t(c)];
              a = std::fma(cw, dy[pb.xi(u, b, cb.c0 + c)], a);
            }
        }
    }
    finish_dx_tile(pb, S, cb, b, t0, t1, last, acc, car, chain, dx);
  });
  return dx;
}

// One token's taps (double) in a sequence of length n up to 900, L and M up to 300, a quarter causal, offsets in [0, 1]
// with exact integers now and then (zero-weight taps), and a tile [t0, t1) of up to 128 rows: the event tests' draw.
struct tap_draw {
  td::window_taps<double, long> k;
  long n, t0, t1;
};
tap_draw random_tap_draw(std::mt19937_64& rng) {
  const long L = uniform_int(rng, 0, 300), M = uniform_int(rng, 0, 300), n = uniform_int(rng, 1, 900);
  const bool causal = uniform_int(rng, 0, 3) == 0;
  const long u = uniform_int(rng, 0, n - 1);
  std::uniform_real_distribution<double> off(0.0, 1.0);
  const double ol = uniform_int(rng, 0, 4) == 0 ? 0.5 : off(rng), orr = uniform_int(rng, 0, 4) == 0 ? 0.0 : off(rng);
  const auto k = td::make_taps<double, long>(u, ol, orr, L, M, n, causal);
  const long t0 = uniform_int(rng, 0, n - 1), t1 = std::min(n, t0 + uniform_int(rng, 1, 128));
  return tap_draw{k, n, t0, t1};
}

// A random problem of the dx emulation tests: 1-8 heads of 1-130 channels, every third causal, T up to max_T, L and M up
// to max_window (a quarter of them 0-2), ragged lengths half the time.
ref::problem random_dx_problem(std::mt19937_64& rng, int i, long max_T, long max_window) {
  ref::problem pb;
  const long Hs[] = {1, 2, 3, 4, 8};
  const long Rs[] = {1, 3, 8, 16, 24, 64, 80, 130};
  pb.H = Hs[uniform_int(rng, 0, 4)];
  pb.C = pb.H * Rs[uniform_int(rng, 0, 7)];
  if (pb.C > 300) pb.H = 1, pb.C = Rs[uniform_int(rng, 0, 7)];
  pb.causal = i % 3 == 2;
  pb.T = uniform_int(rng, 1, max_T);
  pb.B = uniform_int(rng, 1, 2);
  pb.L = uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 0, 2) : uniform_int(rng, 0, max_window);
  pb.M = pb.causal ? 0 : (uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 0, 2) : uniform_int(rng, 0, max_window));
  if (uniform_int(rng, 0, 1))
    for (long b = 0; b < pb.B; ++b) pb.lengths.push_back(uniform_int(rng, 0, pb.T));
  return pb;
}

template <class A>
void check_emulation(const ref::problem& pb, double offset_hi, std::uint64_t seed, int vec_width, int stage_rows = 0,
                     bool sorted = false) {
  INFO(pb.str(), " offsets in [0, ", offset_hi, "] vec=", vec_width, " acc bytes=", sizeof(A), " stage rows=", stage_rows,
       sorted ? " sorted events" : "");
  std::mt19937_64 rng(seed);
  const vec od = uniform_vec(rng, pb.o_size(), 0.0, offset_hi);
  const vec dyd = normal_vec(rng, pb.x_size());
  const std::vector<A> o(od.begin(), od.end()), dy(dyd.begin(), dyd.end());
  const vec ov(o.begin(), o.end()), dyv(dy.begin(), dy.end());
  vec dx_ref, do_ref;
  ref::window_backward(pb, vec(pb.x_size(), 0.0), ov, dyv, dx_ref, do_ref);
  const vec dx = sorted ? emulate_dx_sorted<A>(pb, o, dy, vec_width) : emulate_dx<A>(pb, o, dy, vec_width, stage_rows);
  const double tol = sizeof(A) > 4 ? 1e-12 : 2e-5;
  TT_CHECK_CLOSE("emulated CUDA dx vs reference", dx, dx_ref, tol, dx_scale(dx_ref, dyv));
}

}  // namespace

TEST_SUITE("cuda_tiles") {

TEST_CASE("dx plan: tile rows keep the buckets within bounds, candidates clamp to the sequence") {
  for (int tile : {64, 128})
    for (int nh = 1; nh <= 64; ++nh) {
      const int rows = td::dx_tile_rows(tile, nh);
      CHECK(rows >= 1);
      CHECK(rows <= tile);
      CHECK(nh * (rows + 1) <= td::dx_max_bins(tile));
      if (nh * (tile + 1) <= td::dx_max_bins(tile)) CHECK(rows == tile);
      CHECK(td::dx_tokens_per_round(256, nh) * nh <= 256);
    }
  long u0, u1;
  td::dx_candidates<long>(128, 256, 1000, 17, 16, u0, u1);
  CHECK(u0 == 112);
  CHECK(u1 == 273);
  td::dx_candidates<long>(0, 128, 50, 1000, 1000, u0, u1);
  CHECK(u0 == 0);
  CHECK(u1 == 50);
  td::dx_candidates<long>(128, 256, 50, 3, 3, u0, u1);  // the tile lies past the length
  CHECK(u0 == 125);
  CHECK(u1 == 125);
  const td::dx_block_shape bf16 = td::make_dx_block_shape(4, 8), f64 = td::make_dx_block_shape(8, 2);
  CHECK(bf16.groups * bf16.rows == bf16.tile);
  CHECK(bf16.rows * bf16.vec == 32);
  CHECK(f64.groups * f64.rows == f64.tile);
  CHECK(f64.rows * f64.vec == 16);
}

TEST_CASE("dx events: taps below the tile drop, taps past it go to the carry, missing tokens give none") {
  using A = double;
  // Token 10 of a long sequence, L = M = 4, offsets 0.5 / 0.25: a_l = 8, a_r = 11 (integers).
  auto k = td::make_taps<A, long>(10, 0.5, 0.25, 4, 4, 100, false);
  int key[4];
  A w[4];
  CHECK(td::dx_events<A, long>(k, 8, 16, 8, key, w));
  CHECK(key[0] == 11 - 8);  // i0 = 11, weight 1
  CHECK(w[0] == 1.0);
  CHECK(key[1] == -1);      // i1 = i0: zero weight
  CHECK(key[2] == -1);      // i2 = 7 < t0
  CHECK(key[3] == -1);
  // Fractional bounds: a_l = 10 - 0.3 * 4 = 8.8, a_r = 10 + 0.6 * 4 = 12.4; tile [9, 12): i0 = 12, i1 = 13
  // land at or past t1 (carry), i2 = 7 drops, i3 = 8 drops.
  k = td::make_taps<A, long>(10, 0.3, 0.6, 4, 4, 100, false);
  CHECK(td::dx_events<A, long>(k, 9, 12, 3, key, w));
  CHECK(key[0] == -1);  // merged into the carry slot
  CHECK(key[1] == 3);
  CHECK(key[2] == -1);
  CHECK(key[3] == -1);
  CHECK(w[1] == doctest::Approx(1.0));  // (1 - fr) + fr
  // Tile [8, 12): i3 = 8 stays a row event, i0 and i1 merge into the carry.
  CHECK(td::dx_events<A, long>(k, 8, 12, 4, key, w));
  CHECK(key[3] == 0);
  CHECK(key[1] == 4);
  CHECK(key[0] == -1);
  // Every tap at or past t1: the token is skipped (its weights sum to zero).
  CHECK_FALSE(td::dx_events<A, long>(k, 0, 7, 7, key, w));
  for (int j = 0; j < 4; ++j) CHECK(key[j] == -1);
  // Every tap below t0: skipped.
  CHECK_FALSE(td::dx_events<A, long>(k, 14, 20, 6, key, w));
  // Without the carry (a block's lower tiles): taps at or past t1 drop, row events stay, unmerged.
  CHECK(td::dx_events<A, long>(k, 8, 12, 4, key, w, false));
  CHECK(key[3] == 0);
  CHECK(key[0] == -1);
  CHECK(key[1] == -1);
  CHECK(key[2] == -1);
  CHECK(w[3] == td::make_tap_weights(k).w3);
  // A window covering the whole tile has no event left: tile [9, 12) (taps 7, 8 below, 12, 13 past).
  CHECK_FALSE(td::dx_events<A, long>(k, 9, 12, 3, key, w, false));
  for (int j = 0; j < 4; ++j) CHECK(key[j] == -1);
}

TEST_CASE("dx rounds queue every pair with an event, and without the carry none whose window covers the tile") {
  using A = double;
  std::mt19937_64 rng(77);
  long queued = 0, with_event = 0, covering = 0;
  for (int i = 0; i < 20000; ++i) {
    const tap_draw r = random_tap_draw(rng);
    const auto& k = r.k;
    const long t0 = r.t0, t1 = r.t1;
    for (bool carry : {true, false}) {
      int key[4];
      A w[4];
      td::dx_events<A, long>(k, t0, t1, int(t1 - t0), key, w, carry);
      const bool any = key[0] >= 0 || key[1] >= 0 || key[2] >= 0 || key[3] >= 0;
      const bool q = td::dx_pair_queued<A, long>(k, t0, t1, carry);
      if (any) CHECK(q);
      queued += q;
      with_event += any;
      if (!carry && td::taps_max(k) >= t1 && td::taps_min(k) < t0 && k.i0 >= t1 && k.i1 >= t1 && k.i2 < t0 && k.i3 < t0) {
        ++covering;
        CHECK_FALSE(q);
      }
    }
  }
  CHECK(with_event > 1000);
  CHECK(covering > 100);
  CHECK(queued >= with_event);
}

TEST_CASE("emulated CUDA dx matches the reference: random shapes, both vector widths, float and double") {
  std::mt19937_64 rng(2024);
  for (int i = 0; i < draws(24); ++i) {
    const ref::problem pb = random_dx_problem(rng, i, 400, 60);
    const int fvec = pb.R() % 4 == 0 ? 4 : 1, dvec = pb.R() % 2 == 0 ? 2 : 1;
    check_emulation<float>(pb, 1.0, 100 + i, fvec);
    check_emulation<float>(pb, 1.0, 100 + i, 1);
    check_emulation<double>(pb, 1.0, 200 + i, dvec);
    if (pb.R() % 8 == 0) {  // the 16-bit path: dy staged, a full batch or a few tokens per batch
      check_emulation<float>(pb, 1.0, 300 + i, 8, 256);
      check_emulation<float>(pb, 1.0, 300 + i, 8, static_cast<int>(uniform_int(rng, 1, 70)));
    }
  }
}

TEST_CASE("emulated CUDA dx: windows far beyond max_offset, huge L and M on a long ragged sequence") {
  ref::problem pb;
  pb.T = 600, pb.B = 1, pb.C = 16, pb.H = 1, pb.L = 40, pb.M = 30;
  check_emulation<float>(pb, 6.0, 7, 4);  // windows reach 240 tokens
  pb.causal = true, pb.M = 0;
  check_emulation<float>(pb, 6.0, 8, 4);
  ref::problem big;
  big.T = 3000, big.B = 1, big.C = 70, big.H = 1, big.L = 1200, big.M = 900, big.lengths = {2900};
  check_emulation<float>(big, 1.0, 99, 1);
  check_emulation<double>(big, 1.0, 99, 2);
  ref::problem wide = big;  // staged dy: many batches of 192 or 64 tokens per tile
  wide.C = 128, wide.H = 2;
  check_emulation<float>(wide, 1.0, 98, 8, 192);
  check_emulation<float>(wide, 1.0, 98, 8, 64);
}

TEST_CASE("emulated CUDA dx: a NaN offset gives NaN in its head's rows at or below it within its block, never another head") {
  // Token 700 with a NaN left offset in head 0: its left taps sit at row 699 with NaN weights, the suffix sums carry the
  // NaN down to its block's first row through the chained carry (tiles of 128: the event kernel's block 1, rows 512 ..
  // 1023, of dx_tiles_per_block = 4 tiles; the sorted-events kernel's block 0, rows 0 .. 1023, of 8).
  ref::problem pb;
  pb.T = 1100, pb.B = 1, pb.C = 128, pb.H = 2, pb.L = 20, pb.M = 20;
  std::mt19937_64 rng(31);
  vec od = uniform_vec(rng, pb.o_size(), 0.0, 1.0);
  const vec dyd = normal_vec(rng, pb.x_size());
  std::vector<float> o(od.begin(), od.end());
  const std::vector<float> dy(dyd.begin(), dyd.end());
  o[pb.oi(700, 0, 0)] = std::numeric_limits<float>::quiet_NaN();
  for (bool sorted : {false, true}) {
  INFO("sorted events: ", sorted);
  const vec dx = sorted ? emulate_dx_sorted<float>(pb, o, dy, 4) : emulate_dx<float>(pb, o, dy, 4);
  vec dx_ref, do_ref;  // head 1 does not depend on head 0's offsets: the reference (finite offsets only) has 0.5 there
  vec o_ref(o.begin(), o.end());
  o_ref[size_t(pb.oi(700, 0, 0))] = 0.5;
  ref::window_backward(pb, vec(pb.x_size(), 0.0), o_ref, vec(dy.begin(), dy.end()), dx_ref, do_ref);
  long bad_head1 = 0, nan_head0 = 0, bad_head0 = 0;
  const long block_rows = 128L * (sorted ? td::dx_sorted_tiles_per_block : td::dx_tiles_per_block);
  const long first = 700 / block_rows * block_rows;  // the NaN's block's first row
  for (long t = 0; t < pb.T; ++t)
    for (long c = 0; c < pb.C; ++c) {
      const double v = dx[pb.xi(t, 0, c)];
      if (c >= 64) {
        bad_head1 += !(std::abs(v - dx_ref[pb.xi(t, 0, c)]) <= 1e-4);
      } else if (t >= first && t <= 699) {
        nan_head0 += std::isnan(v);
      } else {
        bad_head0 += !std::isfinite(v);
      }
    }
  CHECK(bad_head1 == 0);
  CHECK(bad_head0 == 0);
  CHECK(nan_head0 == (699 - first + 1) * 64);
  }
}

TEST_CASE("sorted dx events: a token's row events and its carry at e are dx_events' for a tile ending at e") {
  // For a tile [t0, e) taking the carry, dx_events gives each tap in the tile its own event and merges the taps at or past e
  // into one carry event; the sorted path's events are the rows of all four taps (a row in the tile is then the same event)
  // and dx_sorted_carry the merged weight, for the tokens whose taps lie on both sides of e.
  using A = double;
  std::mt19937_64 rng(78);
  long carries = 0, rows_seen = 0;
  for (int i = 0; i < 20000; ++i) {
    const tap_draw r = random_tap_draw(rng);
    const auto& k = r.k;
    const long n = r.n, t0 = r.t0, e = r.t1;
    int key[4];
    A w[4];
    const bool used = td::dx_events<A, long>(k, t0, e, int(e - t0), key, w, true);
    long row[4];
    A sw[4];
    td::dx_sorted_events<A, long>(k, row, sw);
    for (int j = 0; j < 4; ++j) {
      CHECK(row[j] < n);
      const bool in = row[j] >= t0 && row[j] < e;
      if (key[j] >= 0 && key[j] < e - t0) {  // a row event of the tile: the same row and weight
        CHECK(in);
        CHECK(row[j] - t0 == key[j]);
        CHECK(sw[j] == w[j]);
        ++rows_seen;
      } else if (in) {
        CHECK(false);  // a sorted row event in the tile that dx_events drops
      }
    }
    A cw = 0;
    const bool has = td::dx_sorted_carry<A, long>(k, e, cw);
    int carry_slot = -1;
    for (int j = 0; j < 4; ++j)
      if (key[j] == e - t0) carry_slot = j;
    if (has) {
      ++carries;
      // dx_events keeps the carry of tokens meeting the tile; a token whose taps straddle e always does
      CHECK(used);
      REQUIRE(carry_slot >= 0);
      CHECK(cw == doctest::Approx(w[carry_slot]).epsilon(1e-15));
    } else if (carry_slot >= 0) {
      CHECK(td::taps_min(k) >= t0);  // dx_events' carry from a token whose taps all lie at or past e: none here
      CHECK(td::taps_min(k) < e);
    }
  }
  CHECK(carries > 1000);
  CHECK(rows_seen > 5000);
  CHECK(td::dx_sorted_key_bits(1) == 1);
  CHECK(td::dx_sorted_key_bits(2) == 2);
  CHECK(td::dx_sorted_key_bits(3) == 2);
  CHECK(td::dx_sorted_key_bits(4) == 3);
  CHECK(td::dx_sorted_key_bits(std::uint64_t(16) * 16 * 4096) == 21);
  CHECK(td::dx_sorted_sentinel(21) == (std::uint64_t(1) << 21) - 1);
}

TEST_CASE("emulated sorted-events dx matches the reference: random shapes, both vector widths, float and double") {
  std::mt19937_64 rng(2025);
  for (int i = 0; i < draws(24); ++i) {
    // T to 2400: blocks of dx_sorted_tiles_per_block tiles span 1024 rows (512 for double), so the carry at a
    // block's end needs T past them
    const ref::problem pb = random_dx_problem(rng, i, 2400, 600);
    const int fvec = pb.R() % 4 == 0 ? 4 : 1, dvec = pb.R() % 2 == 0 ? 2 : 1;
    check_emulation<float>(pb, 1.0, 400 + i, fvec, 0, true);
    check_emulation<double>(pb, 1.0, 500 + i, dvec, 0, true);
    if (pb.R() % 8 == 0) check_emulation<float>(pb, 1.0, 600 + i, 8, 0, true);
  }
}

TEST_CASE("emulated sorted-events dx: windows far beyond max_offset, huge L and M, clamped edges") {
  ref::problem pb;
  pb.T = 600, pb.B = 1, pb.C = 16, pb.H = 1, pb.L = 40, pb.M = 30;
  check_emulation<float>(pb, 6.0, 7, 4, 0, true);  // windows reach 240 tokens
  pb.causal = true, pb.M = 0;
  check_emulation<float>(pb, 6.0, 8, 4, 0, true);
  ref::problem big;
  big.T = 3000, big.B = 1, big.C = 70, big.H = 1, big.L = 1200, big.M = 900, big.lengths = {2900};
  check_emulation<float>(big, 1.0, 99, 1, 0, true);
  check_emulation<double>(big, 1.0, 99, 2, 0, true);
  ref::problem edge;  // most windows clamped at both ends: rows 0 and n - 1 hold hundreds of events each
  edge.T = 1300, edge.B = 2, edge.C = 128, edge.H = 2, edge.L = 2000, edge.M = 2000, edge.lengths = {1300, 333};
  check_emulation<float>(edge, 1.0, 97, 8, 0, true);
  check_emulation<double>(edge, 1.0, 96, 2, 0, true);
}

TEST_CASE("emulated CUDA dx, event and sorted-events paths: integer bounds (offsets 0 and 1) and many narrow heads") {
  ref::problem pb;
  pb.T = 300, pb.B = 2, pb.C = 64, pb.H = 64, pb.L = 5, pb.M = 7;  // 64 heads in one block: short tiles
  std::mt19937_64 rng(3);
  check_emulation<float>(pb, 1.0, 3, 1);
  check_emulation<float>(pb, 1.0, 3, 1, 0, true);
  ref::problem q;
  q.T = 200, q.B = 1, q.C = 32, q.H = 2, q.L = 6, q.M = 6;
  const vec od = uniform_vec(rng, q.o_size(), 0.0, 1.0);
  std::vector<float> o(od.begin(), od.end());
  for (size_t i = 0; i < o.size(); i += 3) o[i] = (i % 2) ? 1.0f : 0.0f;
  const vec dyd = normal_vec(rng, q.x_size());
  const std::vector<float> dy(dyd.begin(), dyd.end());
  vec dx_ref, do_ref;
  ref::window_backward(q, vec(q.x_size(), 0.0), vec(o.begin(), o.end()), vec(dy.begin(), dy.end()), dx_ref, do_ref);
  for (bool sorted : {false, true}) {
    const vec dx = sorted ? emulate_dx_sorted<float>(q, o, dy, 4) : emulate_dx<float>(q, o, dy, 4);
    const char* what = sorted ? "integer bounds, sorted events" : "integer bounds";
    TT_CHECK_CLOSE(what, dx, dx_ref, 2e-5, dx_scale(dx_ref, vec(dy.begin(), dy.end())));
  }
}

}

// The cases below, up to TEST_SUITE_END, belong to the same ctest entry (they ran in none before 2026-12-01).
TEST_SUITE_BEGIN("cuda_tiles");

// ---- tensor-core tiles of the offset GEMMs (agent_dw_tc.cuh) ----------------------------------------------
// One warp's m16n8k8 products emulated from detail::mma_m16n8k8's fragment coordinates: each fragment
// element must name a distinct matrix element, and the offset path's column order (W staged at
// dx_tc_position, dx read as 8 consecutive channels per lane) must give dx + dz W, channel by channel.

namespace {
using mma = td::mma_m16n8k8;

// d += a b for one warp: fragments gathered into 16 x 8, 8 x 8 and 16 x 8 matrices by their coordinates.
void emulate_mma(double (&d)[32][4], const double (&a)[32][4], const double (&b)[32][2]) {
  double A[16][8] = {}, Bm[8][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int e = 0; e < 4; ++e) A[mma::a_row(l, e)][mma::a_k(l, e)] = a[l][e];
    for (int e = 0; e < 2; ++e) Bm[mma::b_k(l, e)][mma::b_col(l, e)] = b[l][e];
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e)
      for (int k = 0; k < 8; ++k) d[l][e] += A[mma::d_row(l, e)][k] * Bm[k][mma::d_col(l, e)];
}
}  // namespace

// One warp's ldmatrix.x4 from a row-major tile of 16-bit elements (stride ld): lane 8 j + r points at row
// row(8 j + r), column k(8 j + r); register j of lane l gets that matrix's row l / 4, columns 2 (l % 4), + 1.
template <class RowF, class KF>
void emulate_ldmatrix(const std::vector<double>& tile, int ld, int row0, int k0, RowF row, KF k, double (&reg)[32][4][2]) {
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < 4; ++j) {
      const int src = 8 * j + l / 4;  // the lane that gave matrix j's row l / 4
      for (int h = 0; h < 2; ++h)
        reg[l][j][h] = tile[size_t((row0 + row(src)) * ld + k0 + k(src) + 2 * (l % 4) + h)];
    }
}

// One mma.sync m16n8k16 of a warp, emulated: a from the x ldmatrix registers fa, b from registers 2 half and
// 2 half + 1 of the W ldmatrix registers fb (one 8-column tile of a pair), gathered by the PTX fragment
// coordinates; d += a b into column tile j of the lanes' accumulators.
template <int NT>
void emulate_mma16816(double (&acc)[32][NT][4], int j, const double (&fa)[32][4][2], const double (&fb)[32][4][2],
                      int half) {
  using m16 = td::mma_m16n8k16;
  double A[16][16] = {}, Bm[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) A[m16::a_row(l, i)][m16::a_k(l, i) + h] = fa[l][i][h];
    for (int i = 0; i < 2; ++i)
      for (int h = 0; h < 2; ++h) Bm[m16::b_k(l, i) + h][m16::b_col(l, i)] = fb[l][2 * half + i][h];
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e)
      for (int k = 0; k < 16; ++k) acc[l][j][e] += A[td::mma_m16n8k8::d_row(l, e)][k] * Bm[k][td::mma_m16n8k8::d_col(l, e)];
}

TEST_CASE("projection's ldmatrix + m16n8k16 fragments: one warp's 16 rows x 32 offsets emulated == x W^T") {
  // x: 16 rows x K, W: 32 offsets x K (both row-major, k contiguous, stride ld as the kernel's ldx = K + 8).
  constexpr int K = 64, ld = K + 8, BN = 32;
  std::mt19937_64 rng(77);
  const vec xd = uniform_vec(rng, size_t(16 * ld), -1.0, 1.0), wd = uniform_vec(rng, size_t(BN * ld), -1.0, 1.0);
  double acc[32][BN / 8][4] = {};
  for (int k0 = 0; k0 < K; k0 += 16) {
    double fa[32][4][2];
    emulate_ldmatrix(xd, ld, 0, k0, td::ldsm_a_row, td::ldsm_a_k, fa);
    for (int jp = 0; jp < BN / 16; ++jp) {
      double fb[32][4][2];
      emulate_ldmatrix(wd, ld, 16 * jp, k0, td::ldsm_b_row, td::ldsm_b_k, fb);
      for (int half = 0; half < 2; ++half) emulate_mma16816(acc, 2 * jp + half, fa, fb, half);
    }
  }
  // The kernel stores d (g + 8 (e / 2), 2 q + e % 2) of column tile j: z[row][8 j + col] must be x W^T.
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < BN / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        const int row = td::mma_m16n8k8::d_row(l, e), col = 8 * j + td::mma_m16n8k8::d_col(l, e);
        double want = 0.0;
        for (int k = 0; k < K; ++k) want += xd[size_t(row * ld + k)] * wd[size_t(col * ld + k)];
        CHECK(acc[l][j][e] == doctest::Approx(want).epsilon(1e-12));
      }
}

TEST_CASE("projection's cp.async ring (16-bit x): swizzled 64-byte rows staged, ldmatrix'd and multiplied == x W^T, conflict-free") {
  // agent_project.cuh, project_tile::run_async, one stage (k tile of 32) of BM = 128 x rows and BN = 32 W rows:
  // thread tid copies x row tid / 2, chunks 2 (tid % 2) and + 1, and (tid < 4 BN) W row tid / 4, chunk tid % 4;
  // lane l of warp w reads x at swizzle64_byte(16 w + ldsm_a_row(l), ldsm_a_k(l) / 8) ^ 32 ks and W at
  // x_bytes + swizzle64_byte(ldsm_b_row(l), ldsm_b_k(l) / 8) ^ 32 ks, + 1024 per pair of column tiles.
  constexpr int BM = 128, BN = 32, KA = 32, threads = 256, x_bytes = BM * 64, stage_bytes = (BM + BN) * 64;
  std::mt19937_64 rng(79);
  const vec xd = uniform_vec(rng, size_t(BM * KA), -1.0, 1.0), wd = uniform_vec(rng, size_t(BN * KA), -1.0, 1.0);
  std::vector<double> mem(size_t(stage_bytes / 2), std::numeric_limits<double>::quiet_NaN());
  std::vector<int> written(size_t(stage_bytes / 16), 0);
  auto copy = [&](int at, const vec& src, int row, int chunk) {  // 16 bytes = 8 elements of a row
    CHECK(at % 16 == 0);
    ++written[size_t(at / 16)];
    for (int e = 0; e < 8; ++e) mem[size_t(at / 2 + e)] = src[size_t(row * KA + 8 * chunk + e)];
  };
  for (int part = 0; part < 3; ++part) {  // the three copy instructions: x chunk 0, x chunk 1, W
    for (int t0 = 0; t0 < threads; t0 += 8) {
      std::array<int, 8> groups{};  // 16-byte bank groups of a 128-byte wavefront, 8 consecutive threads
      int active = 0;
      for (int tid = t0; tid < t0 + 8; ++tid) {
        int at = -1;
        if (part < 2) {
          at = td::swizzle64_byte(tid / 2, 2 * (tid % 2) + part);
          copy(at, xd, tid / 2, 2 * (tid % 2) + part);
        } else if (tid < 4 * BN) {
          at = x_bytes + td::swizzle64_byte(tid / 4, tid % 4);
          copy(at, wd, tid / 4, tid % 4);
        }
        if (at >= 0) ++groups[size_t((at / 16) % 8)], ++active;
      }
      for (int g = 0; g < 8; ++g) CHECK(groups[size_t(g)] <= 1);
      CHECK((active == 0 || active == 8));
    }
  }
  for (int w = 0; w < stage_bytes / 16; ++w) CHECK(written[size_t(w)] == 1);  // every chunk once
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 2; ++c) CHECK(td::swizzle64_byte(r, c + 2) == (td::swizzle64_byte(r, c) ^ 32));
  for (int warp = 0; warp < 8; ++warp) {
    double acc[32][BN / 8][4] = {};
    for (int ks = 0; ks < 2; ++ks) {
      // ldmatrix.x4 at byte addresses: register j of lane l = 2 elements at (address of lane 8 j + l / 4) + 4 (l % 4)
      auto ldsm = [&](auto addr, double (&reg)[32][4][2]) {
        for (int j = 0; j < 4; ++j) {
          std::array<int, 8> groups{};
          for (int r = 0; r < 8; ++r) ++groups[size_t((addr(8 * j + r) / 16) % 8)];
          for (int g = 0; g < 8; ++g) CHECK(groups[size_t(g)] == 1);  // one wavefront per matrix
        }
        for (int l = 0; l < 32; ++l)
          for (int j = 0; j < 4; ++j)
            for (int h = 0; h < 2; ++h) reg[l][j][h] = mem[size_t((addr(8 * j + l / 4) + 4 * (l % 4)) / 2 + h)];
      };
      double fa[32][4][2];
      ldsm([&](int l) { return td::swizzle64_byte(16 * warp + td::ldsm_a_row(l), td::ldsm_a_k(l) / 8) ^ (32 * ks); }, fa);
      for (int jp = 0; jp < BN / 16; ++jp) {
        double fb[32][4][2];
        ldsm([&](int l) {
          return ((x_bytes + td::swizzle64_byte(td::ldsm_b_row(l), td::ldsm_b_k(l) / 8)) ^ (32 * ks)) + 1024 * jp;
        }, fb);
        for (int half = 0; half < 2; ++half) emulate_mma16816(acc, 2 * jp + half, fa, fb, half);
      }
    }
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < BN / 8; ++j)
        for (int e = 0; e < 4; ++e) {
          const int row = 16 * warp + td::mma_m16n8k8::d_row(l, e), col = 8 * j + td::mma_m16n8k8::d_col(l, e);
          double want = 0.0;
          for (int k = 0; k < KA; ++k) want += xd[size_t(row * KA + k)] * wd[size_t(col * KA + k)];
          CHECK(acc[l][j][e] == doctest::Approx(want).epsilon(1e-12));
        }
  }
}

// ldmatrix.x4.trans: lane 8 j + r points at row row(8 j + r), column col(8 j + r) (8 consecutive elements);
// register j of lane l gets rows 2 (l % 4) and + 1 of matrix j at column l / 4.
template <class RowF, class ColF>
void emulate_ldmatrix_trans(const std::vector<double>& tile, int ld, int row0, int col0, RowF row, ColF col,
                            double (&reg)[32][4][2]) {
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h) {
        const int src = 8 * j + 2 * (l % 4) + h;  // the lane that gave that row of matrix j
        reg[l][j][h] = tile[size_t((row0 + row(src)) * ld + col0 + col(src) + l / 4)];
      }
}

TEST_CASE("bfloat16 dW's ldmatrix.trans + m16n8k16 fragments: one warp's 32 offsets x 32 channels == dz^T x") {
  // dz: 32 rows (k) x 32 offsets, x: 32 rows (k) x 256 channels, as the kernel stages them (k the row).
  constexpr int KR = 32, PT = 32, CH = 256, ldd = PT + 8, ldx = CH + 8;
  std::mt19937_64 rng(78);
  const vec dz = uniform_vec(rng, size_t(KR * ldd), -1.0, 1.0), x = uniform_vec(rng, size_t(KR * ldx), -1.0, 1.0);
  using m16 = td::mma_m16n8k16;
  for (const int warp : {0, 5, 7}) {
    double acc[PT / 16][4][32][4] = {};
    for (int k0 = 0; k0 < KR; k0 += 16) {
      double b[4][32][2][2];  // [n tile][lane][register][half]
      for (int np = 0; np < 2; ++np) {
        double r4[32][4][2];
        emulate_ldmatrix_trans(x, ldx, k0, warp * 32 + np * 16, td::ldsm_t_b_k, td::ldsm_t_b_n, r4);
        for (int l = 0; l < 32; ++l)
          for (int h = 0; h < 2; ++h) {
            b[2 * np][l][0][h] = r4[l][0][h], b[2 * np][l][1][h] = r4[l][1][h];
            b[2 * np + 1][l][0][h] = r4[l][2][h], b[2 * np + 1][l][1][h] = r4[l][3][h];
          }
      }
      for (int m = 0; m < PT / 16; ++m) {
        double fa[32][4][2];
        emulate_ldmatrix_trans(dz, ldd, k0, m * 16, td::ldsm_t_a_k, td::ldsm_t_a_m, fa);
        for (int n = 0; n < 4; ++n) {
          double A[16][16] = {}, Bm[16][8] = {};
          for (int l = 0; l < 32; ++l) {
            for (int i = 0; i < 4; ++i)
              for (int h = 0; h < 2; ++h) A[m16::a_row(l, i)][m16::a_k(l, i) + h] = fa[l][i][h];
            for (int i = 0; i < 2; ++i)
              for (int h = 0; h < 2; ++h) Bm[m16::b_k(l, i) + h][m16::b_col(l, i)] = b[n][l][i][h];
          }
          for (int l = 0; l < 32; ++l)
            for (int e = 0; e < 4; ++e)
              for (int kk = 0; kk < 16; ++kk)
                acc[m][n][l][e] += A[td::mma_m16n8k8::d_row(l, e)][kk] * Bm[kk][td::mma_m16n8k8::d_col(l, e)];
        }
      }
    }
    // The kernel writes accumulator e of tiles (m, n) to offset 16 m + d_row, channel 32 warp + 8 n + d_col.
    for (int m = 0; m < PT / 16; ++m)
      for (int n = 0; n < 4; ++n)
        for (int l = 0; l < 32; ++l)
          for (int e = 0; e < 4; ++e) {
            const int p = 16 * m + td::mma_m16n8k8::d_row(l, e), c = 32 * warp + 8 * n + td::mma_m16n8k8::d_col(l, e);
            double want = 0.0;
            for (int kk = 0; kk < KR; ++kk) want += dz[size_t(kk * ldd + p)] * x[size_t(kk * ldx + c)];
            CHECK(acc[m][n][l][e] == doctest::Approx(want).epsilon(1e-12));
          }
  }
}

TEST_CASE("mma m16n8k8 fragments: every lane element names a distinct matrix element") {
  int a_seen[16][8] = {}, b_seen[8][8] = {}, d_seen[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int e = 0; e < 4; ++e) ++a_seen[mma::a_row(l, e)][mma::a_k(l, e)];
    for (int e = 0; e < 2; ++e) ++b_seen[mma::b_k(l, e)][mma::b_col(l, e)];
    for (int e = 0; e < 4; ++e) ++d_seen[mma::d_row(l, e)][mma::d_col(l, e)];
  }
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c) {
      CHECK(a_seen[r][c] == 1);
      CHECK(d_seen[r][c] == 1);
      if (r < 8) CHECK(b_seen[r][c] == 1);
    }
}

TEST_CASE("float projection's W split at staging: each lane's b operands, hi and lo, are one 8-byte load, conflict-free") {
  // agent_project.cuh, 3xTF32: a staged W row is 2 (K + 4) words; the thread staging 4 consecutive k of a row
  // writes hi of k at tf32_b_pair_word(k), lo 8 words after; lane (g, q) of n tile j, k step k0 reads the two
  // 8-byte words at row (8 j + g) * 2 (K + 4) + tf32_b_pair_word(k0) + 2 q (hi) and + 8 (lo).
  constexpr int K = 32, BN = 32, ldw = 2 * (K + 4);
  std::vector<int> owner(size_t(BN * ldw), -1);  // which (row, k, part) a staged word holds
  for (int n = 0; n < BN; ++n)
    for (int c0 = 0; c0 < K; c0 += 4)  // one thread's 16-byte vector of W: k = c0 .. c0 + 3
      for (int k = c0; k < c0 + 4; ++k)
        for (int part = 0; part < 2; ++part) {
          const int w = n * ldw + td::tf32_b_pair_word(k) + 8 * part;
          CHECK(td::tf32_b_pair_word(k) + 8 * part < ldw - 8);  // inside the row, before its 8 words of skew
          CHECK(owner[size_t(w)] == -1);                       // no two elements share a word
          owner[size_t(w)] = (n * K + k) * 2 + part;
        }
  for (int j = 0; j < BN / 8; ++j)
    for (int k0 = 0; k0 < K; k0 += 8) {
      for (int part = 0; part < 2; ++part) {
        std::array<int, 32> word{};
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, q = l % 4;
          const int at = (8 * j + g) * ldw + td::tf32_b_pair_word(k0) + 2 * q + 8 * part;
          CHECK(at % 2 == 0);  // an aligned 8-byte load
          for (int e = 0; e < 2; ++e) {
            // register e of the pair is b element e: k = k0 + b_k(l, e), column (W row) 8 j + b_col(l, e)
            const int n = 8 * j + mma::b_col(l, e), k = k0 + mma::b_k(l, e);
            CHECK(owner[size_t(at + e)] == (n * K + k) * 2 + part);
          }
          word[size_t(l)] = at;
        }
        // 8-byte loads: each half warp is one wavefront when its 16 loads cover distinct bank pairs
        for (int h = 0; h < 2; ++h) {
          std::array<int, 32> bank_use{};
          for (int l = 16 * h; l < 16 * h + 16; ++l) {
            ++bank_use[size_t(word[size_t(l)] % 32)];
            ++bank_use[size_t((word[size_t(l)] + 1) % 32)];
          }
          for (int b = 0; b < 32; ++b) CHECK(bank_use[size_t(b)] == 1);
        }
      }
    }
}

TEST_CASE("offset path column order: a lane's accumulators are 8 consecutive channels; emulated tile == dx + dz W") {
  // The order is a permutation of a warp's 32 channels, and dx_tc_position inverts dx_tc_channel.
  int seen[32] = {};
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 8; ++j) {
      const int c = td::dx_tc_channel(n, j);
      REQUIRE(c >= 0);
      REQUIRE(c < 32);
      ++seen[c];
      CHECK(td::dx_tc_position(c) == 8 * n + j);
    }
  for (int c = 0; c < 32; ++c) CHECK(seen[c] == 1);
  // Lane l's accumulator element e of tile n is channel 8 (l % 4) + 2 n + e % 2 of row d_row(l, e): the
  // kernel loads and stores those 8 channels of a row as one 16-byte vector.
  for (int l = 0; l < 32; ++l)
    for (int n = 0; n < 4; ++n)
      for (int e = 0; e < 4; ++e) CHECK(td::dx_tc_channel(n, mma::d_col(l, e)) == 8 * (l % 4) + 2 * n + e % 2);

  // One warp's 16 rows x 32 channels with P = 16 offsets (two k steps), as offset_path_tc_block runs it.
  std::mt19937_64 g(2024);
  std::uniform_real_distribution<double> ud(-1.0, 1.0);
  constexpr int P = 16, rows = 16, ch = 32;
  double W[P][ch], dz[rows][P], dx[rows][ch];
  for (auto& r : W)
    for (double& v : r) v = ud(g);
  for (auto& r : dz)
    for (double& v : r) v = ud(g);
  for (auto& r : dx)
    for (double& v : r) v = ud(g);
  double ws[P][ch];  // W staged in mma column order
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < ch; ++c) ws[p][td::dx_tc_position(c)] = W[p][c];
  double acc[4][32][4];  // [tile n][lane][element], loaded from dx by the contiguous mapping
  for (int n = 0; n < 4; ++n)
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) acc[n][l][e] = dx[mma::d_row(l, e)][8 * (l % 4) + 2 * n + e % 2];
  for (int k0 = 0; k0 < P; k0 += 8) {
    double a[32][4];
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) a[l][e] = dz[mma::a_row(l, e)][k0 + mma::a_k(l, e)];
    for (int n = 0; n < 4; ++n) {
      double b[32][2];
      for (int l = 0; l < 32; ++l)
        for (int e = 0; e < 2; ++e) b[l][e] = ws[k0 + mma::b_k(l, e)][8 * n + mma::b_col(l, e)];
      emulate_mma(acc[n], a, b);
    }
  }
  for (int n = 0; n < 4; ++n)
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) {
        const int r = mma::d_row(l, e), c = 8 * (l % 4) + 2 * n + e % 2;
        double want = dx[r][c];
        for (int p = 0; p < P; ++p) want += dz[r][p] * W[p][c];
        CHECK(acc[n][l][e] == doctest::Approx(want).epsilon(1e-12));
      }
}

namespace {
// One block's fused offset path for lanes owning cv channels x rv rows (16-bit: 8 x 4, float: 4 x 8), run the
// way add_fused_offset_path runs it: W^T and dz staged at their positions, every warp's m16n8k8 products
// emulated from the fragment coordinates, the lane's own dx elements as accumulators.
void fused_offset_path_case(int cv, int rv) {
  CAPTURE(cv);
  CAPTURE(rv);
  const int wpr = 64 / (8 * cv);  // warps sharing a row block (1 for 16-bit, 2 for float)
  REQUIRE(8 * cv * wpr == 64);
  const int block_rows = 4 * rv * (8 / wpr);  // 128
  REQUIRE(block_rows == 128);
  // The orders are permutations; the per-lane shortcuts the kernel uses follow from them.
  std::vector<int> ch_seen(size_t(8 * cv)), row_seen(size_t(4 * rv)), off_seen(32), apos(size_t(td::dxf_chunk_floats)),
      bpos(size_t(td::dxf_block_b_floats(rv)));
  for (int m = 0; m < cv / 2; ++m)
    for (int i = 0; i < 16; ++i) ++ch_seen[size_t(td::dxf_channel(cv, m, i))];
  for (int n = 0; n < rv / 2; ++n)
    for (int j = 0; j < 8; ++j) ++row_seen[size_t(td::dxf_row(rv, n, j))];
  for (int s = 0; s < 4; ++s)
    for (int k = 0; k < 8; ++k) ++off_seen[size_t(td::dxf_offset(s, k))];
  for (int v : ch_seen) CHECK(v == 1);
  for (int v : row_seen) CHECK(v == 1);
  for (int v : off_seen) CHECK(v == 1);
  for (int c = 0; c < 64; ++c)
    for (int p = 0; p < 32; ++p) {
      const int at = td::dxf_a_position(cv, c, p);
      REQUIRE(at >= 0);
      REQUIRE(at < td::dxf_chunk_floats);
      ++apos[size_t(at)];
      if (c % cv == 0)
        for (int u = 0; u < cv; ++u) CHECK(td::dxf_a_position(cv, c + u, p) == at + td::dxf_a_step(u));
    }
  for (int v : apos) CHECK(v == 1);
  for (int r = 0; r < 4 * rv; ++r)
    for (int p = 0; p < 32; ++p) {
      const int at = td::dxf_b_position(rv, r, p);
      REQUIRE(at >= 0);
      REQUIRE(at < td::dxf_block_b_floats(rv));
      ++bpos[size_t(at)];
      if (p % 4 == 0) {  // a staged float4: two adjacent pairs, 64 floats apart
        CHECK(td::dxf_b_position(rv, r, p + 1) == at + 1);
        CHECK(td::dxf_b_position(rv, r, p + 2) == at + 64);
        CHECK(td::dxf_b_position(rv, r, p + 3) == at + 65);
      }
    }
  for (int v : bpos) CHECK(v == 1);
  for (int l = 0; l < 32; ++l) {
    const int v = l / 4, grp = l % 4;  // the dx kernel's gather role of lane l within its warp's channels and rows
    for (int m = 0; m < cv / 2; ++m)
      for (int n = 0; n < rv / 2; ++n)
        for (int e = 0; e < 4; ++e) {
          CHECK(td::dxf_channel(cv, m, mma::d_row(l, e)) == cv * v + td::dxf_d_channel(m, e));
          CHECK(td::dxf_row(rv, n, mma::d_col(l, e)) == rv * grp + td::dxf_d_row(n, e));
        }
    for (int s = 0; s < 4; ++s) {
      for (int e = 0; e < 2; ++e) CHECK(td::dxf_offset(s, mma::b_k(l, e)) == 8 * grp + td::dxf_b_offset(s, e));
      for (int n = 0; n < rv / 2; ++n)
        for (int e = 0; e < 2; ++e)
          CHECK(td::dxf_b_position(rv, td::dxf_row(rv, n, mma::b_col(l, e)), td::dxf_offset(s, mma::b_k(l, e))) ==
                ((n * 4 + s) * 32 + l) * 2 + e);
      for (int h = 0; h < wpr; ++h)
        for (int m = 0; m < cv / 2; ++m)
          for (int e = 0; e < 4; ++e)
            CHECK(td::dxf_a_position(cv, 8 * cv * h + td::dxf_channel(cv, m, mma::a_row(l, e)),
                                     td::dxf_offset(s, mma::a_k(l, e))) == td::dxf_a_fragment(cv, h, m, s, l) + e);
    }
  }

  // The block: 128 rows x 64 channels, P = 32; warp w has channel half w % wpr and row block w / wpr.
  std::mt19937_64 g(77 + std::uint64_t(cv));
  std::uniform_real_distribution<double> ud(-1.0, 1.0);
  constexpr int P = 32;
  std::vector<double> W(P * 64), dz(128 * P), dx(128 * 64);
  for (double& v : W) v = ud(g);
  for (double& v : dz) v = ud(g);
  for (double& v : dx) v = ud(g);
  std::vector<double> wf(size_t(td::dxf_chunk_floats)), zf(size_t(8 / wpr * td::dxf_block_b_floats(rv)));
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < 64; ++c) wf[size_t(td::dxf_a_position(cv, c, p))] = W[size_t(p * 64 + c)];
  for (int row = 0; row < 128; ++row)
    for (int p = 0; p < P; ++p)
      zf[size_t((row / (4 * rv)) * td::dxf_block_b_floats(rv) + td::dxf_b_position(rv, row % (4 * rv), p))] =
          dz[size_t(row * P + p)];
  std::vector<double> out(dx);  // out[row * 64 + channel], updated lane by lane
  for (int w = 0; w < 8; ++w) {
    const int h = w % wpr, rb = w / wpr;
    auto row_of = [&](int l, int r) { return rb * 4 * rv + rv * (l % 4) + r; };
    auto ch_of = [&](int l, int i) { return 8 * cv * h + cv * (l / 4) + i; };
    for (int n = 0; n < rv / 2; ++n)
      for (int m = 0; m < cv / 2; ++m) {
        double acc[32][4];
        for (int l = 0; l < 32; ++l)
          for (int e = 0; e < 4; ++e)
            acc[l][e] = out[size_t(row_of(l, td::dxf_d_row(n, e)) * 64 + ch_of(l, td::dxf_d_channel(m, e)))];
        for (int s = 0; s < 4; ++s) {
          double a[32][4], b[32][2];
          for (int l = 0; l < 32; ++l) {
            for (int e = 0; e < 4; ++e) a[l][e] = wf[size_t(td::dxf_a_fragment(cv, h, m, s, l) + e)];
            for (int e = 0; e < 2; ++e)
              b[l][e] = zf[size_t(rb * td::dxf_block_b_floats(rv) + ((n * 4 + s) * 32 + l) * 2 + e)];
          }
          emulate_mma(acc, a, b);
        }
        for (int l = 0; l < 32; ++l)
          for (int e = 0; e < 4; ++e)
            out[size_t(row_of(l, td::dxf_d_row(n, e)) * 64 + ch_of(l, td::dxf_d_channel(m, e)))] = acc[l][e];
      }
  }
  for (int row = 0; row < 128; ++row)
    for (int c = 0; c < 64; ++c) {
      double want = dx[size_t(row * 64 + c)];
      for (int p = 0; p < P; ++p) want += dz[size_t(row * P + p)] * W[size_t(p * 64 + c)];
      CHECK(out[size_t(row * 64 + c)] == doctest::Approx(want).epsilon(1e-12));
    }
}
}  // namespace

TEST_CASE("dx kernel's fused offset path: a lane's accumulators are its own rows x channels; emulated block == dx + W^T dz") {
  SUBCASE("16-bit x: 8 channels x 4 rows per lane") { fused_offset_path_case(8, 4); }
  SUBCASE("float: 4 channels x 8 rows per lane") { fused_offset_path_case(4, 8); }
}

// ---- shared-memory layouts against a bank model (32 banks of 4 bytes; one warp's 4-byte accesses; the
// double case, 8-byte words, is checked as a permutation only) ------------------------------------------

namespace {
// Distinct banks among 32 word addresses: 32 means one wavefront.
int distinct_banks(const std::array<int, 32>& words) {
  std::array<bool, 32> hit{};
  int n = 0;
  for (int w : words)
    if (!hit[static_cast<std::size_t>(w % 32)]) hit[static_cast<std::size_t>(w % 32)] = true, ++n;
  return n;
}
}  // namespace

TEST_CASE("dx kernel: the gather roles cover every (vector, row group) of the block once") {
  // (slots, mma): 16-bit and float vectors in the fused path's roles; double vectors and scalars not.
  struct shape {
    int slots;
    bool mma;
  };
  for (const shape sh : {shape{8, true}, shape{16, true}, shape{32, false}, shape{64, false}}) {
    CAPTURE(sh.slots);
    const int warps = 8, groups = 256 / sh.slots;
    std::vector<int> seen(static_cast<std::size_t>(sh.slots * groups), 0);
    for (int w = 0; w < warps; ++w)
      for (int l = 0; l < 32; ++l) {
        const td::dx_role r = td::dx_gather_role(w, l, sh.slots, sh.mma);
        REQUIRE(r.v >= 0);
        REQUIRE(r.v < sh.slots);
        REQUIRE(r.g >= 0);
        REQUIRE(r.g < groups);
        ++seen[static_cast<std::size_t>(r.g * sh.slots + r.v)];
        if (sh.mma) {  // the fragment orders: lane / 4 the vector, lane % 4 the row group, within the warp's
          CHECK(r.v % 8 == l / 4);
          CHECK(r.g % 4 == l % 4);
        }
      }
    for (int c : seen) CHECK(c == 1);
  }
}

TEST_CASE("dx staged dy: every (row, vector) has its own 16 bytes; staging a row and reading rows of distinct r % 8 / 2 are one wavefront") {
  // 16-byte accesses: a quarter warp (8 lanes) is one wavefront when its 8 slots differ modulo 8.
  const unsigned at = 128 * 3;
  const int rows = 200;
  std::vector<int> seen(size_t(rows) * 8, 0);
  for (int r = 0; r < rows; ++r) {
    std::array<int, 8> quad{};
    for (int v = 0; v < 8; ++v) {
      const unsigned byte = td::dx_stage_byte(td::dx_stage_key(at, r), v);
      REQUIRE(byte % 16 == 0);
      REQUIRE(byte >= at);
      REQUIRE(byte < at + 128u * unsigned(rows));
      ++seen[(byte - at) / 16];
      quad[size_t(v)] = static_cast<int>(byte / 16 % 8);
    }
    std::sort(quad.begin(), quad.end());  // staging: 8 threads write row r's 8 vectors
    for (int v = 0; v < 8; ++v) CHECK(quad[size_t(v)] == v);
    CHECK(td::dx_stage_key(at, r + 32) == td::dx_stage_key(at, r) + 32 * 128);  // the kernel's pointer step
  }
  for (int c : seen) CHECK(c == 1);
  // The gather: lanes 8q .. 8q + 7 are vectors 2q, 2q + 1 of its warp's 4 row groups (lane / 4, lane % 4),
  // each reading the row of its own event.
  for (int q = 0; q < 4; ++q)
    for (int base = 0; base < 64; base += 5) {
      int rsel[4];
      for (int g = 0; g < 4; ++g) rsel[g] = base + 8 * g + 2 * ((g + base) % 4);  // r % 8 / 2 distinct
      std::array<int, 8> quad{};
      for (int l = 0; l < 8; ++l) {
        const int lane = 8 * q + l, v = lane / 4, g = lane % 4;
        quad[size_t(l)] = static_cast<int>(td::dx_stage_byte(td::dx_stage_key(at, rsel[g]), v) / 16 % 8);
      }
      std::sort(quad.begin(), quad.end());
      for (int v = 0; v < 8; ++v) CHECK(quad[size_t(v)] == v);
    }
  // Rows of the stage: all of a batch when they fit, what fits down to the floor, the floor always.
  CHECK(td::dx_stage_rows(1000, 256, 64) == 256);
  CHECK(td::dx_stage_rows(200, 256, 64) == 200);
  CHECK(td::dx_stage_rows(10, 256, 64) == 64);
  CHECK(td::dx_stage_rows(0, 32, 64) == 32);
  CHECK(td::dx_tokens_per_round(256, 4) == 64);
  CHECK(td::dx_tokens_per_round(256, 3) == 85);
}

TEST_CASE("offset-gradient products: each token's slots are a permutation; head-sum reads and writes are conflict-free") {
  for (int cols : {4, 8, 16, 32}) {
    CAPTURE(cols);
    const int tile = 128;
    for (int tok = 0; tok < tile; ++tok) {
      std::vector<int> hits(static_cast<std::size_t>(cols), 0);
      for (int c = 0; c < cols; ++c) ++hits[static_cast<std::size_t>(td::products_slot(tok, c, cols))];
      for (int h : hits) CHECK(h == 1);
    }
    if (cols > 16) continue;  // 8-byte products (double): the 4-byte bank model does not apply
    // Head sums: one thread per token, a warp's 32 consecutive tokens reading column k together.
    for (int base = 0; base < tile; base += 32)
      for (int k = 0; k < cols; ++k) {
        std::array<int, 32> words{};
        for (int l = 0; l < 32; ++l) words[static_cast<std::size_t>(l)] = (base + l) * cols + td::products_slot(base + l, k, cols);
        CHECK(distinct_banks(words) == 32);
      }
    // Writers: lane = token-in-warp * cols + column (32 / cols tokens per warp).
    for (int base = 0; base < tile; base += 32 / cols) {
        std::array<int, 32> words{};
        for (int l = 0; l < 32; ++l) {
          const int tok = base + l / cols, c = l % cols;
          words[static_cast<std::size_t>(l)] = tok * cols + td::products_slot(tok, c, cols);
        }
        CHECK(distinct_banks(words) == 32);
      }
  }
  CHECK(td::products_slot(5, 7, 64) == 7);  // wider than a warp: left alone
}

TEST_SUITE_END();

// ---- the banded dx (agent_window_input_grad_band.cuh), emulated lane by lane ---------------------------
// The kernel's plan and loops (tiles of 128 rows, segments of the tiles' token spans from the device reach,
// each warp's band in k steps of 16 tokens), its stage (band_stage_byte) read by an emulated
// ldmatrix.x4.trans at the kernel's lane addresses, its a fragments built per lane from band_a_token and
// band_weight and split in two pieces of the 16-bit type, the mma products taken through the PTX fragment
// coordinates (mma_m16n8k16 / mma_m16n8k8), the fused offset path's W fragments at band_w_index with dz in
// band_k_perm order, and the kernel's store mapping. A wrong coordinate anywhere moves a weight, a token, a
// channel or an offset, and the result leaves the float64 reference.
#include "talkconv/detail/dx_band.hpp"

namespace {

template <class H>
float round16(float v) {
  return static_cast<float>(H(v));
}
inline float tf32_trunc(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

// The stage of one segment as stage_band_rows writes it (16-bit elements by byte / 2, values of `src`, zero past
// the length, in the padding rows and past cn; NaN where nothing is written: never read).
std::vector<float> band_stage(const ref::problem& pb, const std::vector<float>& src, long b, const channel_block& cb,
                              long seg, long n, int S) {
  std::vector<float> stage(size_t(S + 16) * 64, std::numeric_limits<float>::quiet_NaN());
  for (int j = 0; j < S + 16; ++j)
    for (int v = 0; v < 8; ++v) {
      const bool valid = v < cb.cn / 8 && j < std::min<long>(S, n - seg);
      for (int e = 0; e < 8; ++e)
        stage[td::band_stage_byte(j, v) / 2 + unsigned(e)] = valid ? src[pb.xi(seg + j, b, cb.c0 + 8 * v + e)] : 0.0f;
    }
  return stage;
}

// One k step of one warp for the pair of 8-channel tiles p, as both banded kernels issue it: each lane's
// 8 weights (lane_weights(lane, w): the kernel's band_lane_weights or band_lane_weights_rows) split in two
// pieces of H into a fragments, ldmatrix.x4.trans of the stage at the kernels' lane addresses, and the
// mma products (hi, then lo) through the PTX coordinates into the warp's accumulators.
template <class H, class LaneWeights>
void emulate_band_pair(const std::vector<float>& stage, int j0, int p, const LaneWeights& lane_weights,
                       std::array<std::array<float, 4>, 8>* acc) {
  using mk16 = td::mma_m16n8k16;
  using mk8 = td::mma_m16n8k8;
  double Ahi[16][16], Alo[16][16], Bm[2][16][8];
  for (int l = 0; l < 32; ++l) {
    float w[4][2];
    lane_weights(l, w);
    for (int i = 0; i < 4; ++i)
      for (int h2 = 0; h2 < 2; ++h2) {
        const float wv = td::band_reg_weight(w, i, h2);
        const float ph = round16<H>(wv), pl = round16<H>(wv - ph);
        Ahi[mk16::a_row(l, i)][mk16::a_k(l, i) + h2] = ph;
        Alo[mk16::a_row(l, i)][mk16::a_k(l, i) + h2] = pl;
      }
  }
  // ldmatrix.x4.trans: lane 8 m + r gives row r of matrix m; lane l gets rows 2 (l % 4), + 1 at column l / 4
  // of matrix m in register m (registers 0, 1: b of tile 2p; 2, 3: of tile 2p + 1)
  for (int l = 0; l < 32; ++l)
    for (int m = 0; m < 4; ++m)
      for (int h2 = 0; h2 < 2; ++h2) {
        const int src = 8 * m + 2 * (l % 4) + h2;
        const unsigned byte = td::band_stage_byte(j0 + td::ldsm_t_b_k(src), 2 * p + td::ldsm_t_b_n(src) / 8);
        REQUIRE(byte / 2 < stage.size());
        Bm[m / 2][mk16::b_k(l, m % 2) + h2][mk16::b_col(l, m % 2)] = stage[byte / 2 + unsigned(l / 4)];
      }
  for (int l = 0; l < 32; ++l)
    for (int t2 = 0; t2 < 2; ++t2)
      for (int e = 0; e < 4; ++e)
        for (const auto* Am : {&Ahi, &Alo}) {
          double sum = 0.0;
          for (int k = 0; k < 16; ++k) sum += (*Am)[mk8::d_row(l, e)][k] * Bm[t2][k][mk8::d_col(l, e)];
          float& a = acc[l][size_t(2 * p + t2)][size_t(e)];
          a = float(double(a) + sum);
        }
}

// The banded dx's walk as band_dx_walk does it, shared by both emulations: per block (its state db; block(db)
// stages W) and tile of 128 rows the span of tokens within the device's reach in segments of S tokens
// (segment(db, r0, seg, span_hi, acc) multiplies one), then per warp 1/K, with dz offset_path(db, m0, warp, acc), and
// the store mapping.
using band_acc = std::vector<std::array<std::array<float, 4>, 8>>;  // [warp * 32 + lane][tile][element]
struct dx_band_block {
  long b, n, h_first, rl, rr;
  int nh;
  channel_block cb;
  int pair_head[4];
};
template <class Block, class Segment, class OffsetPath>
vec emulate_band_dx_walk(const ref::problem& pb, const std::vector<float>& o, int S, bool fused, Block&& block,
                         Segment&& segment, OffsetPath&& offset_path) {
  long rl, rr;
  device_reach(pb, o, rl, rr);
  rl = std::min(rl, pb.T), rr = std::min(rr, pb.T);
  const long R = pb.R();
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  vec dx(pb.x_size(), std::numeric_limits<double>::quiet_NaN());
  for (long b = 0; b < pb.B; ++b)
    for (const channel_block& cb : channel_blocks(pb.C, pb.H)) {
      dx_band_block db;
      db.b = b, db.cb = cb, db.n = pb.n(b), db.h_first = cb.c0 / R, db.rl = rl, db.rr = rr;
      db.nh = static_cast<int>((cb.c0 + cb.cn - 1) / R - db.h_first + 1);
      const long n = db.n;
      REQUIRE(cb.cn % 16 == 0);
      for (int p = 0; p < 4; ++p) {
        const int h = R <= 64 ? static_cast<int>(16 * p / R) : 0;
        db.pair_head[p] = h < db.nh ? h : db.nh - 1;
      }
      block(db);
      for (long r0 = 0; r0 < pb.T; r0 += 128) {
        band_acc acc(size_t(8 * 32));
        for (auto& a : acc)
          for (auto& t : a) t.fill(0.0f);
        if (r0 < n) {
          const long span_lo = std::max(r0 - rr, 0L), span_hi = std::min(r0 + 128 + rl, n);
          for (long seg = span_lo; seg < span_hi; seg += S) segment(db, r0, seg, span_hi, acc);
        }
        // epilogue: 1/K, the offset path, the store mapping
        for (int warp = 0; warp < 8; ++warp) {
          const long m0 = r0 + 16 * warp;
          for (int l = 0; l < 32; ++l)
            for (auto& t : acc[size_t(warp * 32 + l)])
              for (float& e : t) e *= inv_k;
          if (fused && m0 < n) offset_path(db, m0, warp, acc);
          for (int l = 0; l < 32; ++l) {
            const int g = l / 4, q = l % 4;
            for (int nt = 0; nt < cb.cn / 8; ++nt)
              for (int hr = 0; hr < 2; ++hr) {
                const long row = m0 + g + 8 * hr;
                if (row >= pb.T) continue;
                for (int c = 0; c < 2; ++c)
                  dx[pb.xi(row, b, cb.c0 + 8 * nt + 2 * q + c)] =
                      row < n ? double(acc[size_t(warp * 32 + l)][size_t(nt)][size_t(2 * hr + c)]) : 0.0;
              }
          }
        }
      }
    }
  return dx;
}

// The band tap (make_band_tap) of token u, head h of sequence b (valid length n).
td::band_tap<float> band_token_tap(const ref::problem& pb, const std::vector<float>& o, long b, long n, long u, long h) {
  const auto k = td::make_taps<float, long>(u, o[pb.oi(u, b, h)], pb.causal ? 0.0f : o[pb.oi(u, b, pb.H + h)], pb.L, pb.M,
                                            n, pb.causal);
  return td::make_band_tap<float, long>(k, u);
}

// The banded dx kernels' W staging for an aligned W (band_w_vec_item_of<V>: 16 bytes of two rows per item, V
// channels; W is read only when steps > 0, null otherwise): put(s, n, lane, w0, w1) for each fragment an item
// writes, in item order, with the kernel's zeros (channels past cn, offsets past P).
template <int V, class Put>
void stage_w_vec_items(int steps, long P, long C, long c0, long cn, const std::vector<float>* W, Put&& put) {
  for (int i = 0; i < steps * 32 * 8 / V; ++i) {
    const td::band_w_vec_item v = td::band_w_vec_item_of<V>(i);
    const long k = 8 * v.s + 2 * v.q;
    for (int g = v.g0; g < v.g0 + V; ++g) {
      const long ch = 8 * v.n + g;
      float w0 = 0.0f, w1 = 0.0f;
      if (8 * v.n < cn) {
        if (k < P) w0 = (*W)[size_t(k * C + c0 + ch)];
        if (k + 1 < P) w1 = (*W)[size_t((k + 1) * C + c0 + ch)];
      }
      put(v.s, v.n, 4 * g + v.q, w0, w1);
    }
  }
}

// dx (window part / K, plus W^T dz when dz is given) as the banded kernel computes it, before the 16-bit store:
// the walk above, dy staged, the segment's tap table, k steps of 16 tokens, emulated ldmatrix.trans and mma
// products, W's fragments as the kernel stages them and the offset path's TF32 products.
template <class H>
vec emulate_dx_band(const ref::problem& pb, const std::vector<float>& o, const std::vector<float>& dy,
                    const std::vector<float>* W, const std::vector<float>* dz, double max_offset) {
  using mk8 = td::mma_m16n8k8;
  const td::dx_band_plan plan = td::make_dx_band_plan(pb.L, pb.M, pb.causal, max_offset);
  const int S = plan.stage_rows, PR = plan.padded_rows();
  const long P = pb.P();
  const int steps = W ? static_cast<int>((P + 7) / 8) : 0;
  std::vector<float> wfrag;
  return emulate_band_dx_walk(
      pb, o, S, dz != nullptr,
      [&](const dx_band_block& db) {
        // W's b fragments, as the kernel's staging loop writes them for an aligned W (16 bytes of two rows per item;
        // a fragment no item writes stays NaN and fails the comparison)
        wfrag.assign(size_t(steps) * 8 * 32 * 2, std::numeric_limits<float>::quiet_NaN());
        stage_w_vec_items<8>(steps, P, pb.C, db.cb.c0, db.cb.cn, W, [&](int s, int nt, int l, float w0, float w1) {
          wfrag[size_t(td::band_w_index(s, nt, l))] = w0;
          wfrag[size_t(td::band_w_index(s, nt, l)) + 1] = w1;
        });
      },
      [&](const dx_band_block& db, long r0, long seg, long, band_acc& acc) {
        const long n = db.n;
        const std::vector<float> stage = band_stage(pb, dy, db.b, db.cb, seg, n, S);
        std::vector<td::band_tap<float>> taps(size_t(db.nh) * size_t(PR));
        for (int hh = 0; hh < db.nh; ++hh)
          for (int j = 0; j < PR; ++j) {
            const long u = seg + j;
            taps[size_t(hh) * size_t(PR) + size_t(j)] =
                j < S && u < n ? band_token_tap(pb, o, db.b, n, u, db.h_first + hh) : td::null_band_tap<float>();
          }
        for (int warp = 0; warp < 8; ++warp) {
          const long m0 = r0 + 16 * warp;
          if (m0 >= n) continue;
          const long lo = std::max(m0 - db.rr, seg);
          const long hi = std::min({m0 + 15 + db.rl, seg + S, n});
          for (int j0 = int(lo - seg); j0 < int(hi - seg); j0 += 16)
            for (int p = 0; p < 4; ++p)
              emulate_band_pair<H>(
                  stage, j0, p,
                  [&](int l, float(&w)[4][2]) {
                    td::band_lane_weights<float>(
                        [&](int j) {
                          REQUIRE(j < PR);
                          return taps[size_t(db.pair_head[p]) * size_t(PR) + size_t(j)];
                        },
                        j0, l % 4, float(m0 + l / 4 - seg), w);
                  },
                  &acc[size_t(warp * 32)]);
        }
      },
      [&](const dx_band_block& db, long m0, int warp, band_acc& acc) {
        const long n = db.n;
        for (int s = 0; s < steps; ++s) {
          double Ahi[16][8], Alo[16][8], Bw[8][8][8];
          for (int l = 0; l < 32; ++l) {
            const int g = l / 4, q = l % 4;
            for (int e = 0; e < 4; ++e) {
              const long row = m0 + g + (e % 2 ? 8 : 0), kk = td::band_dz_offset(s, q, e);
              const float v = row < n && kk < P ? (*dz)[pb.oi(row, db.b, kk)] : 0.0f;
              const float vh = tf32_trunc(v), vl = tf32_trunc(v - vh);
              // fragment index a_k stands for offset band_k_perm(a_k): the kernel's kk must be that
              REQUIRE(8L * s + td::band_k_perm(mk8::a_k(l, e)) == kk);
              Ahi[mk8::a_row(l, e)][mk8::a_k(l, e)] = vh;
              Alo[mk8::a_row(l, e)][mk8::a_k(l, e)] = vl;
            }
            for (int nt = 0; nt < 8; ++nt)
              for (int e = 0; e < 2; ++e)
                Bw[nt][mk8::b_k(l, e)][mk8::b_col(l, e)] = wfrag[size_t(td::band_w_index(s, nt, l)) + size_t(e)];
          }
          for (int l = 0; l < 32; ++l)
            for (int nt = 0; nt < 8; ++nt)
              for (int e = 0; e < 4; ++e) {
                for (const auto* Am : {&Ahi, &Alo}) {
                  double sum = 0.0;
                  for (int k = 0; k < 8; ++k) sum += (*Am)[mk8::d_row(l, e)][k] * Bw[nt][k][mk8::d_col(l, e)];
                  float& a = acc[size_t(warp * 32 + l)][size_t(nt)][size_t(e)];
                  a = float(double(a) + sum);
                }
              }
        }
      });
}

// The banded forward's walk as band_forward_walk does it, shared by both emulations: per block and tile of 128
// rows the row-tap table, the warps' token ranges [r0 + wlo, r0 + whi] and the block span, its segments of S tokens
// (segment(fb, seg, span_hi, acc) multiplies one, fb the block's and tile's state), the NaN marks, 1/K and the
// store mapping.
struct fwd_band_block {
  long b, r0, n;
  channel_block cb;
  int pair_head[4];
  int wlo[8], whi[8];
  std::vector<td::band_tap<float>> taps;  // [head][128 rows]
  const td::band_tap<float>& tap(int p, int row) const { return taps[size_t(pair_head[p]) * 128 + size_t(row)]; }
};
template <class Segment>
vec emulate_band_forward_walk(const ref::problem& pb, const std::vector<float>& o, int S, Segment&& segment) {
  const long R = pb.R();
  const float inv_k = 1.0f / float(pb.L + pb.M + 1);
  vec y(pb.x_size(), std::numeric_limits<double>::quiet_NaN());
  for (long b = 0; b < pb.B; ++b)
    for (const channel_block& cb : channel_blocks(pb.C, pb.H)) {
      fwd_band_block fb;
      fb.b = b, fb.cb = cb, fb.n = pb.n(b);
      const long n = fb.n, h_first = cb.c0 / R;
      const int nh = static_cast<int>((cb.c0 + cb.cn - 1) / R - h_first + 1);
      REQUIRE(cb.cn % 16 == 0);
      for (int p = 0; p < 4; ++p) {
        const int h = R <= 64 ? static_cast<int>(16 * p / R) : 0;
        fb.pair_head[p] = h < nh ? h : nh - 1;
      }
      for (long r0 = 0; r0 < pb.T; r0 += 128) {
        fb.r0 = r0;
        band_acc acc(size_t(8 * 32));
        for (auto& a : acc)
          for (auto& t : a) t.fill(0.0f);
        fb.taps.assign(size_t(nh) * 128, td::null_band_tap<float>());
        if (r0 < n) {
          for (int hh = 0; hh < nh; ++hh)
            for (int j = 0; j < 128; ++j) {
              const long u = r0 + j, h = h_first + hh;
              td::band_tap<float> e = td::null_band_tap<float>();
              if (u < n) {
                const auto k = td::make_taps<float, long>(u, o[pb.oi(u, b, h)], pb.causal ? 0.0f : o[pb.oi(u, b, pb.H + h)],
                                                          pb.L, pb.M, n, pb.causal);
                e = td::make_band_row_tap<float, long>(k, u);
              }
              fb.taps[size_t(hh) * 128 + size_t(j)] = e;
            }
          int slo = INT_MAX, shi = INT_MIN;
          for (int warp = 0; warp < 8; ++warp) {
            fb.wlo[warp] = INT_MAX, fb.whi[warp] = INT_MIN;
            for (int i = 0; i < 16 * nh; ++i) {
              const int hh = i / 16, r = i % 16;
              if (r0 + 16 * warp + r < n) {
                int a, z;
                td::band_row_tokens(fb.taps[size_t(hh) * 128 + size_t(16 * warp + r)], a, z);
                if (a <= z) {
                  fb.wlo[warp] = std::min(fb.wlo[warp], 16 * warp + r + a);
                  fb.whi[warp] = std::max(fb.whi[warp], 16 * warp + r + z);
                }
              }
            }
            if (fb.wlo[warp] <= fb.whi[warp]) slo = std::min(slo, fb.wlo[warp]), shi = std::max(shi, fb.whi[warp]);
          }
          const long span_lo = std::max(r0 + slo, 0L), span_hi = std::min(r0 + long(shi) + 1, n);
          for (long seg = span_lo; seg < span_hi; seg += S) segment(fb, seg, span_hi, acc);
        }
        for (int warp = 0; warp < 8; ++warp)
          for (int l = 0; l < 32; ++l) {
            const int g = l / 4, q = l % 4;
            for (int nt = 0; nt < cb.cn / 8; ++nt)
              for (int hr = 0; hr < 2; ++hr) {
                const long row = r0 + 16 * warp + g + 8 * hr;
                if (row >= pb.T) continue;
                const bool valid = row < n;
                const float mark = valid ? fb.tap(nt / 2, 16 * warp + g + 8 * hr).ar : 0.0f;
                const float sc = std::isnan(mark) ? mark : inv_k;
                for (int c = 0; c < 2; ++c)
                  y[pb.xi(row, b, cb.c0 + 8 * nt + 2 * q + c)] =
                      valid ? double(acc[size_t(warp * 32 + l)][size_t(nt)][size_t(2 * hr + c)] * sc) : 0.0;
              }
          }
      }
    }
  return y;
}

// y as the banded forward (agent_window_forward_band.cuh) computes it, before the 16-bit store: the walk above,
// k steps of 16 tokens, lane weights by rows, emulated ldmatrix.trans of the staged x and mma products through
// the PTX coordinates.
template <class H>
vec emulate_fwd_band(const ref::problem& pb, const std::vector<float>& o, const std::vector<float>& x, double max_offset) {
  const td::dx_band_plan plan = td::make_dx_band_plan(pb.L, pb.M, pb.causal, max_offset);
  const int S = plan.stage_rows;
  return emulate_band_forward_walk(pb, o, S, [&](const fwd_band_block& fb, long seg, long, band_acc& acc) {
    const long r0 = fb.r0, n = fb.n;
    const std::vector<float> stage = band_stage(pb, x, fb.b, fb.cb, seg, n, S);
    for (int warp = 0; warp < 8; ++warp) {
      const long m0 = r0 + 16 * warp;
      if (m0 >= n || fb.wlo[warp] > fb.whi[warp]) continue;
      const long klo = std::max(r0 + fb.wlo[warp], seg), khi = std::min({r0 + long(fb.whi[warp]) + 1, seg + S, n});
      for (int j0 = int(klo - seg); j0 < int(khi - seg); j0 += 16)
        for (int p = 0; p < 4; ++p)
          emulate_band_pair<H>(
              stage, j0, p,
              [&](int l, float(&w)[4][2]) {
                const int g = l / 4;
                td::band_lane_weights_rows<float>(fb.tap(p, 16 * warp + g), fb.tap(p, 16 * warp + g + 8),
                                                  float(seg + j0 - m0 - g), l % 4, w);
              },
              &acc[size_t(warp * 32)]);
    }
  });
}

template <class H>
void check_fwd_band_emulation(const ref::problem& pb, double offset_hi, std::uint64_t seed, double max_offset = 1.0) {
  INFO(pb.str(), " offsets in [0, ", offset_hi, "] max_offset=", max_offset);
  std::mt19937_64 rng(seed);
  vec od = uniform_vec(rng, pb.o_size(), 0.0, offset_hi);
  for (size_t i = 0; i < od.size(); i += 7) od[i] = double(i % 3 == 0);  // integer bounds: 0 and 1
  const vec xd = round_through<H>(normal_vec(rng, pb.x_size(), 1.0, 1.0));
  const std::vector<float> o(od.begin(), od.end()), x(xd.begin(), xd.end());
  const vec y_ref = ref::window_forward(pb, xd, vec(o.begin(), o.end()));
  const vec y = emulate_fwd_band<H>(pb, o, x, max_offset);
  TT_CHECK_CLOSE("emulated banded forward vs reference", y, y_ref, 2e-5, std::max(1.0, max_abs(y_ref)));
}

template <class H>
void check_band_emulation(const ref::problem& pb, double offset_hi, std::uint64_t seed, bool fused, double max_offset = 1.0) {
  INFO(pb.str(), " offsets in [0, ", offset_hi, "] fused=", fused, " max_offset=", max_offset);
  std::mt19937_64 rng(seed);
  vec od = uniform_vec(rng, pb.o_size(), 0.0, offset_hi);
  for (size_t i = 0; i < od.size(); i += 7) od[i] = double(i % 3 == 0);  // integer bounds: 0 and 1
  const vec dyd = round_through<H>(normal_vec(rng, pb.x_size()));
  const std::vector<float> o(od.begin(), od.end()), dy(dyd.begin(), dyd.end());
  const vec ov(o.begin(), o.end());
  vec dx_ref, do_ref;
  ref::window_backward(pb, vec(pb.x_size(), 0.0), ov, dyd, dx_ref, do_ref);
  std::vector<float> W, dz;
  if (fused) {
    const vec Wd = round_through<H>(normal_vec(rng, size_t(pb.P() * pb.C)));
    W.assign(Wd.begin(), Wd.end());
    const vec dzd = normal_vec(rng, pb.o_size(), 0.0, 0.5);
    dz.assign(dzd.begin(), dzd.end());
    for (long b = 0; b < pb.B; ++b)  // dz is zero past the lengths (the layer's contract)
      for (long t = pb.n(b); t < pb.T; ++t)
        for (long j = 0; j < pb.P(); ++j) dz[pb.oi(t, b, j)] = 0.0f;
    for (long b = 0; b < pb.B; ++b)
      for (long t = 0; t < pb.n(b); ++t)
        for (long c = 0; c < pb.C; ++c)
          for (long j = 0; j < pb.P(); ++j)
            dx_ref[pb.xi(t, b, c)] += double(W[size_t(j * pb.C + c)]) * double(dz[pb.oi(t, b, j)]);
  }
  const vec dx = emulate_dx_band<H>(pb, o, dy, fused ? &W : nullptr, fused ? &dz : nullptr, max_offset);
  // the weights carry 16 (bfloat16) or 22 (half) bits, the sums float: well inside 2e-5 of the scale
  TT_CHECK_CLOSE("emulated banded dx vs reference", dx, dx_ref, 2e-5, dx_scale(dx_ref, dyd));
}

// ---- the float banded dx (agent_window_input_grad_band_tf32.cuh), emulated lane by lane ----------------------
// The kernel's stage (every thread's items at band_tf32_stage_item, its two pointers and their 16-byte stores, the
// split of each value), tap table, k steps of 8 tokens from an even token (the lane's operand pointer stepped by
// 1024 +- 4 words alternately, d stepped by -8), a elements from band_tf32_lane_weights, the 3xTF32 products through the
// m16n8k8 coordinates with k standing for token band_k_perm(k), the fused offset path's W fragments at
// band_tf32_w_index (split when staged) and the store mapping; max_rows caps the stage as the launch plan does.
struct tf32_pieces {
  float hi, lo;
};
inline tf32_pieces tf32_split_host(float v) {
  const float hi = tf32_trunc(v);
  return tf32_pieces{hi, tf32_trunc(v - hi)};
}

// acc[l][e] += A B through the m16n8k8 coordinates: a(l, e) are lane l's a elements, b(l, e) its b elements.
template <class AOf, class BOf>
void emulate_mma1688(const AOf& a_of, const BOf& b_of, std::array<float, 4>* acc) {
  using mk8 = td::mma_m16n8k8;
  double A[16][8], Bm[8][8];
  for (int l = 0; l < 32; ++l) {
    for (int e = 0; e < 4; ++e) A[mk8::a_row(l, e)][mk8::a_k(l, e)] = a_of(l, e);
    for (int e = 0; e < 2; ++e) Bm[mk8::b_k(l, e)][mk8::b_col(l, e)] = b_of(l, e);
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e) {
      double sum = 0.0;
      for (int k = 0; k < 8; ++k) sum += A[mk8::d_row(l, e)][k] * Bm[k][mk8::d_col(l, e)];
      acc[l][size_t(e)] = float(double(acc[l][size_t(e)]) + sum);
    }
}

// The stage word lane l's element e of tile nt reads at k step `step` as the float kernels' pointer walks it (the
// first step's word, advanced by adv, then 2048 - adv, ...); a mismatch with the layout's word of token j0 counts
// into bad.
int tf32_walk_word(int jstart, int j0, int step, int l, int nt, int e, long& bad) {
  const int g = l / 4, q = l % 4;
  const int first = td::band_tf32_lane_word(jstart, q, g);
  const int adv = td::band_tf32_lane_word(jstart + 8, q, g) - first;
  const int at = first + 2048 * (step / 2) + (step % 2 ? adv : 0) + 32 * nt + e;
  bad += at != td::band_tf32_lane_word(j0, q, g) + 32 * nt + e;
  return at;
}

// The a operand of the float kernels' m16n8k8 products from the lanes' weights w[l][e]: their hi or lo TF32
// piece; a fragment index standing for another token than the kernel's counts into bad.
auto tf32_a_piece(const float (&w)[32][4], bool lo_piece, long& bad) {
  return [&w, lo_piece, &bad](int l, int e) {
    bad += td::band_k_perm(td::mma_m16n8k8::a_k(l, e)) != td::band_tf32_a_token(l % 4, e);
    const tf32_pieces pc = tf32_split_host(w[l][e]);
    return double(lo_piece ? pc.lo : pc.hi);
  };
}

// Float's stage of one segment as stage_band_rows_tf32 writes it: each of the 256 threads' items
// (band_tf32_stage_item), its 4 pointers advancing 4096 words per item, each value split hi + lo; zero past
// `used` and past cn, NaN where nothing is written. Counts into `bad` every word of the rows not written once.
std::vector<float> band_tf32_stage(const ref::problem& pb, const std::vector<float>& src, long b, const channel_block& cb,
                                   long seg, int rows, int used, int PR, long& bad) {
  std::vector<float> stage(size_t(PR / 2) * 256, std::numeric_limits<float>::quiet_NaN());
  std::vector<int> written(stage.size(), 0);
  for (int t = 0; t < 256; ++t) {
    const td::band_tf32_item item = td::band_tf32_stage_item(t);
    int i = 0;
    for (int j = 2 * item.pair; j < rows; j += 32, ++i) {
      unsigned at[4];  // the kernel's 4 pointers, 4096 words per iteration
      for (int c = 0; c < 4; ++c) at[c] = td::band_tf32_stage_word(2 * item.pair, 4 * item.quad + c, 0) + 4096u * unsigned(i);
      for (int c = 0; c < 4; ++c) {
        const int ch = 4 * item.quad + c;
        float v[2];
        for (int tok = 0; tok < 2; ++tok) v[tok] = ch < cb.cn && j + tok < used ? src[pb.xi(seg + j + tok, b, cb.c0 + ch)] : 0.0f;
        const tf32_pieces p0 = tf32_split_host(v[0]), p1 = tf32_split_host(v[1]);
        const float words[4] = {p0.hi, p1.hi, p0.lo, p1.lo};
        for (int e = 0; e < 4; ++e) {
          if (at[c] + unsigned(e) >= stage.size()) FAIL("staged word past the stage");
          stage[at[c] + unsigned(e)] = words[e];
          ++written[at[c] + unsigned(e)];
        }
      }
    }
  }
  for (size_t wd = 0; wd < size_t(rows / 2) * 256; ++wd) bad += written[wd] != 1;
  return stage;
}

vec emulate_dx_band_tf32(const ref::problem& pb, const std::vector<float>& o, const std::vector<float>& dy,
                         const std::vector<float>* W, const std::vector<float>* dz, double max_offset, int max_rows) {
  using mk8 = td::mma_m16n8k8;
  const td::dx_band_plan plan = td::make_dx_band_plan(pb.L, pb.M, pb.causal, max_offset, max_rows);
  const int S = plan.stage_rows, PR = S + td::band_tf32_pad;
  REQUIRE(S % 16 == 0);
  const long P = pb.P();
  const int steps = W ? static_cast<int>((P + 7) / 8) : 0;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  long bad = 0;  // coordinate checks of the hot loops, counted (one assertion at the end, not one per element)
  std::vector<float> wfrag;
  const vec dx = emulate_band_dx_walk(
      pb, o, S, dz != nullptr,
      [&](const dx_band_block& db) {
        // as the kernel stages an aligned W: 4 channels of two rows per item (a fragment no item writes stays NaN)
        wfrag.assign(size_t(steps) * 256 * 4, nan);
        stage_w_vec_items<4>(steps, P, pb.C, db.cb.c0, db.cb.cn, W, [&](int s, int nt, int l, float w0, float w1) {
          const tf32_pieces a = tf32_split_host(w0), c = tf32_split_host(w1);
          float* f = &wfrag[size_t(td::band_tf32_w_index(s, nt, l))];
          f[0] = a.hi, f[1] = c.hi, f[2] = std::isinf(a.hi) ? 0.0f : a.lo, f[3] = std::isinf(c.hi) ? 0.0f : c.lo;
        });
      },
      [&](const dx_band_block& db, long r0, long seg, long span_hi, band_acc& acc) {
        const long n = db.n;
        const int used = static_cast<int>(std::min<long>(span_hi - seg, S));
        const int rows = (used + td::band_tf32_pad + 1) / 2 * 2;
        REQUIRE(rows <= PR);
        // 1. the stage, as the 256 threads write it
        const std::vector<float> stage = band_tf32_stage(pb, dy, db.b, db.cb, seg, rows, used, PR, bad);
        std::vector<td::band_tap<float>> taps(size_t(db.nh) * size_t(PR), td::band_tap<float>{nan, nan});
        for (int hh = 0; hh < db.nh; ++hh)
          for (int j = 0; j < rows; ++j)
            taps[size_t(hh) * size_t(PR) + size_t(j)] =
                j < used ? band_token_tap(pb, o, db.b, n, seg + j, db.h_first + hh) : td::null_band_tap<float>();
        // 2. each warp's k steps
        for (int warp = 0; warp < 8; ++warp) {
          const long m0 = r0 + 16 * warp;
          if (m0 >= n) continue;
          const long lo = std::max(m0 - db.rr, seg), hi = std::min(m0 + 15 + db.rl, seg + long(used));
          const int jstart = int(lo - seg) & ~1, jend = int(hi - seg);
          int step = 0;
          for (int j0 = jstart; j0 < jend; j0 += 8, ++step) {
            for (int p = 0; p < 4; ++p) {
              float w[32][4];
              for (int l = 0; l < 32; ++l) {
                const int g = l / 4, q = l % 4;
                if (j0 + 2 * q + 1 >= rows) FAIL("tap read past the table's rows");
                const float d = float(m0 + g - seg) - float(jstart + 2 * q) - 8.0f * float(step);
                td::band_tf32_lane_weights<float>(taps[size_t(db.pair_head[p]) * size_t(PR) + size_t(j0 + 2 * q)],
                                                  taps[size_t(db.pair_head[p]) * size_t(PR) + size_t(j0 + 2 * q + 1)], d,
                                                  w[l]);
              }
              for (int h = 0; h < 2; ++h) {
                const int nt = 2 * p + h;
                auto bword = [&](int l, int e) {
                  const int q = l % 4;
                  const int at = tf32_walk_word(jstart, j0, step, l, nt, e, bad);
                  // a and b name the same tokens: b element e is token 2 q + e, k = band_k_perm order
                  bad += td::band_k_perm(mk8::b_k(l, e % 2)) != 2 * q + e % 2;
                  if (size_t(at) >= size_t(rows / 2) * 256) FAIL("stage read past the staged rows");
                  return stage[size_t(at)];
                };
                auto a_piece = [&](bool lo_piece) { return tf32_a_piece(w, lo_piece, bad); };
                std::array<float, 4> tile[32];
                for (int l = 0; l < 32; ++l) tile[l] = acc[size_t(warp * 32 + l)][size_t(nt)];
                emulate_mma1688(a_piece(false), [&](int l, int e) { return double(bword(l, e)); }, tile);
                emulate_mma1688(a_piece(false), [&](int l, int e) { return double(bword(l, 2 + e)); }, tile);
                emulate_mma1688(a_piece(true), [&](int l, int e) { return double(bword(l, e)); }, tile);
                for (int l = 0; l < 32; ++l) acc[size_t(warp * 32 + l)][size_t(nt)] = tile[l];
              }
            }
          }
        }
      },
      // the offset path (3xTF32)
      [&](const dx_band_block& db, long m0, int warp, band_acc& acc) {
        for (int s = 0; s < steps; ++s)
          for (int nt = 0; nt < 8; ++nt) {
            auto z_piece = [&](bool lo_piece) {
              return [&, lo_piece](int l, int e) {
                const int g = l / 4, q = l % 4;
                const long row = m0 + g + (e % 2 ? 8 : 0), kk = td::band_dz_offset(s, q, e);
                const float v = row < db.n && kk < P ? (*dz)[pb.oi(row, db.b, kk)] : 0.0f;
                const tf32_pieces pc = tf32_split_host(v);
                return double(lo_piece ? pc.lo : pc.hi);
              };
            };
            auto w_piece = [&](bool lo_piece) {
              return [&, lo_piece](int l, int e) {
                return double(wfrag[size_t(td::band_tf32_w_index(s, nt, l)) + size_t(lo_piece ? 2 : 0) + size_t(e)]);
              };
            };
            std::array<float, 4> tile[32];
            for (int l = 0; l < 32; ++l) tile[l] = acc[size_t(warp * 32 + l)][size_t(nt)];
            emulate_mma1688(z_piece(false), w_piece(false), tile);
            emulate_mma1688(z_piece(false), w_piece(true), tile);
            emulate_mma1688(z_piece(true), w_piece(false), tile);
            for (int l = 0; l < 32; ++l) acc[size_t(warp * 32 + l)][size_t(nt)] = tile[l];
          }
      });
  CHECK(bad == 0);
  return dx;
}

// y as the float banded forward (agent_window_forward_band_tf32.cuh) computes it: the walk (emulate_band_forward_walk:
// row taps, warp ranges, block span, segments, NaN marks, stores), float's stage and k steps of 8 tokens from an even token
// (the lane's pointer as the kernel advances it, d stepped by +8), a elements by rows
// (band_tf32_lane_weights_rows), 3xTF32 products through the m16n8k8 coordinates.
vec emulate_fwd_band_tf32(const ref::problem& pb, const std::vector<float>& o, const std::vector<float>& x, double max_offset,
                          int max_rows) {
  const td::dx_band_plan plan = td::make_dx_band_plan(pb.L, pb.M, pb.causal, max_offset, max_rows);
  const int S = plan.stage_rows, PR = S + td::band_tf32_pad;
  long bad = 0;
  const vec y = emulate_band_forward_walk(pb, o, S, [&](const fwd_band_block& fb, long seg, long span_hi, band_acc& acc) {
    const long r0 = fb.r0, n = fb.n;
    const int used = static_cast<int>(std::min<long>(span_hi - seg, S));
    const int rows = (used + td::band_tf32_pad + 1) / 2 * 2;
    REQUIRE(rows <= PR);
    const std::vector<float> stage = band_tf32_stage(pb, x, fb.b, fb.cb, seg, rows, used, PR, bad);
    for (int warp = 0; warp < 8; ++warp) {
      const long m0 = r0 + 16 * warp;
      if (m0 >= n || fb.wlo[warp] > fb.whi[warp]) continue;
      const long klo = std::max(r0 + fb.wlo[warp], seg), khi = std::min(r0 + long(fb.whi[warp]) + 1, seg + long(used));
      const int jstart = int(klo - seg) & ~1, jend = int(khi - seg);
      int step = 0;
      for (int j0 = jstart; j0 < jend; j0 += 8, ++step)
        for (int p = 0; p < 4; ++p) {
          float w[32][4];
          for (int l = 0; l < 32; ++l) {
            const int g = l / 4, q = l % 4;
            const float d = float(seg + jstart + 2 * q - m0 - g) + 8.0f * float(step);
            td::band_tf32_lane_weights_rows<float>(fb.tap(p, 16 * warp + g), fb.tap(p, 16 * warp + g + 8), d, w[l]);
          }
          for (int h = 0; h < 2; ++h) {
            const int nt = 2 * p + h;
            auto bword = [&](int l, int e) {
              const int at = tf32_walk_word(jstart, j0, step, l, nt, e, bad);
              if (size_t(at) >= size_t(rows / 2) * 256) FAIL("stage read past the staged rows");
              return double(stage[size_t(at)]);
            };
            auto a_piece = [&](bool lo_piece) { return tf32_a_piece(w, lo_piece, bad); };
            std::array<float, 4> tile[32];
            for (int l = 0; l < 32; ++l) tile[l] = acc[size_t(warp * 32 + l)][size_t(nt)];
            emulate_mma1688(a_piece(false), [&](int l, int e) { return bword(l, e); }, tile);
            emulate_mma1688(a_piece(false), [&](int l, int e) { return bword(l, 2 + e); }, tile);
            emulate_mma1688(a_piece(true), [&](int l, int e) { return bword(l, e); }, tile);
            for (int l = 0; l < 32; ++l) acc[size_t(warp * 32 + l)][size_t(nt)] = tile[l];
          }
        }
    }
  });
  CHECK(bad == 0);
  return y;
}

void check_fwd_band_tf32_emulation(const ref::problem& pb, double offset_hi, std::uint64_t seed, double max_offset = 1.0,
                                   int max_rows = 0) {
  INFO(pb.str(), " offsets in [0, ", offset_hi, "] max_offset=", max_offset, " max_rows=", max_rows);
  std::mt19937_64 rng(seed);
  vec od = uniform_vec(rng, pb.o_size(), 0.0, offset_hi);
  for (size_t i = 0; i < od.size(); i += 7) od[i] = double(i % 3 == 0);  // integer bounds: 0 and 1
  const vec xd0 = normal_vec(rng, pb.x_size(), 1.0, 1.0);
  const std::vector<float> o(od.begin(), od.end()), x(xd0.begin(), xd0.end());
  const vec y_ref = ref::window_forward(pb, vec(x.begin(), x.end()), vec(o.begin(), o.end()));
  const vec y = emulate_fwd_band_tf32(pb, o, x, max_offset, max_rows);
  TT_CHECK_CLOSE("emulated float banded forward vs reference", y, y_ref, 1e-5, std::max(1.0, max_abs(y_ref)));
}

void check_band_tf32_emulation(const ref::problem& pb, double offset_hi, std::uint64_t seed, bool fused,
                               double max_offset = 1.0, int max_rows = 0) {
  INFO(pb.str(), " offsets in [0, ", offset_hi, "] fused=", fused, " max_offset=", max_offset, " max_rows=", max_rows);
  std::mt19937_64 rng(seed);
  vec od = uniform_vec(rng, pb.o_size(), 0.0, offset_hi);
  for (size_t i = 0; i < od.size(); i += 7) od[i] = double(i % 3 == 0);  // integer bounds: 0 and 1
  const vec dyd0 = normal_vec(rng, pb.x_size());
  const std::vector<float> o(od.begin(), od.end()), dy(dyd0.begin(), dyd0.end());
  const vec dyd(dy.begin(), dy.end()), ov(o.begin(), o.end());
  vec dx_ref, do_ref;
  ref::window_backward(pb, vec(pb.x_size(), 0.0), ov, dyd, dx_ref, do_ref);
  std::vector<float> W, dz;
  if (fused) {
    const vec Wd = normal_vec(rng, size_t(pb.P() * pb.C));
    W.assign(Wd.begin(), Wd.end());
    const vec dzd = normal_vec(rng, pb.o_size(), 0.0, 0.5);
    dz.assign(dzd.begin(), dzd.end());
    for (long b = 0; b < pb.B; ++b)  // dz is zero past the lengths (the layer's contract)
      for (long t = pb.n(b); t < pb.T; ++t)
        for (long j = 0; j < pb.P(); ++j) dz[pb.oi(t, b, j)] = 0.0f;
    for (long b = 0; b < pb.B; ++b)
      for (long t = 0; t < pb.n(b); ++t)
        for (long c = 0; c < pb.C; ++c)
          for (long j = 0; j < pb.P(); ++j)
            dx_ref[pb.xi(t, b, c)] += double(W[size_t(j * pb.C + c)]) * double(dz[pb.oi(t, b, j)]);
  }
  const vec dx = emulate_dx_band_tf32(pb, o, dy, fused ? &W : nullptr, fused ? &dz : nullptr, max_offset, max_rows);
  // 3xTF32: each product within 2^-20 of the float one; the sums float
  TT_CHECK_CLOSE("emulated float banded dx vs reference", dx, dx_ref, 1e-5, dx_scale(dx_ref, dyd));
}

}  // namespace

// The banded kernels' emulation: a ctest entry of its own (band_tiles), so that under the sanitizers it runs
// beside the other tile cases instead of after them.
TEST_SUITE("band_tiles") {

TEST_CASE("banded dx: the weight formula is the SPEC's window coefficient at every row, edges and clamps included") {
  std::mt19937_64 rng(77);
  for (int i = 0; i < 4000; ++i) {
    const long n = uniform_int(rng, 1, 60), t = uniform_int(rng, 0, n - 1), L = uniform_int(rng, 0, 20),
               M = uniform_int(rng, 0, 20);
    const bool causal = i % 5 == 4;
    float ol = float(uniform_vec(rng, 1, 0.0, 1.5)[0]), orr = float(uniform_vec(rng, 1, 0.0, 1.5)[0]);
    if (i % 4 == 1) ol = float(i % 3 == 0), orr = float(i % 2);
    const auto k = td::make_taps<float, long>(t, ol, orr, L, causal ? 0 : M, n, causal);
    const td::band_tap<float> e = td::make_band_tap<float, long>(k, t);
    const td::band_tap<float> er = td::make_band_row_tap<float, long>(k, t);
    int lo, hi;
    td::band_row_tokens(er, lo, hi);
    // SPEC: a_l = clamp(t - o_l L, 0, n - 1), a_r = clamp(t + o_r M, 0, n - 1) (causal: t)
    const double al = std::min(std::max(double(t) - double(ol) * double(float(L)), 0.0), double(n - 1));
    const double ar = causal ? double(t) : std::min(std::max(double(t) + double(orr) * double(float(M)), 0.0), double(n - 1));
    for (long tau = 0; tau < n; ++tau) {
      double want = 0.0;
      if (tau >= std::ceil(al) && tau <= std::floor(ar)) want = 1.0;
      if (ar != std::floor(ar) && tau == long(std::ceil(ar))) want = ar - std::floor(ar);
      if (al != std::floor(al) && tau == long(std::floor(al))) want = std::ceil(al) - al;
      const float got = td::band_weight<float>(e, float(tau - t));
      INFO("t=", t, " n=", n, " L=", L, " M=", M, " o=(", ol, ", ", orr, ") causal=", causal, " tau=", tau);
      // ar, al are rounded to float at magnitudes up to max(L, M) + 2: the fraction keeps that many bits fewer
      CHECK(std::abs(double(got) - want) <= double(std::max(L, M) + 2) * 0x1p-23);
      CHECK(td::band_weight<float>(er, float(tau - t)) == got);
      if (got != 0.0f) CHECK((tau - t >= lo && tau - t <= hi));  // the forward's token range covers it
    }
  }
  // a NaN offset: no weight anywhere (its dy reaches dx through the offset path)
  const auto k = td::make_taps<float, long>(5, std::numeric_limits<float>::quiet_NaN(), 0.5f, 4, 4, 20, false);
  const td::band_tap<float> e = td::make_band_tap<float, long>(k, 5), er = td::make_band_row_tap<float, long>(k, 5);
  for (int tau = 0; tau < 20; ++tau) {
    CHECK(td::band_weight<float>(e, float(tau - 5)) == 0.0f);
    CHECK(td::band_weight<float>(er, float(tau - 5)) == 0.0f);
  }
  CHECK(td::band_row_is_nan(er));
  int lo, hi;
  td::band_row_tokens(er, lo, hi);
  CHECK(lo > hi);
  CHECK(td::sat01<float>(std::numeric_limits<float>::quiet_NaN()) == 0.0f);
}

template <int V>
void check_w_vec_items() {
  INFO("channels per item V=", V);
  for (int steps = 1; steps <= 16; ++steps) {
    std::vector<int> hits(size_t(steps) * 256, 0);
    for (int i = 0; i < steps * 32 * 8 / V; ++i) {
      const td::band_w_vec_item v = td::band_w_vec_item_of<V>(i);
      REQUIRE(v.s < steps);
      REQUIRE(v.g0 % V == 0);
      REQUIRE(v.g0 + V <= 8);
      for (int g = v.g0; g < v.g0 + V; ++g) {
        const td::band_w_item it{v.s, v.n, 4 * g + v.q};
        CHECK(td::band_w_channel(it) == 8 * v.n + g);
        CHECK(td::band_w_offset(it) == 8 * v.s + 2 * v.q);
        ++hits[size_t(td::band_w_index(v.s, v.n, 4 * g + v.q) / 2)];
      }
    }
    CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
}

TEST_CASE("banded dx: W's fragments staged by 16-byte rows (8 channels of 16-bit W, 4 of float) write each (step, tile, lane) once, with the channel and offsets of the one-value staging's item") {
  check_w_vec_items<8>();
  check_w_vec_items<4>();
}

TEST_CASE("banded dx: every stage byte is distinct, and an ldmatrix matrix's 8 rows lie in distinct bank groups") {
  std::vector<int> seen(size_t(64) * 8, 0);
  for (int j = 0; j < 64; ++j)
    for (int v = 0; v < 8; ++v) {
      const unsigned byte = td::band_stage_byte(j, v);
      REQUIRE(byte % 16 == 0);
      REQUIRE(byte / 16 < seen.size());
      ++seen[byte / 16];
    }
  for (int s : seen) CHECK(s == 1);
  for (int j0 = 0; j0 < 40; ++j0)
    for (int v = 0; v < 8; ++v) {
      std::array<int, 8> grp{};
      for (int r = 0; r < 8; ++r) grp[size_t(r)] = static_cast<int>(td::band_stage_byte(j0 + r, v) / 16 % 8);
      std::sort(grp.begin(), grp.end());
      for (int r = 0; r < 8; ++r) CHECK(grp[size_t(r)] == r);
    }
}

// A random problem for the banded kernels' emulations: heads of 16 .. 128 channels (whole 16-channel pieces),
// windows to 121 tokens, a causal one every fourth draw, ragged lengths half the time.
ref::problem random_band_problem(std::mt19937_64& rng, int i) {
    ref::problem pb;
    const long Rs[] = {16, 32, 48, 64, 80, 128};
    const long R = Rs[uniform_int(rng, 0, 5)];
    pb.H = uniform_int(rng, 1, R >= 64 ? 2 : 4);
    pb.C = pb.H * R;
    pb.causal = i % 4 == 3;
    pb.T = uniform_int(rng, 1, 330);
    pb.B = uniform_int(rng, 1, 2);
    pb.L = uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 0, 2) : uniform_int(rng, 0, 60);
    pb.M = pb.causal ? 0 : (uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 0, 2) : uniform_int(rng, 0, 60));
    if (uniform_int(rng, 0, 1))
      for (long b = 0; b < pb.B; ++b) pb.lengths.push_back(uniform_int(rng, 0, pb.T));
  return pb;
}

TEST_CASE("banded dx and forward emulated lane by lane == reference: random shapes, bfloat16 and half, fused offset path or not") {
  std::mt19937_64 rng(4242);
  for (int i = 0; i < draws(16); ++i) {
    const ref::problem pb = random_band_problem(rng, i);
    check_band_emulation<Eigen::bfloat16>(pb, 1.0, 500 + i, i % 2 == 0);
    check_band_emulation<Eigen::half>(pb, 1.0, 600 + i, i % 2 == 1);
    check_fwd_band_emulation<Eigen::bfloat16>(pb, 1.0, 700 + i);
    check_fwd_band_emulation<Eigen::half>(pb, 1.0, 800 + i);
  }
}

TEST_CASE("banded dx emulated: offsets past the planned max_offset take more segments; the benchmark's head shape") {
  ref::problem pb;
  pb.T = 700, pb.B = 1, pb.C = 64, pb.H = 1, pb.L = 40, pb.M = 30, pb.lengths = {650};
  check_band_emulation<Eigen::bfloat16>(pb, 4.0, 11, true);  // windows reach ~160 tokens: 2-3 segments
  check_band_emulation<Eigen::bfloat16>(pb, 4.0, 12, false, 4.0);  // planned for them: one segment
  pb.causal = true, pb.M = 0;
  check_band_emulation<Eigen::half>(pb, 4.0, 13, true);
  ref::problem bench;  // the benchmark's heads (R = 64, P = 32) on a short sequence
  bench.T = 300, bench.B = 2, bench.C = 1024, bench.H = 16, bench.L = 16, bench.M = 16;
  check_band_emulation<Eigen::bfloat16>(bench, 1.0, 14, true);
  check_fwd_band_emulation<Eigen::bfloat16>(bench, 1.0, 15);
  pb.causal = false, pb.M = 30;
  check_fwd_band_emulation<Eigen::bfloat16>(pb, 4.0, 16);       // spans past the plan: segments
  check_fwd_band_emulation<Eigen::half>(pb, 4.0, 17, 4.0);
}

TEST_CASE("banded dx and forward emulated at K = 511 and 1023 (what -DTALKCONV_CUDA_BAND_MAX_K=1023 sends them)") {
  // Planned with this build's dx_band_max_k: by default (255) the stage holds 128 + 257 rows and these spans take
  // 2-4 segments; with the knob raised, one. Either way the reference's sums.
  ref::problem pb;
  pb.T = 900, pb.B = 1, pb.C = 64, pb.H = 2, pb.L = 255, pb.M = 255, pb.lengths = {850};
  check_band_emulation<Eigen::bfloat16>(pb, 1.0, 21, true);
  check_fwd_band_emulation<Eigen::bfloat16>(pb, 1.0, 22);
  if (small) return;  // under the sanitizers K = 511 only (the emulation at K = 1023 is ~1 s a case unsanitized)
  pb.T = 1300, pb.H = 1, pb.L = 511, pb.M = 511, pb.lengths = {1300};
  check_band_emulation<Eigen::half>(pb, 1.0, 23, false);
  check_fwd_band_emulation<Eigen::half>(pb, 1.0, 24);
  pb.causal = true, pb.L = 1022, pb.M = 0;
  check_band_emulation<Eigen::bfloat16>(pb, 1.0, 25, true);
}

TEST_CASE("banded dx and forward emulated: partial channel blocks holding several heads (the CUDA band cases 208-210)") {
  struct shape {
    long T, B, C, H, L, M;
    bool causal;
    std::vector<long> lengths;
  };
  const shape shapes[] = {{300, 2, 96, 6, 9, 7, false, {300, 141}},  // blocks of 4 + 2 heads of 16
                          {300, 2, 96, 3, 12, 0, true, {}},         // 2 + 1 heads of 32
                          {257, 1, 80, 5, 30, 31, false, {250}}};   // 4 + 1 heads of 16
  std::uint64_t seed = 900;
  for (const shape& sh : shapes) {
    ref::problem pb;
    pb.T = sh.T, pb.B = sh.B, pb.C = sh.C, pb.H = sh.H, pb.L = sh.L, pb.M = sh.M, pb.causal = sh.causal;
    pb.lengths = sh.lengths;
    check_band_emulation<Eigen::bfloat16>(pb, 1.0, ++seed, true);
    check_band_emulation<Eigen::half>(pb, 1.0, ++seed, false);
    check_fwd_band_emulation<Eigen::bfloat16>(pb, 1.0, ++seed);
    check_fwd_band_emulation<Eigen::half>(pb, 1.0, ++seed);
  }
}

TEST_CASE("float banded dx: stage words written once, a quarter-warp's stores and a lane's operand reads conflict-free") {
  // staging: the 8 lanes of each quarter-warp write 16-byte groups in 8 distinct bank groups (4 stores per item)
  for (int t0 = 0; t0 < 256; t0 += 8)
    for (int c = 0; c < 4; ++c) {
      std::array<int, 8> grp{};
      for (int l = 0; l < 8; ++l) {
        const td::band_tf32_item it = td::band_tf32_stage_item(t0 + l);
        const unsigned w = td::band_tf32_stage_word(2 * it.pair, 4 * it.quad + c, 0);
        REQUIRE(w % 4 == 0);
        grp[size_t(l)] = static_cast<int>((w / 4) % 8);
      }
      std::sort(grp.begin(), grp.end());
      for (int l = 0; l < 8; ++l) CHECK(grp[size_t(l)] == l);
    }
  // every (token, channel, piece) has its own word, channel pairs adjacent
  std::vector<int> seen(size_t(32) * 256, 0);
  for (int j = 0; j < 64; ++j)
    for (int c = 0; c < 64; ++c)
      for (int piece = 0; piece < 2; ++piece) {
        const unsigned w = td::band_tf32_stage_word(j, c, piece);
        REQUIRE(w < seen.size());
        ++seen[w];
        CHECK(td::band_tf32_slot(c, j / 2) / 8 == c / 8);  // in its 8-channel tile
      }
  for (int v : seen) CHECK(v == 1);
  // k step reads: lane (g, q) at band_tf32_lane_word(j0, q, g) + 32 n: its own 4 words, and a quarter-warp's 8
  // lanes read 8 distinct 16-byte bank groups
  for (int j0 = 0; j0 < 40; j0 += 2)
    for (int nt = 0; nt < 8; ++nt) {
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4, q = l % 4, at = td::band_tf32_lane_word(j0, q, g) + 32 * nt;
        for (int piece = 0; piece < 2; ++piece)
          for (int e = 0; e < 2; ++e)
            CHECK(unsigned(at + 2 * piece + e) == td::band_tf32_stage_word(j0 + 2 * q + e, 8 * nt + g, piece));
        CHECK(td::band_tf32_lane_word(j0 + 16, q, g) == td::band_tf32_lane_word(j0, q, g) + 2048);
        CHECK(std::abs(td::band_tf32_lane_word(j0 + 8, q, g) - td::band_tf32_lane_word(j0, q, g) - 1024) == 4);
      }
      for (int l0 = 0; l0 < 32; l0 += 8) {
        std::array<int, 8> grp{};
        for (int l = 0; l < 8; ++l)
          grp[size_t(l)] = (td::band_tf32_lane_word(j0, (l0 + l) % 4, (l0 + l) / 4) + 32 * nt) / 4 % 8;
        std::sort(grp.begin(), grp.end());
        for (int l = 0; l < 8; ++l) CHECK(grp[size_t(l)] == l);
      }
    }
}

TEST_CASE("float banded dx and forward emulated lane by lane == reference: random shapes, capped stages, fused offset path or not") {
  std::mt19937_64 rng(4343);
  for (int i = 0; i < draws(12); ++i) {
    const ref::problem pb = random_band_problem(rng, i);
    const int caps[] = {0, 32, 48, 144};
    check_band_tf32_emulation(pb, 1.0, 1500 + i, i % 2 == 0, 1.0, caps[i % 4]);
    check_fwd_band_tf32_emulation(pb, 1.0, 1600 + i, 1.0, caps[(i + 1) % 4]);
  }
}

TEST_CASE("float banded dx and forward emulated: segments past max_offset, K = 127, several heads per block, the benchmark's heads") {
  ref::problem pb;
  pb.T = 700, pb.B = 1, pb.C = 64, pb.H = 1, pb.L = 40, pb.M = 30, pb.lengths = {650};
  check_band_tf32_emulation(pb, 4.0, 21, true);          // windows reach ~160 tokens: 2-3 segments
  check_band_tf32_emulation(pb, 4.0, 22, false, 4.0, 176);
  pb.causal = true, pb.M = 0;
  check_band_tf32_emulation(pb, 4.0, 23, true);
  ref::problem wide;  // K = 127 (the float band's widest), R = 48 (a head of 48 channels per block)
  wide.T = 400, wide.B = 2, wide.C = 96, wide.H = 2, wide.L = 63, wide.M = 63, wide.lengths = {400, 333};
  check_band_tf32_emulation(wide, 1.0, 24, true, 1.0, 176);
  ref::problem heads;  // a partial last block with several heads (96 = 64 + 32 channels, heads of 16)
  heads.T = 300, heads.B = 2, heads.C = 96, heads.H = 6, heads.L = 9, heads.M = 7, heads.lengths = {300, 141};
  check_band_tf32_emulation(heads, 1.0, 25, true);
  ref::problem bench;  // the benchmark's heads (R = 64, P = 32) on a short sequence, the H200 plan's stage
  bench.T = 300, bench.B = 2, bench.C = 1024, bench.H = 16, bench.L = 16, bench.M = 16;
  check_band_tf32_emulation(bench, 1.0, 26, true, 1.0, 176);
  ref::problem wide_p;  // P = 128 fused (16 steps of split W), 4 heads per block, the stage an H200 plan leaves
  wide_p.T = 150, wide_p.B = 1, wide_p.C = 1024, wide_p.H = 64, wide_p.L = 5, wide_p.M = 6, wide_p.lengths = {141};
  check_band_tf32_emulation(wide_p, 1.0, 27, true, 1.0, 80);
  check_fwd_band_tf32_emulation(bench, 1.0, 28, 1.0, 176);  // the forward: the benchmark's heads, one segment
  check_fwd_band_tf32_emulation(pb, 4.0, 29, 1.0, 48);      // causal, spans past the plan: segments
  pb.causal = false, pb.M = 30;
  check_fwd_band_tf32_emulation(pb, 4.0, 30, 4.0, 176);
  check_fwd_band_tf32_emulation(heads, 1.0, 31);
}

TEST_CASE("float banded forward emulated: a NaN offset gives NaN in its token's head and nothing else") {
  ref::problem pb;
  pb.T = 200, pb.B = 2, pb.C = 64, pb.H = 2, pb.L = 5, pb.M = 4;
  std::mt19937_64 rng(32);
  const vec od = uniform_vec(rng, pb.o_size(), 0.0, 1.0);
  std::vector<float> o(od.begin(), od.end());
  o[pb.oi(150, 1, 1)] = std::numeric_limits<float>::quiet_NaN();  // left offset of (t = 150, b = 1, head 1)
  const vec xd = normal_vec(rng, pb.x_size(), 1.0, 1.0);
  const std::vector<float> x(xd.begin(), xd.end());
  const vec y = emulate_fwd_band_tf32(pb, o, x, 1.0, 0);
  size_t wrong = 0;
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long c = 0; c < pb.C; ++c) wrong += std::isnan(y[pb.xi(t, b, c)]) != (t == 150 && b == 1 && c >= 32);
  CHECK(wrong == 0);
}

TEST_CASE("banded forward emulated: a NaN offset gives NaN in its token's head and nothing else") {
  ref::problem pb;
  pb.T = 200, pb.B = 2, pb.C = 64, pb.H = 2, pb.L = 5, pb.M = 4;
  std::mt19937_64 rng(31);
  const vec od = uniform_vec(rng, pb.o_size(), 0.0, 1.0);
  std::vector<float> o(od.begin(), od.end());
  o[pb.oi(150, 1, 1)] = std::numeric_limits<float>::quiet_NaN();  // left offset of (t = 150, b = 1, head 1)
  const vec xd = round_through<Eigen::bfloat16>(normal_vec(rng, pb.x_size(), 1.0, 1.0));
  const std::vector<float> x(xd.begin(), xd.end());
  const vec y = emulate_fwd_band<Eigen::bfloat16>(pb, o, x, 1.0);
  for (long t = 0; t < pb.T; ++t)
    for (long b = 0; b < pb.B; ++b)
      for (long c = 0; c < pb.C; ++c) {
        INFO("t=", t, " b=", b, " c=", c);
        CHECK(std::isnan(y[pb.xi(t, b, c)]) == (t == 150 && b == 1 && c >= 32));
      }
}

}  // TEST_SUITE
