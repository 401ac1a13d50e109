// The CUDA path's host-side planning, tested without a GPU (nothing here launches a kernel): channel
// blocks of the window kernels, the shared-memory plan of a tile and the rows it keeps, the 32-bit index
// choice, the dW grid and workspace arithmetic. These run, and must pass, on any machine.
#include "gpu_util.cuh"

#include <talkconv/cuda/agent_window.cuh>
#include <talkconv/cuda/device_window.cuh>
#include <talkconv/cuda/kernel_window_input_grad.cuh>

namespace {

namespace d = talkconv::cuda::detail;
using talkconv::layout;
using talkconv::status;

template <class F>
status code_of(F&& f) {
  try {
    f();
  } catch (const talkconv::error& e) {
    return e.code();
  }
  return status::success;
}

template <class X>
struct type_tag {
  using type = X;
};

// Opt-in shared memory per block of the GPUs talkconv is built for (sm_80 A100, sm_86 / sm_89, sm_90 H100).
constexpr std::size_t optins[] = {166912, 101376, 232448};

}  // namespace

TEST_CASE("window kernels: every channel lies in exactly one block, and a block's heads are whole or one split") {
  for (index_t H : {1, 2, 3, 5, 8, 16, 64, 100})
    for (index_t R : {1, 2, 3, 7, 16, 24, 31, 32, 40, 63, 64, 65, 100, 128, 129, 300}) {
      const index_t C = H * R;
      const d::window_geom g = d::window_geom::make(talkconv::window_params{H, 3, 2, false}, C);
      INFO("H=", H, " R=", R);
      std::vector<int> owner(static_cast<size_t>(C), -1);
      for (int k = 0; k < g.blocks; ++k) {
        index_t c0 = 0;
        int cn = 0, sub = 0;
        g.block_channels(k, c0, cn, sub);
        REQUIRE(cn >= 1);
        REQUIRE(cn <= d::window_traits::lanes);
        REQUIRE(c0 + cn <= C);
        for (index_t c = c0; c < c0 + cn; ++c) {
          CHECK(owner[static_cast<size_t>(c)] == -1);
          owner[static_cast<size_t>(c)] = k;
        }
        const index_t h_first = c0 / R, nh = (c0 + cn - 1) / R - h_first + 1;
        // The kernels take the heads from block_heads and head_in_block (no division by R on the device).
        index_t hf = -1;
        int nh2 = -1;
        g.block_heads(k, hf, nh2);
        CHECK(hf == h_first);
        CHECK(nh2 == nh);
        for (int x = 0; x < cn; ++x) CHECK(h_first + g.head_in_block(x) == (c0 + x) / R);
        if (g.subs == 1) {  // whole heads only: a head's channel sum is this block's alone
          CHECK(c0 % R == 0);
          CHECK((cn % R == 0 || c0 + cn == C));
          CHECK(nh <= g.heads_per_block);
        } else {  // one split of one head
          CHECK(nh == 1);
          CHECK(sub == static_cast<int>((c0 - h_first * R) / d::window_traits::lanes));
          CHECK(sub < g.subs);
        }
      }
      CHECK(std::count(owner.begin(), owner.end(), -1) == 0);
    }
}

TEST_CASE("window tile plan: shared memory within the device's opt-in, halo for the expected offsets") {
  auto check_plan = [](auto tag, const talkconv::window_params& w, double max_offset, bool grad, std::size_t optin) {
    using A = decltype(tag);
    const talkconv::seq_shape s{1000, 2, 64, layout::tbc};
    INFO("L=", w.max_left, " M=", w.max_right, " causal=", w.causal, " max_offset=", max_offset, " grad=", grad,
         " optin=", optin, " sizeof(A)=", sizeof(A));
    const d::window_launch p = d::plan_window<A>(s, w, max_offset, grad, optin);
    CHECK(p.tile == d::window_traits::fwd_tile);
    CHECK(p.tiles == (s.T + p.tile - 1) / p.tile);
    CHECK(p.cap_rows >= 2);
    // What the kernel carves out of its dynamic shared memory, and the static 2 KiB reserve.
    CHECK(p.smem == (grad ? d::window_smem<A>::offsets_grad(p.cap_rows) : d::window_smem<A>::forward(p.cap_rows)));
    CHECK(p.smem + 2048 <= optin);
    const double mo = std::isfinite(max_offset) && max_offset >= 0 ? max_offset : 1.0;
    // Rows a full tile's taps can touch: [t0 - ceil(L * mo) - 1, t1 - 1 + ceil(M * mo)] plus S[wlo].
    const double span = p.tile + std::ceil(w.max_left * mo) + 1 + (w.causal ? 0 : std::ceil(w.max_right * mo));
    const double room =
        double(optin - 2048 - (grad ? d::window_smem<A>::offsets_grad(0) : d::window_smem<A>::forward(0))) /
        double(sizeof(A) * d::window_traits::lanes);
    if (span <= room - 1) CHECK(p.cap_rows >= span);  // fits: no token takes the direct path
  };
  for (std::size_t optin : optins)
    for (bool grad : {false, true})
      for (double mo : {1.0, 1.25, 5.0, 0.0, -1.0, std::nan(""), 1e300})
        for (const talkconv::window_params& w :
             {talkconv::window_params{1, 0, 0, false}, talkconv::window_params{2, 31, 31, false},
              talkconv::window_params{4, 63, 0, true}, talkconv::window_params{1, 300, 200, false},
              talkconv::window_params{1, 5000, 0, true}}) {
          check_plan(float{}, w, mo, grad, optin);
          check_plan(double{}, w, mo, grad, optin);
        }
  // Less shared memory than two rows: refused with a named error, never a launch failure.
  CHECK(code_of([] {
          d::plan_window<double>(talkconv::seq_shape{10, 1, 8, layout::tbc}, talkconv::window_params{1, 1, 1, false},
                                 1.0, true, 4096);
        }) == status::cuda_error);
}

