// The CUDA vector tiles' plan and per-tile arithmetic (detail/window_tile.hpp), run on the CPU: tile
// lengths and shared-memory bytes, which S rows a tile keeps, which tokens take the direct path, and the
// window values computed the GPU's way (local prefix sums from the tile's base row, 1/K at the output)
// against the float64 reference.
#include "util.hpp"

#include <talkconv/detail/window_tile.hpp>

using namespace tt;
namespace d = talkconv::detail;

namespace {

// The costs of a bf16 forward block on an H200-like device (272-byte rows, 16-byte taps, one head).
d::window_tile_costs h200_costs(std::size_t token_bytes = 16) {
  d::window_tile_costs k;
  k.row_bytes = 272;
  k.token_bytes = token_bytes;
  k.budget = 233472 / 4 - 1024 - 256;
  k.limit = 232448 - 256;
  return k;
}

double plan_bytes(const d::window_tile_plan& p, const d::window_tile_costs& k) {
  return double(p.rows) * double(k.row_bytes) + double(p.tile) * double(k.token_bytes) + double(k.fixed_bytes);
}

// float64 SPEC for token t of a sequence of valid length n (the offsets rounded to float, as the kernels
// see them): the sum over [ceil a_l, floor a_r] plus the fractional edges, / K.
double spec_window(const std::vector<float>& xf, long t, double ol, double orr, long L, long M, long n, bool causal) {
  const double al = std::min(std::max(double(t) - double(float(ol)) * double(L), 0.0), double(n - 1));
  const double ar =
      causal ? double(t) : std::min(std::max(double(t) + double(float(orr)) * double(M), 0.0), double(n - 1));
  double s = 0.0;
  for (long tau = long(std::ceil(al)); tau <= long(std::floor(ar)); ++tau) s += double(xf[size_t(tau)]);
  if (std::floor(ar) != ar) s += (ar - std::floor(ar)) * double(xf[size_t(std::ceil(ar))]);
  if (std::floor(al) != al) s += (std::ceil(al) - al) * double(xf[size_t(std::floor(al))]);
  return s / double(L + M + 1);
}

// The direct path as the kernels' direct_diffs form it: the window summed from x itself, 1/K on each part.
float direct_value(const std::vector<float>& xf, const d::window_taps<float>& kt, float inv_k) {
  float dm = 0.0f;
  for (long tau = kt.i2 + 1; tau <= kt.i0; ++tau) dm += xf[size_t(tau)];
  const float dr = kt.i1 > kt.i0 ? xf[size_t(kt.i1)] : 0.0f, dl = kt.i3 > kt.i2 ? xf[size_t(kt.i3)] : 0.0f;
  return d::window_value_diff<float>(kt, inv_k * dm, inv_k * dr, inv_k * dl);
}

}  // namespace

