// The CPU's row conversions (cpu/convert.hpp) against Eigen's scalar conversions, bit for bit: every
// bfloat16 and half pattern widened, and floats rounded that hit every rounding case (ties to even and
// odd, just above and below a tie, NaN of both signs and any payload, infinities, overflow to infinity,
// subnormals of float and of the 16-bit type, zeros of both signs), at every length and misalignment
// of a block, and through the helpers the loops use (for_each_acc, store_acc, lane_dot).
#include "util.hpp"

#include <talkconv/cpu/convert.hpp>
#include <talkconv/cpu/heads.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

using talkconv::index_t;
namespace cd = talkconv::cpu::detail;

template <class H>
std::uint16_t bits16(H h) {
  std::uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
template <class H>
H from_bits16(std::uint16_t u) {
  H h;
  std::memcpy(static_cast<void*>(&h), &u, 2);
  return h;
}
inline std::uint32_t bits32(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float from_bits32(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Floats that exercise every rounding path to a 16-bit type whose mantissa ends at bit `cut` of the
// float's (16 for bfloat16, 13 for half), plus random patterns.
std::vector<float> hard_floats(int cut, std::size_t n_random, std::uint64_t seed) {
  std::vector<std::uint32_t> u;
  const std::uint32_t half_ulp = 1u << (cut - 1), low = (1u << cut) - 1;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 4000; ++i) {
    const std::uint32_t base = static_cast<std::uint32_t>(rng()) & ~low;  // a representable value
    for (std::uint32_t d : {0u, 1u, half_ulp - 1, half_ulp, half_ulp + 1, low})  // below, at, above a tie
      u.push_back(base | d);
  }
  for (std::uint32_t s : {0u, 0x80000000u}) {
    for (std::uint32_t v : {0u, 1u, 0x7fu, half_ulp, 0x007fffffu, 0x00800000u, 0x00ffffffu,  // zero, float subnormals
                            0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x7f800000u,              // near max, inf
                            0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0x7fa00000u, 0x7f80ffffu,  // NaNs
                            0x38800000u, 0x387fe000u, 0x387ff000u, 0x33800000u, 0x33000000u, 0x33000001u,  // half subnormals
                            0x477fe000u, 0x477ff000u, 0x477fefffu, 0x47800000u, 0x3f800000u, 0x3f808000u,
                            0x3f818000u, 0x3f807fffu})
      u.push_back(s | v);
  }
  for (std::size_t i = 0; i < n_random; ++i) u.push_back(static_cast<std::uint32_t>(rng()));
  // Exponents around the 16-bit type's range (half: subnormals, normals, overflow), any mantissa.
  for (std::size_t i = 0; i < n_random; ++i) {
    const std::uint32_t r = static_cast<std::uint32_t>(rng());
    u.push_back((r & 0x807fffffu) | ((96u + (r >> 8) % 56u) << 23));
  }
  std::vector<float> f(u.size());
  for (std::size_t i = 0; i < u.size(); ++i) f[i] = from_bits32(u[i]);
  return f;
}

template <class H>
void check_all_widen() {
  std::vector<H> in(65536 + 13);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = from_bits16<H>(static_cast<std::uint16_t>(i * 40503u));
  for (std::size_t i = 0; i < 65536; ++i) in[i] = from_bits16<H>(static_cast<std::uint16_t>(i));
  for (index_t off : {0, 1, 3, 7}) {
    for (index_t n : {0, 1, 7, 8, 9, 63, 64, 65, 200, 65536}) {
      if (off + n > static_cast<index_t>(in.size())) continue;
      std::vector<float> out(static_cast<std::size_t>(n) + 1, 1234.5f);
      cd::row_convert<H>::widen(in.data() + off, n, out.data());
      for (index_t j = 0; j < n; ++j) {
        const float want = static_cast<float>(in[static_cast<std::size_t>(off + j)]);
        if (bits32(out[static_cast<std::size_t>(j)]) != bits32(want))
          FAIL_CHECK("widen: pattern 0x" << std::hex << bits16(in[static_cast<std::size_t>(off + j)]) << " gives 0x"
                                         << bits32(out[static_cast<std::size_t>(j)]) << ", Eigen 0x" << bits32(want));
      }
      CHECK(out[static_cast<std::size_t>(n)] == 1234.5f);  // nothing written past n
    }
  }
}

template <class H>
void check_narrow(int cut) {
  const std::vector<float> f = hard_floats(cut, 200000, 7);
  for (index_t off : {0, 1, 5}) {
    const index_t n = static_cast<index_t>(f.size()) - off;
    std::vector<H> out(static_cast<std::size_t>(n) + 1, from_bits16<H>(0x1234));
    cd::row_convert<H>::narrow(f.data() + off, n, out.data());
    index_t bad = 0;
    for (index_t j = 0; j < n; ++j) {
      const float v = f[static_cast<std::size_t>(off + j)];
      const std::uint16_t want = bits16(H(v)), got = bits16(out[static_cast<std::size_t>(j)]);
      if (want != got && ++bad <= 5)
        FAIL_CHECK("narrow: float 0x" << std::hex << bits32(v) << " gives 0x" << got << ", Eigen 0x" << want);
    }
    CHECK(bad == 0);
    CHECK(bits16(out[static_cast<std::size_t>(n)]) == 0x1234);
  }
  for (index_t n : {0, 1, 7, 8, 9, 63, 64, 65, 130}) {  // short rows: the tails
    std::vector<H> out(static_cast<std::size_t>(n));
    cd::row_convert<H>::narrow(f.data(), n, out.data());
    for (index_t j = 0; j < n; ++j)
      CHECK(bits16(out[static_cast<std::size_t>(j)]) == bits16(H(f[static_cast<std::size_t>(j)])));
  }
}

}  // namespace

TEST_SUITE("blocks") {

TEST_CASE("convert: bfloat16 rows widen and round bit for bit as Eigen::bfloat16") {
  check_all_widen<Eigen::bfloat16>();
  check_narrow<Eigen::bfloat16>(16);
}

TEST_CASE("convert: half rows widen and round bit for bit as Eigen::half") {
  check_all_widen<Eigen::half>();
  check_narrow<Eigen::half>(13);
}

TEST_CASE_TEMPLATE("convert: for_each_acc, store_acc, lane_dot and lane_dot_rows equal their element-by-element forms", T, float,
                   double, Eigen::bfloat16, Eigen::half) {
  using A = talkconv::acc_t<T>;
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (index_t n : {0, 1, 7, 8, 9, 63, 64, 65, 129, 300}) {
    std::vector<T> x(static_cast<std::size_t>(n)), y(static_cast<std::size_t>(n));
    std::vector<A> b(static_cast<std::size_t>(n));
    for (index_t j = 0; j < n; ++j) {
      x[static_cast<std::size_t>(j)] = T(u(rng));
      b[static_cast<std::size_t>(j)] = A(u(rng));
    }
    std::vector<A> seen;
    cd::for_each_acc(x.data(), n, [&](index_t j, A v) {
      CHECK(j == static_cast<index_t>(seen.size()));
      seen.push_back(v);
    });
    REQUIRE(static_cast<index_t>(seen.size()) == n);
    for (index_t j = 0; j < n; ++j)
      CHECK(seen[static_cast<std::size_t>(j)] == talkconv::to_acc<T>(x[static_cast<std::size_t>(j)]));
    cd::store_acc(y.data(), n, [&](index_t j) { return b[static_cast<std::size_t>(j)] * A(3); });
    for (index_t j = 0; j < n; ++j) {
      const T want = talkconv::from_acc<T>(b[static_cast<std::size_t>(j)] * A(3));
      CHECK(std::memcmp(&y[static_cast<std::size_t>(j)], &want, sizeof(T)) == 0);
    }
    // lane_dot: lane j mod 8 (one fused multiply-add per term where the target has FMA), the lanes summed in
    // a fixed tree.
    A lane[8] = {};
    for (index_t j = 0; j < n; ++j)
      lane[j % 8] = cd::lane_madd<A>(talkconv::to_acc<T>(x[static_cast<std::size_t>(j)]), b[static_cast<std::size_t>(j)],
                                     lane[j % 8]);
    const A want = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    const A got = cd::lane_dot<T, A>(x.data(), n, [&](index_t j) { return b[static_cast<std::size_t>(j)]; });
    CHECK(std::memcmp(&got, &want, sizeof(A)) == 0);
    // lane_dot_rows: each of 4 (and 3) rows, n + 3 apart, bit for bit its own lane_dot.
    const index_t lda = n + 3;
    std::vector<T> rows(static_cast<std::size_t>(4 * lda));
    for (auto& v : rows) v = T(u(rng));
    A got4[4];
    cd::lane_dot_rows<4, T, A>(rows.data(), lda, n, b.data(), got4);
    A got3[3];
    cd::lane_dot_rows<3, T, A>(rows.data() + lda, lda, n, b.data(), got3);
    for (int r = 0; r < 4; ++r) {
      const A one = cd::lane_dot<T, A>(rows.data() + r * lda, n, [&](index_t j) { return b[static_cast<std::size_t>(j)]; });
      CHECK(std::memcmp(&got4[r], &one, sizeof(A)) == 0);
      if (r > 0) CHECK(std::memcmp(&got3[r - 1], &one, sizeof(A)) == 0);
    }
  }
}

}  // TEST_SUITE