TEST_CASE("window tile rows: within the kept capacity, inside the span, the whole span when it fits") {
  std::mt19937_64 g(17);
  auto pick = [&](index_t lo, index_t hi) { return std::uniform_int_distribution<index_t>(lo, hi)(g); };
  for (int i = 0; i < 20000; ++i) {
    const index_t t0 = pick(0, 5000), t1 = t0 + pick(1, 128);
    const index_t lo = pick(-1, t0 - 1 < -1 ? -1 : t0 - 1) - (pick(0, 3) == 0 ? pick(0, 2000) : 0);
    const index_t hi = t0 + pick(0, t1 - t0 - 1) + (pick(0, 1) ? pick(0, 2000) : 0);
    const int cap = static_cast<int>(pick(2, 1200));
    index_t wlo = 0, whi = 0;
    d::choose_rows(lo < -1 ? -1 : lo, hi, t0, t1, cap, wlo, whi);
    const index_t l = lo < -1 ? -1 : lo;
    INFO("lo=", l, " hi=", hi, " t0=", t0, " t1=", t1, " cap=", cap, " -> [", wlo, ", ", whi, "]");
    REQUIRE(wlo >= l);
    REQUIRE(whi <= hi);
    REQUIRE(wlo <= whi);
    REQUIRE(whi - wlo + 1 <= cap);
    if (hi - l + 1 <= cap) REQUIRE((wlo == l && whi == hi));
  }
}

TEST_CASE("32-bit indexing only where every offset fits, the weight [P, C] included") {
  CHECK(d::fits_int32(talkconv::seq_shape{1000, 8, 512, layout::tbc}, 16));
  CHECK_FALSE(d::fits_int32(talkconv::seq_shape{index_t(1) << 22, 2, 512, layout::tbc}, 2));
  CHECK_FALSE(d::fits_int32(talkconv::seq_shape{1, 1, 8, layout::tbc}, index_t(1) << 30));
  // x small, the weight P x C = 65536 x 32768 = 2^31 elements: the projection and the offset path of dx
  // index it, so 32-bit indices would overflow (this case used to pick them).
  CHECK_FALSE(d::fits_int32(talkconv::seq_shape{1, 1, 32768, layout::tbc}, 65536));
  CHECK(d::fits_int32(talkconv::seq_shape{1, 1, 32768, layout::tbc}, 16384));
}

TEST_CASE("dW partial sums: at most 128 row chunks covering every row, grid and bytes checked") {
  for (index_t rows : {index_t(1), index_t(255), index_t(256), index_t(257), index_t(65536), index_t(65537),
                       index_t(1) << 24, (index_t(1) << 33) + 5}) {
    const d::param_plan p = d::param_plan::make(rows, 16, 512);
    INFO("rows=", rows);
    CHECK(p.chunks >= 1);
    CHECK(p.chunks <= d::dz_gemm_policy::max_chunks);
    CHECK(p.rows_per_chunk >= 256);
    CHECK(p.chunks * p.rows_per_chunk >= rows);
    CHECK((p.chunks - 1) * p.rows_per_chunk < (rows > 0 ? rows : 1));
    CHECK(p.dw_bytes(16, 512, 4) == std::size_t(p.chunks * 16 * 512 * 4));
    CHECK(p.db_bytes(16, 8) == std::size_t(p.chunks * 16 * 8));
  }
  // ceil(P / proj_chunk) offset tiles on grid z (at most 65535).
  CHECK(code_of([] { d::param_plan::make(100, index_t(d::proj_chunk) * 65535 + 1, 300000); }) == status::size_overflow);
  CHECK(code_of([] { d::param_plan::make(100, index_t(d::proj_chunk) * 65535, 8 * 65535); }) == status::success);
  CHECK(code_of([] {
          d::param_plan::make(1, index_t(1) << 40, index_t(1) << 40).dw_bytes(index_t(1) << 40, index_t(1) << 40, 4);
        }) == status::size_overflow);
}

TEST_CASE("workspace arithmetic never wraps around") {
  d::workspace_plan p;
  CHECK(p.add(1) == 0);
  CHECK(p.add(0) == 256);
  CHECK(p.add(300) == 256);
  CHECK(p.bytes == 256 + 512);
  CHECK(code_of([&] { p.add(std::numeric_limits<std::size_t>::max() - 100); }) == status::size_overflow);
  CHECK(code_of([] { (void)d::checked_bytes(index_t(1) << 62, 8, "n"); }) == status::size_overflow);
  CHECK(d::checked_bytes(index_t(1) << 40, 8, "n") == std::size_t(1) << 43);
}