TEST_SUITE("cuda_tiles") {

TEST_CASE("window tile plan: tile, rows and bytes for windows from 1 to beyond shared memory") {
  for (const long L : {0L, 1L, 3L, 16L, 63L, 200L, 1200L, 100000L})
    for (const long M : {0L, 16L, 900L})
      for (const bool causal : {false, true})
        for (const double mo : {1.0, 1.25, 6.0}) {
          for (const std::size_t tb : {std::size_t(16), std::size_t(16 * 8 + 128)}) {
            const d::window_tile_costs k = h200_costs(tb);
            const d::window_tile_plan p = d::plan_window_tile(L, M, causal, mo, k);
            INFO("L=", L, " M=", M, " causal=", causal, " max_offset=", mo, " token_bytes=", tb);
            REQUIRE(p.tile > 0);
            CHECK(p.tile % k.unit == 0);
            CHECK(p.tile <= k.max_tile);
            CHECK(p.rows >= p.tile + 1);
            CHECK(p.rows <= d::max_tile_rows);
            CHECK(p.left >= 1);
            CHECK(p.left <= p.rows - p.tile);
            CHECK(double(p.smem) == plan_bytes(p, k));
            CHECK(p.smem <= k.limit);
            const double halo = d::halo_left_rows(L, mo) + d::halo_right_rows(M, causal, mo);
            if (p.rows == p.tile + long(halo)) {
              // The whole halo is kept: every window of offsets <= max_offset fits (checked below).
              CHECK(p.left == long(d::halo_left_rows(L, mo)));
              // Occupancy first; the halo stays <= 25% of the tile whenever the budget allows that.
              if (plan_bytes(p, k) > double(k.budget)) CHECK(p.tile == k.unit);
              if (4.0 * halo <= k.max_tile && p.tile >= 4.0 * halo) CHECK(halo <= 0.25 * p.tile);
            }
          }
        }
  // The benchmark window (L = M = 16): 128 tokens or more, about 4 blocks per SM.
  const d::window_tile_plan p = d::plan_window_tile(16, 16, false, 1.0, h200_costs());
  CHECK(p.tile >= 128);
  CHECK(p.smem <= h200_costs().budget);
}

TEST_CASE("window tile plan: long halos trade blocks per SM for longer tiles, by window_tile_cost") {
  // The H200's SM: 228 KiB, 1 KiB reserved + 256 B static per block, 4 blocks per SM wanted.
  for (const std::size_t tb : {std::size_t(16), std::size_t(16 * 8 + 128)})
    for (const long L : {0L, 16L, 31L, 63L, 127L, 200L, 255L, 300L}) {
      d::window_tile_costs k = h200_costs(tb);
      k.per_sm = 233472;
      k.block_overhead = 1024 + 256;
      k.min_blocks = 4;
      const d::window_tile_plan p = d::plan_window_tile(L, L, false, 1.0, k);
      INFO("L=M=", L, " token_bytes=", tb, " tile=", p.tile, " rows=", p.rows);
      REQUIRE(p.tile > 0);
      const double halo = d::halo_left_rows(L, 1.0) + d::halo_right_rows(L, false, 1.0);
      CHECK(p.rows == p.tile + long(halo));  // the whole span is kept
      CHECK(p.smem <= k.limit);
      // Blocks per SM the plan leaves resident (as the plan counts them), and its cost against every other
      // (occupancy, tile) whose span fits: none is cheaper by more than the margin.
      int blocks = 1;
      for (int b = 4; b >= 1; b /= 2)
        if (double(p.smem) <= (b == 4 ? double(k.budget) : double(k.per_sm / std::size_t(b)) - double(k.block_overhead))) {
          blocks = b;
          break;
        }
      const double cost = d::window_tile_cost(p.tile, halo, blocks);
      for (int b = 4; b >= 1; b /= 2) {
        const double room = b == 4 ? double(k.budget)
                                   : std::min(double(k.per_sm / std::size_t(b)) - double(k.block_overhead), double(k.limit));
        for (int t = k.unit; t <= k.max_tile; t += k.unit)
          if (double(t + halo) * double(k.row_bytes) + double(t) * double(tb) <= room && t <= std::max(64.0, std::ceil(4.0 * halo / 32) * 32))
            CHECK(d::window_tile_margin * cost <= d::window_tile_cost(t, halo, b) + 1e-12);
      }
      if (L <= 16) CHECK(blocks == 4);
      if (L >= 127) CHECK(p.tile >= 96);  // not the 32-token tiles of 2026-11-30 (0.70 ms at L = 127)
    }
  // Without the SM's size the plan keeps occupancy first, as before.
  const d::window_tile_plan q = d::plan_window_tile(127, 127, false, 1.0, h200_costs());
  CHECK(q.tile == 32);
}

TEST_CASE("window tile rows: the base row, the kept rows, clamped to [-1, n - 1]") {
  const int rows = 100, left = 20;
  for (const long n : {0L, 1L, 50L, 1000L})
    for (const long t0 : {0L, 5L, 19L, 20L, 21L, 64L, 900L}) {
      const d::tile_rows w = d::window_tile_rows(t0, n, rows, left);
      INFO("t0=", t0, " n=", n);
      CHECK(w.first >= -1);
      CHECK(w.first == std::max(t0 - left, -1L));
      CHECK(w.last - w.first + 1 <= rows);
      CHECK(w.last >= w.first);
      CHECK(w.last <= std::max(n - 1, w.first));
      CHECK(w.data_rows() == w.last - w.first);
    }
  for (int data = 0; data < 300; ++data)
    for (const int segs : {8, 16, 32}) {
      const int per = d::scan_rows_per_segment(data, segs);
      CHECK(per % 2 == 1);
      CHECK(per * segs >= data);
    }
}

// The GPU's per-tile arithmetic on the CPU: for every tile of a sequence, shared row r holds
// S[first + r] - S[first] (float, unscaled), a token whose taps lie in [first, last] reads four rows and
// scales by 1/K, any other token sums x directly; both against the float64 reference of SPEC.
TEST_CASE("window tile arithmetic: local prefix rows and the direct path give SPEC's window") {
  std::mt19937_64 rng(4242);
  for (int draw = 0; draw < draws(60); ++draw) {
    const long T = uniform_int(rng, 1, 700), n = uniform_int(rng, 0, 1) ? T : uniform_int(rng, 0, T);
    const long L = uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 0, 2) : uniform_int(rng, 0, 90);
    const bool causal = uniform_int(rng, 0, 1) == 1;
    const long M = causal ? 0 : uniform_int(rng, 0, 90);
    const double hi = uniform_int(rng, 0, 2) == 0 ? 3.0 : 1.0;  // offsets above the plan's max_offset = 1
    d::window_tile_costs k = h200_costs();
    if (uniform_int(rng, 0, 3) == 0) k.limit = 96 * k.row_bytes;  // rows capped: tokens fall back
    const d::window_tile_plan p = d::plan_window_tile(L, M, causal, 1.0, k);
    INFO("T=", T, " n=", n, " L=", L, " M=", M, " causal=", causal, " offsets <= ", hi, " limit=", k.limit);
    REQUIRE(p.tile > 0);
    const vec x = uniform_vec(rng, static_cast<size_t>(T), -1.0, 1.0);
    std::vector<float> xf(x.begin(), x.end());
    const vec ol = uniform_vec(rng, static_cast<size_t>(T), 0.0, hi), orr = uniform_vec(rng, static_cast<size_t>(T), 0.0, hi);
    const float inv_k = 1.0f / float(L + M + 1);
    const bool capped = p.rows < p.tile + long(d::halo_left_rows(L, 1.0) + d::halo_right_rows(M, causal, 1.0));
    double worst = 0.0;
    long fallbacks = 0;
    for (long t0 = 0; t0 < T; t0 += p.tile) {
      const d::tile_rows w = d::window_tile_rows(t0, n, p.rows, p.left);
      std::vector<float> rows(static_cast<size_t>(w.data_rows() + 1), 0.0f);
      for (int r = 1; r <= w.data_rows(); ++r) rows[size_t(r)] = rows[size_t(r - 1)] + xf[size_t(w.first + r)];
      for (long t = t0; t < std::min(t0 + p.tile, n); ++t) {
        const d::window_taps<float> kt =
            d::make_taps<float>(t, float(ol[size_t(t)]), float(orr[size_t(t)]), L, M, n, causal);
        const d::tile_tap<float> e = d::make_tile_tap<float>(kt, w);
        float got;
        if (e.r0 >= 0) {
          CHECK(e.r0 <= w.data_rows());
          CHECK(e.r1 <= w.data_rows());
          CHECK(e.r2 >= 0);
          CHECK(e.r3 >= 0);
          got = inv_k * d::window_value_frac<float>(e.fr, e.fl, rows[size_t(e.r0)], rows[size_t(e.r1)],
                                                     rows[size_t(e.r2)], rows[size_t(e.r3)]);
        } else {
          ++fallbacks;
          if (!capped && ol[size_t(t)] <= 1.0 && orr[size_t(t)] <= 1.0) FAIL("a window within max_offset left the tile");
          got = direct_value(xf, kt, inv_k);
        }
        worst = std::max(worst, std::fabs(double(got) - spec_window(xf, t, ol[size_t(t)], orr[size_t(t)], L, M, n, causal)));
      }
    }
    INFO("T=", T, " n=", n, " L=", L, " M=", M, " causal=", causal, " offsets <= ", hi, " tile=", p.tile,
         " rows=", p.rows, " left=", p.left, " fallbacks=", fallbacks);
    CHECK(worst <= 2e-5);
  }
}