TEST_CASE("vector tile plan: what the kernels carve fits the opt-in, 4 blocks per SM when the window allows") {
  auto check_vplan = [](auto tag, const talkconv::window_params& w, bool grad, int nh, std::size_t optin) {
    using T = decltype(tag);
    using A = talkconv::acc_t<T>;
    const std::size_t per_sm = optin + 1024;  // sm_80 / sm_90: the SM holds the opt-in plus 1 KiB
    INFO("L=", w.max_left, " M=", w.max_right, " causal=", w.causal, " grad=", grad, " nh=", nh, " optin=", optin,
         " sizeof(T)=", sizeof(T));
    const talkconv::detail::window_tile_plan p = d::plan_vtile<T>(w, 1.0, grad, nh, per_sm, optin);
    REQUIRE(p.tile > 0);
    CHECK(p.tile % d::window_tile_policy<T>::unit == 0);
    CHECK(p.rows >= p.tile + 1);
    // The kernels' carving (rows, tap table, products) is exactly the plan's bytes.
    const std::size_t end = grad ? d::vtile_layout<T>::products_at(p.rows, p.tile, nh) +
                                       2 * sizeof(A) * d::window_tile_policy<T>::cols * std::size_t(p.tile)
                                 : d::vtile_layout<T>::products_at(p.rows, p.tile, nh);
    CHECK(p.smem == end);
    CHECK(p.smem + d::vtile_static_smem <= optin);
    if (w.max_left + w.max_right <= 32 && nh == 1 && optin == 232448)  // H100 / H200: >= 50% occupancy
      CHECK(p.smem + d::vtile_static_smem + d::smem_reserved_per_block <=
            per_sm / d::window_tile_policy<T>::min_blocks);
  };
  for (std::size_t optin : optins)
    for (bool grad : {false, true})
      for (int nh : {1, 2, 8})
        for (const talkconv::window_params& w :
             {talkconv::window_params{1, 0, 0, false}, talkconv::window_params{16, 16, 16, false},
              talkconv::window_params{4, 63, 0, true}, talkconv::window_params{1, 1200, 900, false}}) {
          check_vplan(float{}, w, grad, nh, optin);
          check_vplan(double{}, w, grad, nh, optin);
          check_vplan(__half{}, w, grad, nh, optin);
          check_vplan(__nv_bfloat16{}, w, grad, nh, optin);
        }
}

TEST_CASE("segmented forward plan: taken only when a tile's span does not fit; 2 blocks per SM of 256-token tiles; carving exact") {
  auto check_seg = [](auto tag, const talkconv::window_params& w, int nh, std::size_t optin, bool expect) {
    using T = decltype(tag);
    const std::size_t per_sm = optin + 1024;
    INFO("L=", w.max_left, " M=", w.max_right, " causal=", w.causal, " nh=", nh, " optin=", optin, " sizeof(T)=", sizeof(T));
    const talkconv::detail::window_tile_plan p = d::plan_vtile<T>(w, 1.0, false, nh, per_sm, optin);
    REQUIRE(p.tile > 0);
    const double span = p.tile + talkconv::detail::halo_left_rows(w.max_left, 1.0) +
                        talkconv::detail::halo_right_rows(w.max_right, w.causal, 1.0);
    const d::segments_plan q = d::plan_segments<T>(w, 1.0, nh, per_sm, p);
    CHECK((q.rows > 0) == (p.rows < span));  // segments exactly when the vector tile cannot keep the span
    if (expect) CHECK(q.rows > 0);
    if (q.rows == 0) return;
    REQUIRE(q.rows >= 2);
    CHECK(q.tile <= d::segment_policy<T>::tile);
    CHECK(q.tile % d::window_tile_policy<T>::unit == 0);
    CHECK(q.left == long(talkconv::detail::halo_left_rows(w.max_left, 1.0)));
    CHECK(q.right == long(talkconv::detail::halo_right_rows(w.max_right, w.causal, 1.0)));
    CHECK(q.rows <= q.tile + q.left + q.right + 1);
    CHECK(q.smem == d::vtile_layout<T>::products_at(q.rows, q.tile, nh));
    CHECK(q.smem + d::vtile_static_smem + d::smem_reserved_per_block <= per_sm / d::segment_policy<T>::min_blocks);
    CHECK(q.smem <= optin);
    // The span's rows staged per token: (tile + L + M) / tile, 5 at L = M = 511 for all but double, where
    // the tap table leaves room (one head per block; with 8 the plan weighs a shorter tile's extra rows).
    if (nh == 1) CHECK(q.tile == (sizeof(T) == 8 ? 128 : 256));
  };
  for (std::size_t optin : optins)
    for (int nh : {1, 2, 8}) {
      // L = M = 511 (the 76 ms forward of 2026-11-30 on an H200) and 1200 / 900: segmented everywhere.
      for (const talkconv::window_params& w :
           {talkconv::window_params{1, 511, 511, false}, talkconv::window_params{1, 1200, 900, false}}) {
        check_seg(float{}, w, nh, optin, true);
        check_seg(double{}, w, nh, optin, true);
        check_seg(__half{}, w, nh, optin, true);
        check_seg(__nv_bfloat16{}, w, nh, optin, true);
      }
      // The benchmark window and a causal 511: the whole span fits, no segments (the caller's test).
      for (const talkconv::window_params& w :
           {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{1, 511, 0, true}}) {
        check_seg(float{}, w, nh, optin, false);
        check_seg(__nv_bfloat16{}, w, nh, optin, false);
      }
    }
  // A span too long for int: not applicable (the vector tile's direct path stays).
  talkconv::detail::window_tile_plan capped;
  capped.tile = 32;
  capped.rows = 100;
  CHECK(d::plan_segments<float>(talkconv::window_params{1, index_t(1) << 40, 0, true}, 1.0, 1, 233472, capped).rows == 0);
}