// The segmented forward (window_forward_segments_kernel), the GPU's way: a tile's span [t0 - left,
// t1 - 1 + right] walked in segments of `rows` rows (base row included), each as local prefix sums from
// its base; every token adds window_value_frac of its taps clamped into each segment (segment_row); 1/K
// once at the end. Short segments here (2 to 40 rows) put every window across many of them.
TEST_CASE("window segments: a window's value summed over segments of its span gives SPEC's window") {
  std::mt19937_64 rng(777);
  for (int draw = 0; draw < draws(80); ++draw) {
    const long T = uniform_int(rng, 1, 600), n = uniform_int(rng, 0, 1) ? T : uniform_int(rng, 0, T);
    const bool causal = uniform_int(rng, 0, 3) == 0;
    const long L = uniform_int(rng, 0, 300), M = causal ? 0 : uniform_int(rng, 0, 300);
    const double hi = uniform_int(rng, 0, 3) == 0 ? 2.0 : 1.0;  // offsets past the halo's max_offset = 1
    const int tile = 32 << uniform_int(rng, 0, 3), rows = static_cast<int>(uniform_int(rng, 2, 40));  // 32 to 256 tokens
    const int left = static_cast<int>(d::halo_left_rows(L, 1.0)), right = static_cast<int>(d::halo_right_rows(M, causal, 1.0));
    INFO("T=", T, " n=", n, " L=", L, " M=", M, " causal=", causal, " offsets <= ", hi, " tile=", tile, " rows=", rows);
    const vec x = uniform_vec(rng, static_cast<size_t>(T), -1.0, 1.0);
    std::vector<float> xf(x.begin(), x.end());
    const vec ol = uniform_vec(rng, static_cast<size_t>(T), 0.0, hi), orr = uniform_vec(rng, static_cast<size_t>(T), 0.0, hi);
    const float inv_k = 1.0f / float(L + M + 1);
    double worst = 0.0;
    long direct = 0, segments = 0;
    for (long t0 = 0; t0 < T; t0 += tile) {
      const long t1 = std::min(t0 + tile, T);
      long first = std::max(t0 - left, -1L), last = std::min(t1 - 1 + right, n - 1);
      if (last < first) last = first;
      const int span = static_cast<int>(last - first);
      for (long t = t0; t < std::min(t1, n); ++t) {
        const d::window_taps<float> kt =
            d::make_taps<float>(t, float(ol[size_t(t)]), float(orr[size_t(t)]), L, M, n, causal);
        float got;
        if (d::taps_min(kt) < first || d::taps_max(kt) > last) {
          ++direct;
          if (ol[size_t(t)] <= 1.0 && orr[size_t(t)] <= 1.0) FAIL("a window within max_offset left the span");
          got = direct_value(xf, kt, inv_k);
        } else {
          const int o[4] = {int(kt.i0 - first), int(kt.i1 - first), int(kt.i2 - first), int(kt.i3 - first)};
          float acc = 0.0f;
          for (int lo = 0; lo < span; lo += rows - 1) {
            const int top = std::min(lo + rows - 1, span);
            std::vector<float> seg(static_cast<size_t>(top - lo + 1), 0.0f);  // S from the segment's base row
            for (int r = 1; r <= top - lo; ++r) seg[size_t(r)] = seg[size_t(r - 1)] + xf[size_t(first + lo + r)];
            acc += d::window_value_frac<float>(kt.fr, kt.fl, seg[size_t(d::segment_row(o[0], lo, top))],
                                               seg[size_t(d::segment_row(o[1], lo, top))],
                                               seg[size_t(d::segment_row(o[2], lo, top))],
                                               seg[size_t(d::segment_row(o[3], lo, top))]);
            ++segments;
          }
          got = inv_k * acc;
        }
        worst = std::max(worst, std::fabs(double(got) - spec_window(xf, t, ol[size_t(t)], orr[size_t(t)], L, M, n, causal)));
      }
    }
    INFO("direct=", direct, " segment visits=", segments);
    CHECK(worst <= 2e-5);
  }
  // A window wholly left or right of a segment adds exactly zero; a row inside is kept.
  CHECK(d::segment_row(-5, 10, 20) == 0);
  CHECK(d::segment_row(25, 10, 20) == 10);
  CHECK(d::segment_row(13, 10, 20) == 3);
}