TEST_CASE("dx kernel's shared memory: staged dy rows within the opt-in; on an H100 / H200 a benchmark tile's candidates in one batch, 4 blocks per SM") {
  auto check_dx = [](auto tag, auto fuse, const talkconv::seq_shape& s, const talkconv::window_params& w,
                     std::size_t optin) {
    using T = decltype(tag);
    constexpr bool Fused = decltype(fuse)::value;
    using P = d::dx_policy<T>;
    const std::size_t per_sm = optin + 1024;
    INFO("C=", s.C, " H=", w.heads, " L=", w.max_left, " M=", w.max_right, " fused=", Fused, " optin=", optin,
         " sizeof(T)=", sizeof(T));
    const d::dx_launch p = d::plan_input_grad<T>(s, w);
    const index_t np = w.num_offsets();
    const d::dx_smem_plan q = d::plan_input_grad_smem<T, int, P::vec, Fused>(p, np, per_sm);
    const int groups = P::shape(P::vec).groups;
    // A fused plan beyond the opt-in is not launched (launch_input_grad runs the unfused kernel): that one fits.
    // With 32-bit indices none does here (the 64-bit case below does).
    if (Fused && !d::dx_plan_fits(q, optin)) {
      CHECK((std::is_same<T, float>::value && np > 64 && optin < 200000));
      CHECK(d::dx_plan_fits(d::plan_input_grad_smem<T, int, P::vec, false>(p, np, per_sm), optin));
      return;
    }
    CHECK(d::dx_plan_fits(q, optin));
    // The compaction's ring: 16-byte aligned, in the fused float path's dz buffer, else after everything but the
    // rank table.
    CHECK(q.args.queue_at % 16 == 0);
    if (d::dx_smem<T, int>::queue_in_dz(Fused))
      CHECK(q.args.queue_at == d::dx_smem<T, int>::tail_at(p.bins, groups, q.args.chunks));
    else
      CHECK(q.args.queue_at + d::dx_smem<T, int>::queue_bytes <= (q.args.rank_at ? q.args.rank_at : q.smem));
    CHECK(q.args.queue_at >= d::dx_smem<T, int>::bucketing(p.bins));
    if (!P::stage_dy) {
      CHECK(q.args.stage_rows == 0);
      return;
    }
    CHECK(q.args.queue_at >= q.args.stage_at + std::size_t(P::stage_row_bytes) * q.args.stage_rows);
    const int most = P::threads;  // records per batch: one stage row each
    CHECK(q.args.stage_rows <= most);
    CHECK(q.args.stage_rows >= std::min(most, P::min_stage_rows));
    CHECK(q.args.stage_at % 128 == 0);
    CHECK(q.args.stage_at >= d::dx_smem<T, int>::tail_at(p.bins, groups, q.args.chunks));
    CHECK(q.args.stage_at + std::size_t(P::stage_row_bytes) * q.args.stage_rows <= (q.args.rank_at ? q.args.rank_at : q.smem));
    if (Fused) CHECK(q.args.w_at + sizeof(float) * talkconv::detail::dxf_chunk_floats * q.args.chunks <= q.args.stage_at);
    if (q.args.rank_at) CHECK(q.smem + d::vtile_static_smem + d::smem_reserved_per_block <= per_sm / P::min_blocks);
    if (optin == 232448 && w.heads == 16 && w.max_left == 16 && s.C == 1024) {
      // The benchmark shape: 128 rows + 2 x 17 reach = 162 candidate tokens per tile, one batch; rank table.
      CHECK(q.args.stage_rows >= 162);
      CHECK(q.args.rank_at > 0);
    }
  };
  for (std::size_t optin : optins)
    for (const talkconv::window_params& w :
         {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{16, 63, 0, true},
          talkconv::window_params{64, 5, 7, false}, talkconv::window_params{64, 255, 255, false}}) {
      const talkconv::seq_shape s{4096, 16, 1024, layout::tbc};
      check_dx(__nv_bfloat16{}, std::true_type{}, s, w, optin);
      check_dx(__nv_bfloat16{}, std::false_type{}, s, w, optin);
      check_dx(__half{}, std::true_type{}, s, w, optin);
      check_dx(float{}, std::true_type{}, s, w, optin);
      check_dx(double{}, std::false_type{}, s, w, optin);
    }
  // 64-bit indices, float, P = 128 (H = 64) on 99 KiB per block (sm_86 / sm_89): the fused plan (W^T split hi + lo,
  // 64 KB) does not fit, the launcher runs the unfused kernel, whose plan does; with 32-bit indices the fused one fits.
  {
    using P = d::dx_policy<float>;
    const talkconv::seq_shape s{4096, 16, 1024, layout::tbc};
    const talkconv::window_params w{64, 255, 255, false};
    const d::dx_launch p = d::plan_input_grad<float>(s, w);
    const std::size_t optin = 101376, per_sm = optin + 1024;
    CHECK_FALSE(d::dx_plan_fits(d::plan_input_grad_smem<float, long long, P::vec, true>(p, w.num_offsets(), per_sm), optin));
    CHECK(d::dx_plan_fits(d::plan_input_grad_smem<float, long long, P::vec, false>(p, w.num_offsets(), per_sm), optin));
    CHECK(d::dx_plan_fits(d::plan_input_grad_smem<float, int, P::vec, true>(p, w.num_offsets(), per_sm), optin));
  }
}