// The offset gradients the GPU's way (window_offsets_grad_gather_kernel): per (token, head) the two
// rows of x that detail::left_slope_row / right_slope_row name (or none), per 16-byte column of V channels
// the float dot product with dy in channel order times 1/K, per head the columns' sum in column order
// (slots from products_slot), times L or M at the end (the combine's factor). Against SPEC's S
// differences in float64 (offsets rounded to float and multiplied by L or M in float, as make_taps
// does). Offsets include 0, 1, values that make o * L an integer, and values past 1 (clamps).
TEST_CASE("offset gradients from two rows of x per token: the emulated gather block gives SPEC's dy/do") {
  std::mt19937_64 rng(4242);
  long checked = 0, zero_rows = 0;
  for (int draw = 0; draw < draws(60); ++draw) {
    const int V = uniform_int(rng, 0, 1) ? 8 : 4, cols = 64 / V;
    const int R = std::min(64, V << uniform_int(rng, 0, 3)), nh = 64 / R;  // one block of 64 channels
    const int tile = 2 * 2 * (256 / cols);  // offsets_grad_policy: 2 passes of 2 tokens per thread, 256 threads
    const long T = uniform_int(rng, 1, 700), n = uniform_int(rng, 0, 1) ? T : uniform_int(rng, 0, T);
    const bool causal = uniform_int(rng, 0, 3) == 0;
    const long L = uniform_int(rng, 0, 1) ? uniform_int(rng, 0, 20) : uniform_int(rng, 0, 600);
    const long M = causal ? 0 : (uniform_int(rng, 0, 1) ? uniform_int(rng, 0, 20) : uniform_int(rng, 0, 600));
    const double K = double(L + M + 1);
    INFO("T=", T, " n=", n, " L=", L, " M=", M, " causal=", causal, " V=", V, " R=", R);
    const vec x = uniform_vec(rng, static_cast<size_t>(T * 64), -1.0, 1.0), dy = uniform_vec(rng, static_cast<size_t>(T * 64), -1.0, 1.0);
    std::vector<float> xf(x.begin(), x.end()), dyf(dy.begin(), dy.end());
    auto draw_offset = [&](long ext) {
      switch (uniform_int(rng, 0, 5)) {
        case 0: return 0.0f;
        case 1: return 1.0f;
        case 2: return ext > 0 ? float(uniform_int(rng, 0, ext)) / float(ext) : 0.5f;  // o * ext often an integer
        case 3: return float(uniform_int(rng, 100, 300)) / 100.0f;                      // past 1: clamps at the ends
        default: return float(std::uniform_real_distribution<double>(0.0, 1.0)(rng));
      }
    };
    std::vector<float> ol(static_cast<size_t>(T * nh)), orr(static_cast<size_t>(T * nh));
    for (size_t i = 0; i < ol.size(); ++i) {
      ol[i] = draw_offset(L);
      orr[i] = draw_offset(M);
    }
    // Reference: S[i] = (1/K) sum_{tau <= i} x[tau] in float64, S[-1] = 0.
    std::vector<double> S(static_cast<size_t>((T + 1) * 64), 0.0);  // S[i] at row i + 1
    for (long t = 0; t < T; ++t)
      for (int c = 0; c < 64; ++c)
        S[size_t((t + 1) * 64 + c)] = S[size_t(t * 64 + c)] + double(xf[size_t(t * 64 + c)]) / K;
    auto Sat = [&](long i, int c) { return S[size_t((i + 1) * 64 + c)]; };
    const float inv_k = 1.0f / float(L + M + 1);
    double worst = 0.0;
    for (long t0 = 0; t0 < T; t0 += tile) {
      const long t1 = std::min(t0 + tile, T), tv1 = std::max(std::min(t1, n), t0);
      // The table: rows of x (or -1) per (token, head).
      std::vector<long> lrow(static_cast<size_t>(tile * nh), -1), rrow(static_cast<size_t>(tile * nh), -1);
      for (long t = t0; t < tv1; ++t)
        for (int h = 0; h < nh; ++h) {
          const auto k = d::make_taps<float, int>(int(t), ol[size_t(t * nh + h)], orr[size_t(t * nh + h)], int(L), int(M), int(n), causal);
          lrow[size_t((t - t0) * nh + h)] = d::slope_code(d::left_slope_row(k), t, 64);
          rrow[size_t((t - t0) * nh + h)] = d::slope_code(causal ? -1 : d::right_slope_row(k), t, 64);
        }
      // Products per (token, column) at their slots, then head sums in column order.
      std::vector<float> prod(static_cast<size_t>(2 * tile * cols), 0.0f);
      for (long t = t0; t < tv1; ++t) {
        const int tok = int(t - t0);
        for (int col = 0; col < cols; ++col) {
          const int h = col * V / R;
          const long ql = lrow[size_t(tok * nh + h)], qr = rrow[size_t(tok * nh + h)];
          // Every load in bounds (a zero slope reads the token's own row), its product then dropped.
          const long ol = d::slope_offset(ql), orr2 = d::slope_offset(qr);
          REQUIRE(ol >= 0);
          REQUIRE(ol + col * V + V <= T * 64);
          REQUIRE(orr2 + col * V + V <= T * 64);
          if (!d::slope_nonzero(ql)) CHECK(ol == t * 64);
          float gl = 0.0f, gr = 0.0f;
          for (int j = 0; j < V; ++j) {
            const float dd = dyf[size_t(t * 64 + col * V + j)];
            gl += dd * xf[size_t(ol + col * V + j)];
            gr += dd * xf[size_t(orr2 + col * V + j)];
          }
          const int slot = d::products_slot(tok, col, cols);
          prod[size_t(tok * cols + slot)] = d::slope_nonzero(ql) ? inv_k * gl : 0.0f;
          prod[size_t((tile + tok) * cols + slot)] = d::slope_nonzero(qr) ? inv_k * gr : 0.0f;
        }
      }
      for (long t = t0; t < tv1; ++t) {
        const int tok = int(t - t0);
        for (int h = 0; h < nh; ++h)
          for (int side = 0; side < (causal ? 1 : 2); ++side) {
            float sum = 0.0f;
            for (int k = h * R / V; k < (h + 1) * R / V; ++k)
              sum += prod[size_t((side * tile + tok) * cols + d::products_slot(tok, k, cols))];
            const float got = sum * float(side == 0 ? L : M);
            // SPEC: L (S[ceil(a_l) - 1] - S[floor(a_l) - 1]) and M (S[ceil(a_r)] - S[floor(a_r)]), 0 at integers.
            const float o = side == 0 ? ol[size_t(t * nh + h)] : orr[size_t(t * nh + h)];
            const double shift = double(o * float(side == 0 ? L : M));
            const double a = std::min(std::max(double(t) + (side == 0 ? -shift : shift), 0.0), double(n - 1));
            double want = 0.0;
            if (std::floor(a) != a)
              for (int c = h * R; c < (h + 1) * R; ++c) {
                const double diff = side == 0 ? Sat(long(std::ceil(a)) - 1, c) - Sat(long(std::floor(a)) - 1, c)
                                              : Sat(long(std::ceil(a)), c) - Sat(long(std::floor(a)), c);
                want += double(dyf[size_t(t * 64 + c)]) * double(side == 0 ? L : M) * diff;
              }
            else
              ++zero_rows;
            worst = std::max(worst, std::fabs(double(got) - want) / double(R));
            ++checked;
          }
      }
    }
    CHECK(worst <= 2e-6);
  }
  INFO("checked=", checked, " zero slopes=", zero_rows);
  CHECK(zero_rows > 0);  // integer and clamped bounds were drawn
  CHECK(checked > zero_rows);
  // The rows themselves: a fractional left bound reads x[floor(a_l)], a fractional right bound x[ceil(a_r)].
  const auto k = d::make_taps<float, int>(10, 0.25f, 0.5f, 6, 3, 20, false);  // a_l = 8.5, a_r = 11.5
  CHECK(d::left_slope_row(k) == 8);
  CHECK(d::right_slope_row(k) == 12);
  const auto z = d::make_taps<float, int>(10, 0.5f, 1.0f, 6, 3, 12, false);  // a_l = 7, a_r clamped to 11
  CHECK(d::left_slope_row(z) == -1);
  CHECK(d::right_slope_row(z) == -1);
  // The table's codes: row 0 and a zero slope at t = 0 stay apart; both layouts' strides decode exactly.
  for (long long xt : {64LL, 16LL * 1024LL, 4096LL * 1024LL}) {
    CHECK(d::slope_nonzero(d::slope_code(0, 0, xt)));
    CHECK(d::slope_offset(d::slope_code(0, 0, xt)) == 0);
    CHECK(!d::slope_nonzero(d::slope_code(-1, 0, xt)));
    CHECK(d::slope_offset(d::slope_code(-1, 0, xt)) == 0);
    CHECK(d::slope_offset(d::slope_code(-1, 4095, xt)) == 4095 * xt);
    CHECK(d::slope_offset(d::slope_code(17, 4095, xt)) == 17 * xt);
  }
}

}  // TEST_SUITE