TEST_CASE("banded kernels' plans: a tile's span in one segment at the planned max_offset, shared memory within every opt-in") {
  for (const talkconv::window_params& w :
       {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{16, 63, 0, true},
        talkconv::window_params{64, 5, 7, false}, talkconv::window_params{64, 127, 127, false},
        talkconv::window_params{16, 254, 0, true}, talkconv::window_params{4, 0, 0, false}})
    for (double mo : {1.0, 1.0 / (1.0 - 0.3), 10.0})
      for (int nh : {1, 4}) {
        const talkconv::seq_shape s{4096, 16, 1024, layout::tbc};
        INFO("H=", w.heads, " L=", w.max_left, " M=", w.max_right, " causal=", w.causal, " max_offset=", mo, " nh=", nh);
        const d::dx_band_launch dx = d::plan_input_grad_band<__nv_bfloat16>(s, w, mo, nh, true);
        const d::dx_band_launch fw = d::plan_window_forward_band<__nv_bfloat16>(s, w, mo, nh);
        // reach_left <= ceil(L o) + 1, reach_right <= ceil(M o): one segment while the halo is under the cap
        const double halo = std::ceil(double(w.max_left) * mo) + 1.0 + (w.causal ? 0.0 : std::ceil(double(w.max_right) * mo));
        CHECK(dx.args.stage_rows % 16 == 0);
        CHECK(dx.args.stage_rows >= std::min(128.0 + halo, 128.0 + double(talkconv::detail::dx_band_max_k) + 2.0));
        CHECK(dx.args.stage_rows <= 128 + talkconv::detail::dx_band_max_k + 2 + 15);
        CHECK(fw.args.stage_rows == dx.args.stage_rows);
        CHECK(dx.args.taps_at == unsigned(dx.args.stage_rows + 16) * 128u);
        CHECK(dx.args.w_at % 16 == 0);
        CHECK(dx.args.w_at >= dx.args.taps_at + unsigned(nh) * unsigned(dx.args.stage_rows + 16) * 8u);
        CHECK(dx.smem == dx.args.w_at + std::size_t(dx.args.steps) * 2048u);
        CHECK(dx.args.steps == (w.num_offsets() + 7) / 8);
        for (std::size_t optin : optins) {
          INFO("optin=", optin);
          CHECK(dx.smem + d::smem_reserved_per_block + 256 <= optin);
          CHECK(fw.smem + d::smem_reserved_per_block + 256 <= optin);
        }
        CHECK(dx.args.blocks_per_seq == (4096 / 128 + 3) / 4);
        CHECK(fw.args.blocks_per_seq == (4096 / 128 + 1) / 2);
      }
}

TEST_CASE("float banded dx's and forward's plans: the stage capped to keep 2 blocks per SM; the benchmark tile's span in one segment on an H100 / H200") {
  using pol = d::dx_band_policy<float>;
  for (const talkconv::window_params& w :
       {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{16, 63, 0, true},
        talkconv::window_params{64, 5, 7, false}, talkconv::window_params{4, 63, 63, false},
        talkconv::window_params{4, 0, 0, false}})
    for (double mo : {1.0, 1.0 / (1.0 - 0.3), 10.0})
      for (int nh : {1, 4})
        for (bool fused : {true, false})
          for (std::size_t optin : optins) {
            const std::size_t per_sm = optin + 1024;
            const talkconv::seq_shape s{4096, 16, 1024, layout::tbc};
            INFO("H=", w.heads, " L=", w.max_left, " M=", w.max_right, " causal=", w.causal, " max_offset=", mo,
                 " nh=", nh, " fused=", fused, " optin=", optin);
            const d::dx_band_launch p = d::plan_input_grad_band<float>(s, w, mo, nh, fused, per_sm);
            CHECK(p.args.stage_rows % 16 == 0);
            CHECK(p.args.stage_rows >= 32);
            CHECK(p.args.taps_at == unsigned(p.args.stage_rows + pol::pad_rows) * pol::row_bytes);
            CHECK(p.args.w_at % 16 == 0);
            CHECK(p.args.w_at >= p.args.taps_at + unsigned(nh) * unsigned(p.args.stage_rows + pol::pad_rows) * 8u);
            CHECK(p.args.steps == (fused ? (w.num_offsets() + 7) / 8 : 0));
            CHECK(p.smem == p.args.w_at + std::size_t(p.args.steps) * 256u * 16u);
            // uncapped it is the 16-bit plan's stage; capped, 2 blocks per SM fit whenever 32 rows do
            const d::dx_band_launch open = d::plan_input_grad_band<float>(s, w, mo, nh, fused);
            CHECK(p.args.stage_rows <= open.args.stage_rows);
            if (p.args.stage_rows > 32 || p.args.stage_rows == open.args.stage_rows)
              CHECK(p.smem + d::smem_reserved_per_block <= per_sm / pol::min_blocks);
            CHECK(p.smem + d::smem_reserved_per_block <= optin);
            if (optin == 232448 && w.heads == 16 && w.max_left == 16 && mo == 1.0 && nh == 1)
              CHECK(p.args.stage_rows == open.args.stage_rows);  // the benchmark shape: one segment per tile
            // the forward's: its 128-row tap table beside the stage
            const d::dx_band_launch fw = d::plan_window_forward_band<float>(s, w, mo, nh, per_sm);
            const d::dx_band_launch fw_open = d::plan_window_forward_band<float>(s, w, mo, nh);
            CHECK(fw.args.stage_rows % 16 == 0);
            CHECK(fw.args.stage_rows <= fw_open.args.stage_rows);
            CHECK(fw.smem == std::size_t(fw.args.taps_at) + std::size_t(nh) * 128u * 8u);
            if (fw.args.stage_rows > 32 || fw.args.stage_rows == fw_open.args.stage_rows)
              CHECK(fw.smem + d::smem_reserved_per_block <= per_sm / pol::min_blocks);
            if (optin == 232448 && w.heads == 16 && w.max_left == 16 && mo == 1.0 && nh == 1)
              CHECK(fw.args.stage_rows == fw_open.args.stage_rows);
          }
}

TEST_CASE("fused layer forward's plan: the banded forward's segments, its parts carved in order, 2 blocks per SM at the benchmark's windows (16-bit x: A100, H100 / H200; float: H100 / H200), P = 64 on an H100 / H200 only") {
  auto check_type = [](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool f32 = std::is_same<T, float>::value;
    using pol = d::dx_band_policy<T>;
    for (const talkconv::window_params& w :
         {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{16, 63, 0, true},
          talkconv::window_params{8, 5, 7, false}, talkconv::window_params{16, 127, 127, false},
          talkconv::window_params{16, 20, 20, false}, talkconv::window_params{32, 254, 0, true},
          talkconv::window_params{2, 0, 0, false}})
      for (double mo : {1.0, 1.0 / (1.0 - 0.3)})
        for (std::size_t per_sm : {std::size_t(0), optins[0] + 1024, optins[2] + 1024}) {
          if (w.window_len() > pol::fwd_max_k) continue;  // the banded forward's limit: not fused
          const talkconv::seq_shape s{4100, 16, 1024, layout::tbc};
          INFO("float=", f32, " H=", w.heads, " L=", w.max_left, " M=", w.max_right, " causal=", w.causal,
               " max_offset=", mo, " per_sm=", per_sm);
          const int nh = 1;  // 16 heads of 64 channels
          auto check_plan = [&](auto bn) {
            constexpr int BN = decltype(bn)::value;
            using fsm = d::forward_fused_smem<T, BN>;
            const index_t P = w.num_offsets();
            const d::forward_fused_launch p = d::plan_forward_fused<T, BN>(s, w, mo, nh, per_sm);
            const d::dx_band_launch fw = d::plan_window_forward_band<T>(s, w, mo, nh, per_sm);
            CHECK(p.tiles == (4100 + 127) / 128);
            CHECK(p.args.stage_rows == fw.args.stage_rows);  // the banded forward's segments: its bits
            CHECK(p.args.causal == w.causal);
            // the projection's tiles, then the offsets tile; the stage over both; the taps table past the larger
            CHECK(fsm::offsets_at() >= sizeof(d::project_smem<T, BN>));
            CHECK(fsm::offsets_at() % 128 == 0);
            CHECK(fsm::stage_bytes(p.args.stage_rows) == std::size_t(p.args.stage_rows + pol::pad_rows) * pol::row_bytes);
            const std::size_t taps = fsm::taps_at(p.args.stage_rows, P);
            CHECK(taps % 128 == 0);
            CHECK(taps >= fsm::offsets_at() + 128u * std::size_t(P) * 4u);
            CHECK(taps >= fsm::stage_bytes(p.args.stage_rows));
            CHECK(taps < (fsm::offsets_at() + 128u * std::size_t(P) * 4u > fsm::stage_bytes(p.args.stage_rows)
                              ? fsm::offsets_at() + 128u * std::size_t(P) * 4u
                              : fsm::stage_bytes(p.args.stage_rows)) + 128u);
            CHECK(p.smem == taps + std::size_t(w.heads) * 1024u);
            const std::size_t block = p.smem + 128 + d::smem_reserved_per_block;
            if (w.window_len() <= 33 && P <= 32) {  // the benchmark's windows: 2 blocks per SM
              CHECK(2 * block <= optins[2] + 1024);   // an H100 / H200
              if (!f32) CHECK(2 * block <= optins[0] + 1024);  // 16-bit x: an A100 too
            }
            if (!f32) CHECK(block <= optins[0]);  // 16-bit x: one block on an A100 at any K <= 255
          };
          if (w.num_offsets() <= 8) check_plan(std::integral_constant<int, d::project_bn<T, 8>()>{});
          if (w.num_offsets() <= 16) check_plan(std::integral_constant<int, 16>{});
          if (w.num_offsets() <= 32) check_plan(std::integral_constant<int, 32>{});
        }
  };
  check_type(type_tag<__nv_bfloat16>{});
  check_type(type_tag<float>{});
  // float at the benchmark's shape on an H200 (233472 bytes an SM): the stage of 176 + 8 rows, 110 KB a block
  {
    const talkconv::window_params w{16, 16, 16, false};
    const d::forward_fused_launch p =
        d::plan_forward_fused<float, 32>(talkconv::seq_shape{4096, 16, 1024, layout::tbc}, w, 1.0, 1, 233472);
    CHECK(p.args.stage_rows == 176);
    CHECK(p.smem == 110592);
  }
  // P = 64 (two offset tiles of 32): two blocks fit an H100 / H200's SM, not an A100's (the two kernels run there)
  const talkconv::window_params w{32, 9, 12, false};
  const d::forward_fused_launch p =
      d::plan_forward_fused<__nv_bfloat16, 32>(talkconv::seq_shape{4096, 16, 1024, layout::tbc}, w, 1.0, 1);
  const std::size_t block = p.smem + 128 + d::smem_reserved_per_block;
  CHECK(2 * block <= optins[2] + 1024);
  CHECK(2 * block > optins[0] + 1024);
}

TEST_CASE("fused window backward's plan: the banded dx's segments and W steps for one tile per block, shared memory the larger of the gather's and the banded dx's") {
  auto check_type = [](auto tag) {
    using T = typename decltype(tag)::type;
    INFO("T=", sizeof(T) == 2 ? "bfloat16" : "float");
    for (const talkconv::window_params& w :
         {talkconv::window_params{16, 16, 16, false}, talkconv::window_params{16, 63, 0, true},
          talkconv::window_params{8, 5, 7, false}, talkconv::window_params{16, 127, 127, false},
          talkconv::window_params{16, 60, 60, false}, talkconv::window_params{64, 9, 12, false},
          talkconv::window_params{2, 0, 0, false}})
      for (double mo : {1.0, 1.0 / (1.0 - 0.3)})
        for (int nh : {1, 2, 4})
          for (std::size_t per_sm : {std::size_t(0), std::size_t(233472), std::size_t(167936)}) {
            const talkconv::seq_shape s{4100, 16, 1024, layout::tbc};
            INFO("H=", w.heads, " L=", w.max_left, " M=", w.max_right, " max_offset=", mo, " nh=", nh, " per_sm=", per_sm);
            const d::backward_fused_launch p = d::plan_backward_fused<T>(s, w, mo, nh, per_sm);
            const d::dx_band_launch dx = d::plan_input_grad_band<T>(s, w, mo, nh, true, per_sm);
            CHECK(p.tiles == (4100 + 127) / 128);
            CHECK(p.args.tiles_per_block == 1);
            CHECK(p.args.blocks_per_seq == p.tiles);
            // the banded dx kernel's segments and W steps and layout: its bits
            CHECK(p.args.stage_rows == dx.args.stage_rows);
            CHECK(p.args.steps == dx.args.steps);
            CHECK(p.args.steps == static_cast<int>((w.num_offsets() + 7) / 8));
            CHECK(p.args.taps_at == dx.args.taps_at);
            CHECK(p.args.w_at == dx.args.w_at);
            CHECK(p.args.causal == w.causal);
            const std::size_t gather = d::offsets_grad_layout<T>::bytes(d::offsets_grad_policy<T>::tile, nh);
            CHECK(p.smem >= gather);
            CHECK(p.smem >= dx.smem);
            CHECK((p.smem == gather || p.smem == dx.smem));
          }
  };
  check_type(type_tag<__nv_bfloat16>{});
  check_type(type_tag<float>{});
  // Float at the benchmark shape on an H100 / H200 (228 KB an SM): two blocks fit (stage 176 rows, 112,064 bytes),
  // so the layer backward takes the fused kernel there; the gather's tile holds whole passes of the block's tile.
  const d::backward_fused_launch f = d::plan_backward_fused<float>(talkconv::seq_shape{4096, 16, 1024, layout::tbc},
                                                                     talkconv::window_params{16, 16, 16, false}, 1.0, 1,
                                                                     233472);
  CHECK(f.args.stage_rows == 176);
  CHECK(f.smem == 112064);
  CHECK(2 * (f.smem + d::smem_reserved_per_block) <= 233472);
  CHECK(talkconv::detail::band_tile_rows % d::offsets_grad_policy<float>::tile == 0);
  CHECK(talkconv::detail::band_tile_rows % d::offsets_grad_policy<__nv_bfloat16>::tile == 0);
}

TEST_CASE("sorted-events dx: taken exactly where the banded dx is not by shape; its plan carves disjoint parts within every opt-in") {
  // Where the banded kernels take a problem by shape the sorted path never does (its workspace is not asked for),
  // and the other way round; double always takes it.
  const talkconv::seq_shape s{4096, 16, 1024, layout::tbc};
  for (const long K : {3L, 33L, 127L, 129L, 255L, 257L, 513L}) {
    const talkconv::window_params w{16, (K - 1) / 2, (K - 1) / 2, false};
    const d::window_geom wg = d::window_geom::make(w, s.C);
    CHECK(d::sorted_dx_applies<float>(s, w) == (TALKCONV_CUDA_DX_SORTED != 0 && !d::band_shape_applies<float>(wg, s, w)));
    CHECK(d::sorted_dx_applies<__nv_bfloat16>(s, w) ==
          (TALKCONV_CUDA_DX_SORTED != 0 && !d::band_shape_applies<__nv_bfloat16>(wg, s, w)));
    CHECK(d::sorted_dx_applies<double>(s, w) == (TALKCONV_CUDA_DX_SORTED != 0));
  }
  CHECK_FALSE(d::sorted_dx_applies<float>(talkconv::seq_shape{0, 16, 1024, layout::tbc}, talkconv::window_params{16, 200, 200, false}));
  // The gather's shared memory: every head count a block can meet, fused or not, both index widths.
  auto check_plan = [](auto tag, auto idx, auto vec, auto fuse, int H, index_t P) {
    using T = typename decltype(tag)::type;
    using Idx = typename decltype(idx)::type;
    using A = talkconv::acc_t<T>;
    using U = std::make_unsigned_t<Idx>;
    constexpr int VEC = decltype(vec)::value;
    constexpr bool Fused = decltype(fuse)::value;
    using pol = d::dx_policy<T>;
    const talkconv::seq_shape s{1000, 2, 64, layout::btc};
    const talkconv::window_params w{H, 300, 200, false};
    std::size_t smem = 0;
    const auto a = d::plan_sorted_dx<T, Idx, VEC, Fused>(s, w, P, smem);
    INFO("H=", H, " VEC=", VEC, " fused=", Fused, " idx bytes=", sizeof(Idx), " smem=", smem);
    CHECK(a.nh_max == H);  // 64 channels: every head in one block
    CHECK(a.cap * sizeof(typename decltype(a)::value) == std::size_t(pol::sorted_stage_bytes));
    const std::size_t scan = sizeof(A) * 2 * std::size_t(pol::shape(VEC).groups) * pol::lanes;
    CHECK(a.rs_at >= std::max<std::size_t>(scan, std::size_t(pol::sorted_stage_bytes)));
    CHECK(a.hb_at >= a.rs_at + sizeof(U) * std::size_t(H) * (pol::tile + 1));
    CHECK(a.car_at >= a.hb_at + sizeof(U) * (2 * std::size_t(H) + 1));
    CHECK(a.rs_at % 16 == 0);
    CHECK(a.hb_at % 16 == 0);
    CHECK(a.car_at % 16 == 0);
    const std::size_t car_end = a.car_at + (sizeof(U) + sizeof(A) + 1) * std::size_t(pol::threads);
    if (Fused) {
      CHECK(a.chunks == static_cast<int>((P + 31) / 32));
      CHECK(a.w_at >= car_end);
      CHECK(a.w_at % 16 == 0);
      CHECK(smem == a.w_at + sizeof(float) * std::size_t(talkconv::detail::dxf_chunk_floats) * std::size_t(a.chunks) *
                                 (pol::split_w ? 2 : 1) +
                         sizeof(float) * std::size_t(pol::tile) * 32);
    } else {
      CHECK(a.chunks == 0);
      CHECK(smem >= car_end);
    }
    // Within every GPU's opt-in, but float's fused plan of 4 W^T chunks (P > 96: 64 KiB of W hi + lo) on sm_86 / sm_89,
    // where the launcher takes the unfused kernel (as the event kernel's).
    CHECK(smem + 1024 <= optins[0]);
    CHECK(smem + 1024 <= optins[2]);
    if (!(Fused && pol::split_w && a.chunks == 4)) CHECK(smem + 1024 <= optins[1]);
    CHECK(a.blocks_per_seq == (a.tiles + a.tiles_per_block - 1) / a.tiles_per_block);
    CHECK(a.tiles == (1000 + pol::tile - 1) / pol::tile);
  };
  for (const int H : {1, 2, 4, 16, 64}) {
    check_plan(type_tag<float>{}, type_tag<int>{}, std::integral_constant<int, 1>{}, std::false_type{}, H, 2 * H);
    check_plan(type_tag<float>{}, type_tag<std::int64_t>{}, std::integral_constant<int, 4>{}, std::false_type{}, H, 2 * H);
    check_plan(type_tag<double>{}, type_tag<int>{}, std::integral_constant<int, 2>{}, std::false_type{}, H, 2 * H);
    check_plan(type_tag<double>{}, type_tag<std::int64_t>{}, std::integral_constant<int, 1>{}, std::false_type{}, H, 2 * H);
    check_plan(type_tag<__nv_bfloat16>{}, type_tag<int>{}, std::integral_constant<int, 8>{}, std::false_type{}, H, 2 * H);
  }
  for (const index_t P : {1, 32, 33, 128}) {
    check_plan(type_tag<float>{}, type_tag<int>{}, std::integral_constant<int, 4>{}, std::true_type{}, 4, P);
    check_plan(type_tag<__nv_bfloat16>{}, type_tag<int>{}, std::integral_constant<int, 8>{}, std::true_type{}, 4, P);
    check_plan(type_tag<__half>{}, type_tag<std::int64_t>{}, std::integral_constant<int, 8>{}, std::true_type{}, 4, P);
  }
  // The workspace carve (on a machine without a GPU the query reports the path off: nothing can run there).
  const talkconv::window_params w{16, 300, 200, false};
  const d::sorted_dx_workspace p = d::plan_sorted_dx_workspace<__nv_bfloat16>(s, w);
  if (p.on) {
    CHECK(p.idx32);
    CHECK(p.rows == 16 * 16 * 4096);
    CHECK(p.items == 4 * p.rows);
    CHECK(p.bits == 21);
    CHECK(p.keys1 >= p.keys0 + 4 * std::size_t(p.items));
    CHECK(p.vals0 >= p.keys1 + 4 * std::size_t(p.items));
    CHECK(p.vals1 >= p.vals0 + 8 * std::size_t(p.items));
    CHECK(p.starts >= p.vals1 + 8 * std::size_t(p.items));
    CHECK(p.temp >= p.starts + 4 * std::size_t(p.rows + 1));
    CHECK(p.bytes >= p.temp + p.temp_bytes);
  } else {
    CHECK(p.bytes == 0);
  }
}
