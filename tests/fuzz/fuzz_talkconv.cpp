// libFuzzer target for talkconv's public CPU API (issue "talkconv under hostile input").
//
// One input picks an entry point, a dtype, raw sizes, a window, lengths, a dropout setting and data
// (see decode_problem and fill_* below for the byte format; tests/fuzz/make_seeds.py writes seeds).
//
//  * Invalid arguments (sizes <= 0, C % H != 0, products that overflow, bad layouts, lengths outside
//    [0, T], p outside [0, 1), null pointers, L or M negative, causal with M != 0, ...) are passed *raw*,
//    with every non-null pointer aimed at an inaccessible (PROT_NONE) page: SPEC says the call fails
//    with a talkconv::error before touching memory. The harness has its own oracle of which rules an
//    argument set breaks; the thrown (status, argument) must be one of them. A call that does not throw,
//    any other exception type, a status of success or an empty argument() is a finding.
//  * Valid arguments whose tensors would be large are clamped (T * B * C <= 4096), so executions are
//    fast and nothing large is allocated; L and M stay as decoded (huge windows on short sequences are
//    valid calls the library must serve in O(T) memory).
//  * Accepted calls are compared element by element with the float64 direct-form reference
//    (tests/reference.hpp). Fuzzed data is adversarial (magnitudes from 1e-40 to 3e38, cancellation),
//    so a fixed tolerance would either miss bugs or report rounding: each element gets its own bound,
//    the first-order rounding bound of the computation the library performs (sums of |terms| times the
//    number of roundings times the unit roundoff of the accumulator, plus the storage rounding, plus the
//    shift of a window edge that rounding of the offsets can cause). Elements whose magnitudes could
//    overflow the accumulator or storage type, and gradients at a kink of the window edge (an edge
//    within rounding of an integer, where SPEC's derivative jumps), are not compared.
//  * Non-finite data (NaN, Inf) is checked for what SPEC promises: no crash and no sanitizer report;
//    padding rows (t >= n_b) of y / dx / offsets are exactly zero; sequences (or columns, tokens) whose
//    own inputs are finite still match the reference; a NaN offset gives NaN in its head only.
//
// A mismatch prints what was compared and calls __builtin_trap(), which libFuzzer reports.
#include "../reference.hpp"

#include <talkconv/talkconv.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace fz {

using talkconv::index_t;
using talkconv::layout;
using talkconv::status;
using vec = std::vector<double>;
namespace cpu = talkconv::cpu;

constexpr index_t kIndexMax = std::numeric_limits<index_t>::max();
constexpr index_t kIndexMin = std::numeric_limits<index_t>::min();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Limits of an accepted (executed) problem.
constexpr index_t kMaxElems = 4096;  // T * B * C
constexpr index_t kMaxT = 700, kMaxB = 6, kMaxC = 48, kMaxH = 16;
constexpr index_t kMaxDecoderState = index_t(1) << 18;  // (L + 2) * B * C accumulators

std::string g_context;  // what the current input does, printed with a finding
// The current input's arrays (canonical, time-major), printed with a finding when TALKCONV_FUZZ_DUMP is set.
std::vector<std::pair<const char*, const std::vector<double>*>> g_dump;

[[noreturn]] void finding(const std::string& msg) {
  std::fprintf(stderr, "\n==== talkconv fuzz finding ====\n%s\ncontext: %s\n", msg.c_str(), g_context.c_str());
  if (std::getenv("TALKCONV_FUZZ_DUMP"))
    for (const auto& d : g_dump) {
      std::fprintf(stderr, "%s (%zu):", d.first, d.second->size());
      for (size_t i = 0; i < d.second->size() && i < 256; ++i) std::fprintf(stderr, " %.9g", (*d.second)[i]);
      std::fprintf(stderr, "\n");
    }
  std::fflush(stderr);
  __builtin_trap();
}

// ---- input bytes ---------------------------------------------------------------------------------

struct reader {
  const std::uint8_t* p;
  size_t n;
  std::uint8_t u8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16); }
  std::uint64_t u64() { return static_cast<std::uint64_t>(u32()) | (static_cast<std::uint64_t>(u32()) << 32); }
  float f32() {
    const std::uint32_t b = u32();
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
};

// splitmix64: the bulk of the data comes from a generator seeded by the input.
struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// ---- dtypes ----------------------------------------------------------------------------------------

template <class V>
struct dt;
template <>
struct dt<float> {
  static constexpr const char* name = "float";
  static constexpr double unit = 0x1p-24, cap = 3.0e38, max = 3.4028234663852886e38, tiny = 0x1p-149;
};
template <>
struct dt<double> {
  static constexpr const char* name = "double";
  static constexpr double unit = 0x1p-53, cap = 1e60, max = 1.7976931348623157e308, tiny = 0x1p-1074;
};
template <>
struct dt<Eigen::half> {
  static constexpr const char* name = "half";
  static constexpr double unit = 0x1p-11, cap = 65504.0, max = 65504.0, tiny = 0x1p-24;
};
template <>
struct dt<Eigen::bfloat16> {
  static constexpr const char* name = "bfloat16";
  static constexpr double unit = 0x1p-8, cap = 3.0e38, max = 3.3895313892515355e38, tiny = 0x1p-133;
};

template <class V>
V store(double v) {
  using A = talkconv::acc_t<V>;
  return talkconv::from_acc<V>(static_cast<A>(v));
}
template <class V>
double dbl(const V& v) {
  return static_cast<double>(talkconv::to_acc<V>(v));
}

// ---- shapes and layouts -------------------------------------------------------------------------------

inline size_t lidx(layout lay, index_t T, index_t B, index_t w, index_t t, index_t b, index_t j) {
  return static_cast<size_t>(lay == layout::tbc ? (t * B + b) * w + j : (b * T + t) * w + j);
}
inline size_t cidx(index_t B, index_t w, index_t t, index_t b, index_t j) { return static_cast<size_t>((t * B + b) * w + j); }

bool mul_overflows(index_t a, index_t b, index_t* out = nullptr) {
  index_t r;
  const bool o = __builtin_mul_overflow(a, b, &r);
  if (out) *out = r;
  return o;
}

// ---- the oracle of argument errors ------------------------------------------------------------------

struct expected {
  std::vector<std::pair<status, std::string>> v;
  void add(status s, std::string arg) { v.emplace_back(s, std::move(arg)); }
  bool empty() const { return v.empty(); }
  std::string str() const {
    std::ostringstream os;
    for (const auto& e : v) os << talkconv::status_name(e.first) << "(" << e.second << ") ";
    return os.str();
  }
  bool matches(status s, const std::string& arg) const {
    for (const auto& e : v)
      if (e.first == s && (e.second == arg || s == status::size_overflow)) return true;
    return false;
  }
};

struct raw_window {
  index_t H = 1, L = 0, M = 0;
  bool causal = false;
  talkconv::window_params params() const { return talkconv::window_params{H, L, M, causal}; }
};

void expect_shape(expected& e, index_t T, index_t B, index_t C, int lay) {
  if (T <= 0) e.add(status::invalid_shape, "T");
  if (B <= 0) e.add(status::invalid_shape, "B");
  if (C <= 0) e.add(status::invalid_shape, "C");
  if (lay != 0 && lay != 1) e.add(status::invalid_layout, "layout");
  index_t tb;
  if (T > 0 && B > 0 && C > 0 && (mul_overflows(T, B, &tb) || mul_overflows(tb, C))) e.add(status::size_overflow, "T*B*C");
}
void expect_window(expected& e, const raw_window& w) {
  if (w.H <= 0) e.add(status::invalid_shape, "H");
  if (w.L < 0) e.add(status::invalid_window, "max_left");
  if (w.M < 0) e.add(status::invalid_window, "max_right");
  if (w.causal && w.M != 0) e.add(status::invalid_window, "max_right");
  // The library refuses windows with L + M > max / 4 (the largest it can index with room to spare).
  if (w.L >= 0 && w.M >= 0 && w.L > kIndexMax / 4 - w.M) e.add(status::size_overflow, "max_left");
  if (w.H > 0 && !w.causal && w.H > kIndexMax / 2) e.add(status::size_overflow, "H");
}
// P = 2H (or H); false when it overflows.
bool offsets_per_token(const raw_window& w, index_t* P) {
  if (w.H <= 0) return false;
  return !mul_overflows(w.H, w.causal ? 1 : 2, P);
}
void expect_heads(expected& e, index_t T, index_t B, index_t C, const raw_window& w) {
  if (C > 0 && w.H > 0 && C % w.H != 0) e.add(status::invalid_shape, "C");
  index_t P, tb;
  if (T > 0 && B > 0 && offsets_per_token(w, &P) && (mul_overflows(T, B, &tb) || mul_overflows(tb, P)))
    e.add(status::size_overflow, "T*B*P");
}
// Byte sizes: `count` elements of `bytes` bytes must fit an index too (pointer arithmetic, std::vector).
void expect_bytes(expected& e, index_t a, index_t b, index_t c, index_t bytes, const char* what) {
  index_t ab, abc;
  if (a > 0 && b > 0 && c > 0 && !mul_overflows(a, b, &ab) && !mul_overflows(ab, c, &abc) && mul_overflows(abc, bytes))
    e.add(status::size_overflow, what);
}
// The byte sizes of a problem's tensors (and of the weight [P, C] for entry points that take one),
// elements of `sv` (storage) and `sa` (accumulator) bytes.
void expect_problem_bytes(expected& e, index_t T, index_t B, index_t C, const raw_window& w, index_t sv, index_t sa,
                          bool weight) {
  index_t P;
  expect_bytes(e, T, B, C, std::max(sv, sa), "T*B*C");
  if (offsets_per_token(w, &P)) {
    expect_bytes(e, T, B, P, sa, "T*B*P");
    // The weight [P, C]: its element count (validate_weight's checked_mul), then its bytes.
    if (weight && C > 0 && mul_overflows(P, C)) e.add(status::size_overflow, "P*C");
    else if (weight) expect_bytes(e, P, C, 1, std::max(sv, sa), "P*C");
  }
}

void expect_lengths(expected& e, const index_t* lengths, index_t T, index_t B) {
  if (lengths == nullptr || B <= 0) return;
  for (index_t b = 0; b < B; ++b)
    if (lengths[b] < 0 || lengths[b] > T) e.add(status::invalid_length, "lengths[" + std::to_string(b) + "]");
}
void expect_dropout(expected& e, float p) {
  if (!(p >= 0.0f && p < 1.0f)) e.add(status::invalid_dropout, "dropout");
}
void expect_pointer(expected& e, const void* p, const char* name) {
  if (p == nullptr) e.add(status::null_pointer, name);
}

// Runs a call that must be refused; checks the error against the oracle.
template <class F>
void expect_refusal(const expected& e, const char* entry, F&& call) {
  try {
    call();
  } catch (const talkconv::error& err) {
    const std::string what = err.what();
    if (err.code() == status::success || err.argument().empty() || !e.matches(err.code(), err.argument()) ||
        what.find(talkconv::status_name(err.code())) == std::string::npos)
      finding(std::string(entry) + ": refused with status " + talkconv::status_name(err.code()) + " argument '" +
              err.argument() + "' what '" + what + "'; expected one of: " + e.str());
    return;
  } catch (const std::exception& ex) {
    finding(std::string(entry) + ": an exception other than talkconv::error escaped: " + ex.what() +
            "; expected one of: " + e.str());
  } catch (...) {
    finding(std::string(entry) + ": a non-std exception escaped; expected one of: " + e.str());
  }
  finding(std::string(entry) + ": accepted an invalid call; expected one of: " + e.str());
}

// Runs a call that must be accepted.
template <class F>
void expect_accept(const char* entry, F&& call) {
  try {
    call();
  } catch (const talkconv::error& err) {
    finding(std::string(entry) + ": refused a valid call: " + err.what() + " (argument '" + err.argument() + "')");
  } catch (const std::exception& ex) {
    finding(std::string(entry) + ": an exception escaped a valid call: " + ex.what());
  } catch (...) {
    finding(std::string(entry) + ": a non-std exception escaped a valid call");
  }
}

// Non-null pointers that must never be dereferenced: the start of an inaccessible mapping.
void* forbidden_page() {
  static void* p = [] {
    void* q = mmap(nullptr, size_t(1) << 16, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) std::abort();
    return q;
  }();
  return p;
}
template <class P>
P* forbidden() {
  return static_cast<P*>(forbidden_page());
}

// ---- data ----------------------------------------------------------------------------------------------

// How one array's values are drawn. `special` (0..255) is the rate of special values (NaN, Inf,
// extremes, subnormals) mixed in.
struct style {
  std::uint8_t kind = 0, special = 0;
  double scale = 1.0, mu = 0.0;
};
style read_style(reader& r) {
  style s;
  s.kind = r.u8();
  const std::uint8_t sp = r.u8();
  s.special = sp < 192 ? 0 : static_cast<std::uint8_t>((sp - 191) * 4);
  s.scale = std::pow(10.0, static_cast<double>(static_cast<int>(r.u8() % 81) - 40));
  s.mu = (static_cast<double>(static_cast<std::int8_t>(r.u8())) / 16.0) * std::pow(10.0, static_cast<double>(r.u8() % 13) - 6);
  return s;
}

double special_value(std::uint64_t k) {
  static const double v[] = {kNaN,   kInf,     -kInf, 0.0,    -0.0,    1e-40, -1e-40, 1e-310, 3.0e38,  -3.0e38,
                             65504., -65504.,  1e30,  -1e30,  1e-30,   1.0,   -1.0,   0.5,    6e-8,    1e20};
  return v[k % (sizeof v / sizeof v[0])];
}

double draw(rng& g, const style& s, bool offsets) {
  double v;
  if (offsets) {  // offsets of the window blocks and o_pre: mostly in [0, 1], sometimes beyond
    switch (s.kind % 10) {
      case 0: v = g.uniform(); break;
      case 1: v = (g.next() & 1) ? 1.0 : 0.0; break;
      case 2: v = static_cast<double>(g.next() % 9) / 8.0; break;
      case 3: v = 2.0 * g.uniform(); break;
      case 4: v = std::min(1.0, g.uniform() * 1.2); break;
      case 5: v = g.uniform() * s.scale; break;
      case 6: v = static_cast<double>(g.next() % 5) / 3.0; break;
      case 7: v = g.uniform() - 0.25; break;  // some negative: outside SPEC's contract
      case 8: v = s.mu + g.uniform(); break;
      default: v = 1.0 - std::ldexp(g.uniform(), -static_cast<int>(g.next() % 30)); break;
    }
  } else {
    switch (s.kind % 10) {
      case 0: v = g.normal(); break;
      case 1: v = static_cast<double>(static_cast<int>(g.next() % 7) - 3); break;
      case 2: v = s.mu + s.scale * g.normal(); break;
      case 3: v = s.scale * g.uniform(); break;
      case 4: v = s.mu; break;
      case 5: v = (g.next() % 8 == 0) ? s.scale * g.normal() : 0.0; break;
      case 6: v = (g.next() & 1) ? s.scale : -s.scale * 1e-6 * g.normal(); break;
      case 7: v = std::ldexp(g.normal(), static_cast<int>(g.next() % 200) - 100); break;
      case 8: v = 1.0 + g.normal(); break;
      default: v = s.mu + g.normal(); break;
    }
  }
  if (s.special && (g.next() & 255) < s.special) v = special_value(g.next());
  return v;
}

// Finite values stay finite in the storage type: clamp to its range.
double capped(double v, double cap) {
  if (!std::isfinite(v)) return v;
  return std::max(-cap, std::min(cap, v));
}

template <class S>
void fill(std::vector<S>& out, vec& canon, size_t n, rng& g, const style& s, bool offsets) {
  out.resize(n);
  canon.resize(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = store<S>(capped(draw(g, s, offsets), dt<S>::cap));
    canon[i] = dbl<S>(out[i]);
  }
}

// ---- comparison ----------------------------------------------------------------------------------------

struct counters {
  long compared = 0;
};
counters g_count;

// lib against ref within bound; bound = +inf: not compared. A NaN reference requires a NaN result.
void expect_close(const char* what, size_t i, double lib, double ref, double bound) {
  if (!(bound < kInf)) return;
  ++g_count.compared;
  if (std::isnan(ref)) {
    if (!std::isnan(lib)) {
      std::ostringstream os;
      os << what << "[" << i << "]: expected NaN (SPEC: a NaN offset gives NaN in its head), got " << lib;
      finding(os.str());
    }
    return;
  }
  if (!std::isfinite(ref)) return;
  if (!std::isfinite(lib) || !(std::fabs(lib - ref) <= bound)) {
    std::ostringstream os;
    os.precision(17);
    os << what << "[" << i << "]: lib " << lib << " ref " << ref << " |diff| " << std::fabs(lib - ref) << " > bound "
       << bound;
    finding(os.str());
  }
}
void expect_zero(const char* what, size_t i, double lib) {
  if (!(lib == 0.0)) {
    std::ostringstream os;
    os << what << "[" << i << "]: a padding row (t >= n_b) must be 0, got " << lib;
    finding(os.str());
  }
}

bool all_finite(const vec& v) {
  for (double e : v)
    if (!std::isfinite(e)) return false;
  return true;
}

// ---- one decoded problem --------------------------------------------------------------------------------

enum class entry : int {
  prefix_sum = 0,
  head_sum,
  offsets_forward,
  offsets_backward,
  window_forward,
  window_backward,
  layer,
  decoder,
  count
};
const char* entry_name(entry e) {
  static const char* n[] = {"prefix_sum",     "head_sum",        "offsets_forward", "offsets_backward",
                            "window_forward", "window_backward", "layer",           "decoder"};
  return n[static_cast<int>(e)];
}

struct problem {
  entry ep = entry::prefix_sum;
  int dtype = 0;
  index_t T = 1, B = 1, C = 1;
  int lay = 0;
  raw_window w;
  int len_mode = 0;  // 0 null, 1 random valid, 2 all T, 3 valid with one bad entry
  std::vector<index_t> lengths;
  float p = 0.0f;
  bool training = false;
  std::uint64_t seed = 0;
  bool with_bias = true, with_saved = true, with_optional = true;
  int null_which = 0;  // 0: none; k: the k-th required pointer of the entry is null
  std::uint8_t variant = 0;
  index_t extra = 0;  // entry-specific raw value (prefix_sum segment, a layer call's C, decoder B)
  std::uint8_t extra_mode = 0;

  const index_t* lengths_ptr() const { return lengths.empty() ? nullptr : lengths.data(); }
  index_t n(index_t b) const { return lengths.empty() ? T : lengths[static_cast<size_t>(b)]; }
  std::string str() const {
    std::ostringstream os;
    os << entry_name(ep) << " dtype=" << dtype << " T=" << T << " B=" << B << " C=" << C << " H=" << w.H << " L=" << w.L
       << " M=" << w.M << (w.causal ? " causal" : " bidir") << " layout=" << lay << " p=" << p
       << (training ? " training" : "") << " bias=" << with_bias << " saved=" << with_saved << " null=" << null_which
       << " extra=" << extra << " lengths=[";
    for (size_t i = 0; i < lengths.size() && i < 8; ++i) os << (i ? "," : "") << lengths[i];
    os << "]";
    return os.str();
  }
};

index_t decode_size(reader& r, index_t lo, index_t hi) {
  const std::uint8_t b = r.u8();
  if (b < 216) return lo + static_cast<index_t>(b) % (hi - lo + 1);
  switch (b - 216) {
    case 0: return 0;
    case 1: return -1;
    case 2: return -static_cast<index_t>(r.u16()) - 2;
    case 3: return kIndexMax;
    case 4: return kIndexMin;
    case 5: return index_t(1) << 31;
    case 6: return index_t(1) << 32;
    case 7: return index_t(1) << 40;
    case 8: return index_t(1) << 62;
    case 9: return kIndexMax / 2 + 1;
    case 10: return kIndexMax / 4;
    case 11: return static_cast<index_t>(r.u64());
    case 12: return index_t(1) << (r.u8() % 63);
    case 13: return static_cast<index_t>(r.u16());
    case 14: return 3037000500;  // ~ sqrt(2^63)
    case 15: return (index_t(1) << 21) + 1;
    case 16: return kIndexMax / 3;
    case 17: return (index_t(1) << 61) - 1;
    default: return lo + static_cast<index_t>(r.u8()) % (hi - lo + 1);
  }
}

float decode_p(reader& r) {
  const std::uint8_t b = r.u8();
  switch (b % 16) {
    case 0: case 1: case 2: return 0.0f;
    case 3: return 0.1f;
    case 4: return 0.5f;
    case 5: return 0.999f;
    case 6: return std::nextafter(1.0f, 0.0f);
    case 7: return 1.0f;
    case 8: return 1.5f;
    case 9: return -0.1f;
    case 10: return -0.0f;
    case 11: return std::numeric_limits<float>::quiet_NaN();
    case 12: return std::numeric_limits<float>::infinity();
    case 13: return 1e-45f;
    case 14: return static_cast<float>(r.u8()) / 256.0f;
    default: return r.f32();
  }
}

problem decode_problem(reader& r) {
  problem pb;
  pb.ep = static_cast<entry>(r.u8() % static_cast<int>(entry::count));
  pb.dtype = r.u8() % 4;
  const std::uint8_t flags = r.u8();
  pb.w.causal = flags & 1;
  pb.training = flags & 2;
  pb.with_bias = !(flags & 4);
  pb.with_saved = !(flags & 8);
  pb.with_optional = !(flags & 16);
  const std::uint8_t lay = r.u8();
  pb.lay = lay < 240 ? lay % 2 : static_cast<int>(r.u32());
  // T: mostly short, sometimes long enough for several time tiles.
  const std::uint8_t tsel = r.u8();
  if (tsel < 48) pb.T = 1 + tsel % 48;
  else if (tsel < 64) pb.T = 200 + static_cast<index_t>(r.u16()) % 500;
  else pb.T = decode_size(r, 1, 48);
  pb.B = decode_size(r, 1, 4);
  pb.w.H = decode_size(r, 1, 8);
  // C: usually a multiple of H (valid), else raw.
  const std::uint8_t csel = r.u8();
  if (csel < 192 && pb.w.H > 0 && pb.w.H <= kMaxH)
    pb.C = pb.w.H * (1 + static_cast<index_t>(csel) % std::max<index_t>(1, kMaxC / pb.w.H));
  else pb.C = decode_size(r, 1, 48);
  pb.w.L = decode_size(r, 0, 70);
  pb.w.M = pb.w.causal ? ((r.u8() < 240) ? 0 : decode_size(r, 0, 8)) : decode_size(r, 0, 70);
  pb.len_mode = r.u8() % 4;
  pb.p = decode_p(r);
  pb.seed = r.u64();
  pb.null_which = r.u8();
  pb.null_which = pb.null_which < 224 ? 0 : pb.null_which - 223;
  pb.variant = r.u8();
  pb.extra_mode = r.u8();
  pb.extra = decode_size(r, 0, 64);
  return pb;
}

// Valid lengths for B <= kMaxB (mode 3 breaks one), or none.
void make_lengths(problem& pb, reader& r) {
  pb.lengths.clear();
  if (pb.len_mode == 0 || pb.B <= 0 || pb.B > 64) return;
  pb.lengths.resize(static_cast<size_t>(pb.B));
  for (index_t b = 0; b < pb.B; ++b) {
    const std::uint8_t v = r.u8();
    pb.lengths[static_cast<size_t>(b)] = pb.len_mode == 2 || pb.T <= 0 || v >= 224 ? std::max<index_t>(pb.T, 0)
                                         : pb.T < 256 ? static_cast<index_t>(v) % (pb.T + 1) : static_cast<index_t>(v);
  }
  if (pb.len_mode == 3) {
    const size_t at = r.u8() % pb.lengths.size();
    const index_t T = pb.T;
    const index_t bad[] = {-1, T < kIndexMax ? T + 1 : -2, kIndexMin, kIndexMax, T > 0 && T < kIndexMax / 4 ? 2 * T + 5 : -7,
                           T > 0 ? -T : -3};
    index_t v = bad[r.u8() % 6];
    if (v >= 0 && v <= pb.T) v = -1;
    pb.lengths[at] = v;
  }
}

// Sizes a valid problem may have to be executed. A problem that breaks them but no rule is shrunk.
bool too_big(const problem& pb) {
  index_t tb, tbc;
  return pb.T > kMaxT || pb.B > kMaxB || pb.C > kMaxC || pb.w.H > kMaxH || mul_overflows(pb.T, pb.B, &tb) ||
         mul_overflows(tb, pb.C, &tbc) || tbc > kMaxElems;
}
void shrink(problem& pb, reader& r) {
  const auto pos = [](index_t v, index_t m) { return 1 + static_cast<index_t>(static_cast<std::uint64_t>(v) % static_cast<std::uint64_t>(m)); };
  pb.w.H = pos(pb.w.H, 8);
  pb.C = pb.w.H * pos(pb.C, kMaxC / pb.w.H);
  pb.B = pos(pb.B, 4);
  pb.T = pos(pb.T, std::max<index_t>(1, std::min<index_t>(kMaxT, kMaxElems / (pb.B * pb.C))));
  if (pb.len_mode == 3) pb.len_mode = 1;
  make_lengths(pb, r);
}

// ---- rounding bounds ------------------------------------------------------------------------------------

// Window reach (tokens) that offsets up to `omax` give with reach L, clipped to the sequence.
index_t reach_of(double omax, index_t L, index_t n) {
  const double r = std::ceil(omax * static_cast<double>(L)) + 3.0;
  return r >= static_cast<double>(n) ? n : static_cast<index_t>(r);
}
// Rows a tile-local prefix sum can span before it is re-based (see cpu::detail::stream_prefix).
double span_rows(index_t n, index_t reach) { return static_cast<double>(std::min<index_t>(n + 1, 4 * (reach + 1) + 2)); }

// min(v, n), with NaN (an Inf offset times a zero reach) taken as the whole sequence.
double clampn(double v, double n) { return std::isnan(v) ? n : std::min(v, n); }

// Is t - o L (left) or t + o M (right) within `delta` of an integer? There SPEC's offset gradient jumps.
bool near_kink(double u, double delta) { return std::fabs(u - std::round(u)) <= delta; }

// ---- the entry points ----------------------------------------------------------------------------------

template <class V>
struct tensors {
  using A = talkconv::acc_t<V>;
  // Storage-typed arrays in the library's layout, and their canonical (time-major) doubles.
  std::vector<V> x, dy, W, bias, dx0;
  std::vector<A> o, o_pre, d_o;
  vec cx, cdy, cW, cbias, cdx0, co, co_pre, cd_o;  // canonical
  tensors() {
    g_dump = {{"x", &cx}, {"dy", &cdy}, {"W", &cW}, {"bias", &cbias}, {"dx0", &cdx0}, {"offsets", &co}, {"o_pre", &co_pre},
              {"d_offsets", &cd_o}};
  }
  tensors(const tensors&) = delete;
  ~tensors() { g_dump.clear(); }
};

template <class S>
std::vector<S> to_layout(const std::vector<S>& canon_store, layout lay, index_t T, index_t B, index_t w) {
  std::vector<S> out(canon_store.size());
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < w; ++j) out[lidx(lay, T, B, w, t, b, j)] = canon_store[cidx(B, w, t, b, j)];
  return out;
}
template <class S>
vec from_layout(const std::vector<S>& v, layout lay, index_t T, index_t B, index_t w) {
  vec out(v.size());
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < w; ++j) out[cidx(B, w, t, b, j)] = dbl<S>(v[lidx(lay, T, B, w, t, b, j)]);
  return out;
}

// Overrides: up to 16 values placed by the input itself (raw float bits: NaN, Inf, anything).
template <class S>
void apply_overrides(reader& r, std::vector<std::pair<std::vector<S>*, vec*>> arrays) {
  const int k = r.u8() % 17;
  for (int i = 0; i < k; ++i) {
    const size_t a = r.u8() % arrays.size();
    const std::uint16_t at = r.u16();
    const float v = r.f32();
    auto& st = *arrays[a].first;
    auto& cn = *arrays[a].second;
    if (st.empty()) continue;
    const size_t j = at % st.size();
    st[j] = store<S>(static_cast<double>(v));
    cn[j] = dbl<S>(st[j]);
  }
}

ref::problem ref_problem(const problem& pb) {
  ref::problem rp;
  rp.T = pb.T, rp.B = pb.B, rp.C = pb.C, rp.H = pb.w.H, rp.L = pb.w.L, rp.M = pb.w.M, rp.causal = pb.w.causal;
  rp.lengths.assign(pb.lengths.begin(), pb.lengths.end());
  return rp;
}

// The reference offsets this problem's window blocks see: NaN bounds would make the reference
// backward cast NaN to an integer, so callers pass offsets where those are replaced.
bool bound_is_nan(double o, index_t reach) { return std::isnan(o) || (std::isinf(o) && reach == 0); }

template <class V>
void run_prefix_sum(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  const index_t segment = pb.extra_mode < 128 && pb.T > 0 && pb.T < 4096 ? pb.extra % (pb.T + 2) : pb.extra;
  const double scales[] = {1.0, 0.25, 1.0 / 3.0, -2.5, 0.0, 1e30, 1e-30, 1e-40, kNaN, 7.0};
  const A scale = static_cast<A>(scales[pb.variant % 10]);
  expected e;
  expect_shape(e, pb.T, pb.B, pb.C, pb.lay);
  expect_bytes(e, pb.T, pb.B, pb.C, std::max(sizeof(V), sizeof(A)), "T*B*C");
  if (segment < 0) e.add(status::invalid_shape, "segment");
  if (pb.null_which == 1) e.add(status::null_pointer, "x");
  if (pb.null_which == 2) e.add(status::null_pointer, "S");
  const talkconv::seq_shape raw{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)};
  if (!e.empty()) {
    expect_refusal(e, "prefix_sum", [&] {
      cpu::prefix_sum<V, A>(raw, pb.null_which == 1 ? nullptr : forbidden<const V>(), pb.null_which == 2 ? nullptr : forbidden<A>(),
                            scale, segment);
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C;
  const index_t seg = segment;  // raw: huge values included
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  apply_overrides<V>(r, {{&d.x, &d.cx}});
  const auto xs = to_layout(d.x, lay, T, B, C);
  std::vector<A> S(xs.size(), A(-777));
  expect_accept("prefix_sum", [&] { cpu::prefix_sum<V, A>(talkconv::seq_shape{T, B, C, lay}, xs.data(), S.data(), scale, seg); });
  const vec got = from_layout(S, lay, T, B, C);
  const ref::problem rp = ref_problem(pb);
  const double sc = static_cast<double>(scale);
  const long rseg = seg >= T ? 0L : static_cast<long>(seg);
  vec absx(d.cx.size());
  for (size_t i = 0; i < absx.size(); ++i) absx[i] = std::fabs(d.cx[i]);
  ref::problem rp0 = rp;
  rp0.lengths.clear();
  const vec want = ref::prefix_sum(rp0, d.cx, sc, rseg);
  const vec mag = ref::prefix_sum(rp0, absx, std::fabs(sc), rseg);
  const double uA = dt<A>::unit, maxA = dt<A>::max;
  const index_t segl = rseg == 0 ? T : rseg;
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c) {
      bool poisoned = false;
      for (index_t t = 0; t < T; ++t) {
        if (t % segl == 0) poisoned = false;
        const size_t i = cidx(B, C, t, b, c);
        if (!std::isfinite(d.cx[i]) || !std::isfinite(sc)) poisoned = true;
        const double k = static_cast<double>(t % segl + 1);
        double bound = 2.0 * uA * (k + 2.0) * mag[i] + 4.0 * k * dt<A>::tiny;
        if (poisoned || !(mag[i] * 4.0 < maxA)) bound = kInf;
        expect_close("prefix_sum S", i, got[i], want[i], bound);
      }
    }
}

template <class V>
void run_head_sum(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  expected e;
  expect_shape(e, pb.T, pb.B, pb.C, pb.lay);
  expect_window(e, pb.w);
  expect_heads(e, pb.T, pb.B, pb.C, pb.w);
  expect_problem_bytes(e, pb.T, pb.B, pb.C, pb.w, sizeof(A), sizeof(A), false);
  if (pb.null_which == 1) e.add(status::null_pointer, "in");
  if (pb.null_which == 2) e.add(status::null_pointer, "out");
  const talkconv::seq_shape raw{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)};
  if (!e.empty()) {
    expect_refusal(e, "head_sum", [&] {
      cpu::head_sum<A>(raw, pb.w.params(), pb.null_which == 1 ? nullptr : forbidden<const A>(),
                       pb.null_which == 2 ? nullptr : forbidden<A>());
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C, H = pb.w.H, R = C / H;
  std::vector<A> in;
  vec cin;
  fill(in, cin, static_cast<size_t>(T * B * C), g, read_style(r), false);
  apply_overrides<A>(r, {{&in, &cin}});
  const auto ins = to_layout(in, lay, T, B, C);
  std::vector<A> out(static_cast<size_t>(T * B * H), A(-777));
  expect_accept("head_sum", [&] { cpu::head_sum<A>(talkconv::seq_shape{T, B, C, lay}, pb.w.params(), ins.data(), out.data()); });
  const vec got = from_layout(out, lay, T, B, H);
  ref::problem rp = ref_problem(pb);
  rp.lengths.clear();
  const vec want = ref::head_sum(rp, cin);
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h) {
        double mag = 0.0;
        bool clean = true;
        for (index_t c = h * R; c < (h + 1) * R; ++c) {
          mag += std::fabs(cin[cidx(B, C, t, b, c)]);
          clean = clean && std::isfinite(cin[cidx(B, C, t, b, c)]);
        }
        double bound = 2.0 * dt<A>::unit * static_cast<double>(R + 8) * mag;
        if (!clean || !(mag * 2.0 < dt<A>::max)) bound = kInf;
        expect_close("head_sum out", cidx(B, H, t, b, h), got[cidx(B, H, t, b, h)], want[cidx(B, H, t, b, h)], bound);
      }
}

// Expected refusals shared by the offsets and window blocks.
void expect_problem(expected& e, const problem& pb, index_t sv, index_t sa, bool weight) {
  expect_shape(e, pb.T, pb.B, pb.C, pb.lay);
  expect_window(e, pb.w);
  expect_heads(e, pb.T, pb.B, pb.C, pb.w);
  expect_lengths(e, pb.lengths_ptr(), pb.T, pb.B);
  expect_problem_bytes(e, pb.T, pb.B, pb.C, pb.w, sv, sa, weight);
}

// Per-token offset error of the projection + sigmoid + dropout, from the magnitude of z.
struct offsets_err {
  vec d_pre, d_o;  // canonical [T, B, P]; +inf where not bounded
};
template <class A>
offsets_err offsets_bounds(const problem& pb, const vec& cx, const vec& cW, const vec& cbias, const vec& o_pre,
                           double scale_max) {
  const index_t T = pb.T, B = pb.B, C = pb.C;
  index_t P = 0;
  offsets_per_token(pb.w, &P);
  offsets_err e;
  e.d_pre.assign(static_cast<size_t>(T * B * P), kInf);
  e.d_o = e.d_pre;
  const double uA = dt<A>::unit;
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < P; ++j) {
        double zmag = cbias.empty() ? 0.0 : std::fabs(cbias[static_cast<size_t>(j)]);
        for (index_t c = 0; c < C; ++c) zmag += std::fabs(cW[static_cast<size_t>(j * C + c)] * cx[cidx(B, C, t, b, c)]);
        if (!(zmag * 8.0 < dt<A>::max)) continue;  // z may overflow: not bounded
        const double dz = 2.0 * uA * static_cast<double>(C + 4) * zmag;
        const double dpre = std::min(1.0, 0.25 * dz + 8.0 * uA);
        const size_t i = cidx(B, P, t, b, j);
        e.d_pre[i] = dpre;
        e.d_o[i] = scale_max * (dpre + 8.0 * uA * std::fabs(o_pre[i]));
      }
  return e;
}

template <class V>
void run_offsets_forward(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  const talkconv::dropout_params dp{pb.p, pb.seed, pb.training};
  expected e;
  expect_problem(e, pb, sizeof(V), sizeof(A), true);
  expect_dropout(e, pb.p);
  if (pb.null_which == 1) e.add(status::null_pointer, "x");
  if (pb.null_which == 2) e.add(status::null_pointer, "weight");
  if (pb.null_which == 3) e.add(status::null_pointer, "offsets");
  if (!e.empty()) {
    expect_refusal(e, "offsets_forward", [&] {
      cpu::offsets_forward<V>(talkconv::seq_shape{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)}, pb.w.params(),
                              pb.null_which == 1 ? nullptr : forbidden<const V>(), pb.null_which == 2 ? nullptr : forbidden<const V>(),
                              pb.with_bias ? forbidden<const V>() : nullptr, dp, pb.null_which == 3 ? nullptr : forbidden<A>(),
                              pb.with_optional ? forbidden<A>() : nullptr, pb.lengths_ptr());
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C;
  index_t P = 0;
  offsets_per_token(pb.w, &P);
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  const style ws = read_style(r);
  fill(d.W, d.cW, static_cast<size_t>(P * C), g, ws, false);
  fill(d.bias, d.cbias, pb.with_bias ? static_cast<size_t>(P) : 0, g, ws, false);
  apply_overrides<V>(r, {{&d.x, &d.cx}, {&d.W, &d.cW}, {&d.bias, &d.cbias}});
  const auto xs = to_layout(d.x, lay, T, B, C);
  std::vector<A> o(static_cast<size_t>(T * B * P), A(-777)), o_pre(o.size(), A(-777));
  expect_accept("offsets_forward", [&] {
    cpu::offsets_forward<V>(talkconv::seq_shape{T, B, C, lay}, pb.w.params(), xs.data(), d.W.data(),
                            pb.with_bias ? d.bias.data() : nullptr, dp, o.data(), pb.with_optional ? o_pre.data() : nullptr,
                            pb.lengths_ptr());
  });
  const vec got = from_layout(o, lay, T, B, P), got_pre = from_layout(o_pre, lay, T, B, P);
  const ref::problem rp = ref_problem(pb);
  const ref::dropout rd{dp.active(), dp.p, dp.seed};
  vec want_pre, want;
  ref::offsets(rp, d.cx, d.cW, d.cbias, rd, want_pre, want);
  const double smax = dp.active() ? 1.0 / (1.0 - static_cast<double>(dp.p)) : 1.0;
  const offsets_err oe = offsets_bounds<A>(pb, d.cx, d.cW, d.cbias, want_pre, smax);
  const bool params_clean = all_finite(d.cW) && all_finite(d.cbias);
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b) {
      bool clean = params_clean;
      for (index_t c = 0; c < C; ++c) clean = clean && std::isfinite(d.cx[cidx(B, C, t, b, c)]);
      for (index_t j = 0; j < P; ++j) {
        const size_t i = cidx(B, P, t, b, j);
        if (t >= pb.n(b)) {
          expect_zero("offsets_forward offsets", i, got[i]);
          if (pb.with_optional) expect_zero("offsets_forward offsets_pre", i, got_pre[i]);
          continue;
        }
        expect_close("offsets_forward offsets", i, got[i], want[i], clean ? oe.d_o[i] : kInf);
        if (pb.with_optional) expect_close("offsets_forward offsets_pre", i, got_pre[i], want_pre[i], clean ? oe.d_pre[i] : kInf);
      }
    }
}

template <class V>
void run_offsets_backward(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  const talkconv::dropout_params dp{pb.p, pb.seed, pb.training};
  expected e;
  expect_problem(e, pb, sizeof(V), sizeof(A), true);
  expect_dropout(e, pb.p);
  const char* names[] = {"", "x", "weight", "offsets_pre", "d_offsets", "dweight"};
  if (pb.null_which >= 1 && pb.null_which <= 5) e.add(status::null_pointer, names[pb.null_which]);
  if (!e.empty()) {
    const auto nz = [&](int k, auto* p) { return pb.null_which == k ? nullptr : p; };
    expect_refusal(e, "offsets_backward", [&] {
      cpu::offsets_backward<V>(talkconv::seq_shape{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)}, pb.w.params(),
                               nz(1, forbidden<const V>()), nz(2, forbidden<const V>()), nz(3, forbidden<const A>()),
                               nz(4, forbidden<const A>()), dp, pb.with_optional ? forbidden<V>() : nullptr, nz(5, forbidden<V>()),
                               pb.with_bias ? forbidden<V>() : nullptr, pb.lengths_ptr());
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C;
  index_t P = 0;
  offsets_per_token(pb.w, &P);
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  fill(d.W, d.cW, static_cast<size_t>(P * C), g, read_style(r), false);
  fill(d.o_pre, d.co_pre, static_cast<size_t>(T * B * P), g, read_style(r), true);
  fill(d.d_o, d.cd_o, static_cast<size_t>(T * B * P), g, read_style(r), false);
  fill(d.dx0, d.cdx0, static_cast<size_t>(T * B * C), g, read_style(r), false);
  apply_overrides<V>(r, {{&d.x, &d.cx}, {&d.W, &d.cW}, {&d.dx0, &d.cdx0}});
  apply_overrides<A>(r, {{&d.o_pre, &d.co_pre}, {&d.d_o, &d.cd_o}});
  const auto xs = to_layout(d.x, lay, T, B, C);
  const auto ops = to_layout(d.o_pre, lay, T, B, P), dos = to_layout(d.d_o, lay, T, B, P);
  auto dxs = to_layout(d.dx0, lay, T, B, C);
  const auto dx_in = dxs;
  std::vector<V> dW(static_cast<size_t>(P * C), store<V>(-777)), db(static_cast<size_t>(P), store<V>(-777));
  expect_accept("offsets_backward", [&] {
    cpu::offsets_backward<V>(talkconv::seq_shape{T, B, C, lay}, pb.w.params(), xs.data(), d.W.data(), ops.data(),
                             dos.data(), dp, pb.with_optional ? dxs.data() : nullptr, dW.data(),
                             pb.with_bias ? db.data() : nullptr, pb.lengths_ptr());
  });
  const ref::problem rp = ref_problem(pb);
  const ref::dropout rd{dp.active(), dp.p, dp.seed};
  vec want_dx = d.cdx0, want_dW, want_db;
  ref::offsets_backward(rp, d.cx, d.cW, d.co_pre, d.cd_o, rd, want_dx, want_dW, want_db);
  // Magnitudes: dz and its rounding error per token.
  const double uA = dt<A>::unit, uT = dt<V>::unit;
  vec dzmag(static_cast<size_t>(T * B * P), 0.0);
  // dz = (do * m / (1 - p)) * o_pre (1 - o_pre): a subnormal first product is off by up to a subnormal ulp
  // (absolute), which |o_pre (1 - o_pre)| (large for an o_pre far outside [0, 1]) then scales, and the last
  // product adds one more: dz's absolute subnormal error is within tiny * sub, sub = 1 + |o_pre| (1 + |o_pre|).
  vec sub(static_cast<size_t>(T * B * P), 1.0);
  bool all_clean = all_finite(d.cW);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < pb.n(b); ++t) {
      for (index_t j = 0; j < P; ++j) {
        const size_t i = cidx(B, P, t, b, j);
        const double op = d.co_pre[i], gmag = std::fabs(op) * (1.0 + std::fabs(op));  // >= |o_pre (1 - o_pre)|
        dzmag[i] = std::fabs(d.cd_o[i]) * rd.scale(t, b, j) * gmag;
        sub[i] = 1.0 + gmag;
        // dz (and d_o * m / (1 - p), formed first) must fit the accumulator, else it may overflow to Inf.
        const double guard_dz = dt<A>::max / 16.0;
        // o_pre (1 - o_pre) too: o_pre far outside [0, 1] (not a sigmoid) overflows it, and 0 * Inf is NaN.
        if (!(dzmag[i] < guard_dz) || !(std::fabs(d.cd_o[i]) * rd.scale(t, b, j) < guard_dz) ||
            !(gmag < guard_dz))
          dzmag[i] = kInf;
        if (!std::isfinite(dzmag[i])) all_clean = false;
      }
      for (index_t c = 0; c < C; ++c) all_clean = all_clean && std::isfinite(d.cx[cidx(B, C, t, b, c)]);
    }
  double nrows = 0;
  for (index_t b = 0; b < B; ++b) nrows += static_cast<double>(pb.n(b));
  const double guard = std::min(dt<A>::max, dt<V>::max) / 16.0;
  for (index_t j = 0; j < P; ++j) {
    for (index_t c = 0; c < C; ++c) {
      double mag = 0.0, xsum = 0.0;
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < pb.n(b); ++t) {
          mag += dzmag[cidx(B, P, t, b, j)] * std::fabs(d.cx[cidx(B, C, t, b, c)]);
          xsum += sub[cidx(B, P, t, b, j)] * std::fabs(d.cx[cidx(B, C, t, b, c)]);
        }
      const size_t i = static_cast<size_t>(j * C + c);
      // A subnormal dz is off by up to tiny * sub (absolute, above), which x then scales.
      double bound = (8.0 * uA + 2.0 * uA * (nrows + 4.0)) * mag + 2.0 * uT * std::fabs(want_dW[i]) + 4.0 * dt<V>::tiny +
                     nrows * 8.0 * dt<A>::tiny + 8.0 * dt<A>::tiny * xsum;
      if (!all_clean || !(mag < guard)) bound = kInf;
      expect_close("offsets_backward dweight", i, dbl<V>(dW[i]), want_dW[i], bound);
    }
    if (pb.with_bias) {
      double mag = 0.0, subsum = 0.0;
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < pb.n(b); ++t) {
          mag += dzmag[cidx(B, P, t, b, j)];
          subsum += sub[cidx(B, P, t, b, j)];
        }
      double bound = (8.0 * uA + 2.0 * uA * (nrows + 4.0)) * mag + 2.0 * uT * std::fabs(want_db[static_cast<size_t>(j)]) +
                     4.0 * dt<V>::tiny + 8.0 * dt<A>::tiny * subsum;
      if (!all_clean || !(mag < guard)) bound = kInf;
      expect_close("offsets_backward dbias", static_cast<size_t>(j), dbl<V>(db[static_cast<size_t>(j)]),
                   want_db[static_cast<size_t>(j)], bound);
    }
  }
  if (!pb.with_optional) return;
  const vec got_dx = from_layout(dxs, lay, T, B, C);
  for (index_t t = 0; t < T; ++t)
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c) {
        const size_t i = cidx(B, C, t, b, c);
        if (t >= pb.n(b)) {  // padding rows contribute nothing: dx is left as it was, bit for bit
          const size_t li = lidx(lay, T, B, C, t, b, c);
          if (std::memcmp(&dxs[li], &dx_in[li], sizeof(V)) != 0) finding("offsets_backward changed dx in a padding row");
          continue;
        }
        double mag = std::fabs(d.cdx0[i]), wsum = 0.0;
        bool clean = std::isfinite(d.cdx0[i]);
        for (index_t j = 0; j < P; ++j) {
          const double wjc = d.cW[static_cast<size_t>(j * C + c)];
          const double dm = dzmag[cidx(B, P, t, b, j)];
          mag += std::fabs(wjc) * dm;
          wsum += std::fabs(wjc) * sub[cidx(B, P, t, b, j)];
          clean = clean && std::isfinite(wjc) && std::isfinite(dm);  // an Inf dz times W = 0 is NaN
        }
        double bound = (2.0 * uA * static_cast<double>(P + 6)) * mag + 2.0 * uT * std::fabs(want_dx[i]) + 4.0 * dt<V>::tiny +
                       static_cast<double>(P) * 8.0 * dt<A>::tiny + 8.0 * dt<A>::tiny * wsum;
        if (!clean || !(mag < guard)) bound = kInf;
        expect_close("offsets_backward dx", i, got_dx[i], want_dx[i], bound);
      }
}

// Per-sequence facts about the offsets of the window blocks.
struct seq_offsets {
  bool contract = true;  // every valid token's offsets are NaN or >= 0 (SPEC's domain)
  bool nan_bound = false;  // some valid token has a NaN bound (the reference backward cannot take it)
  double omax_l = 0.0, omax_r = 0.0;  // largest finite |offset|
};
seq_offsets scan_offsets(const problem& pb, const vec& co, index_t b, index_t P) {
  seq_offsets s;
  const index_t H = pb.w.H;
  for (index_t t = 0; t < pb.n(b); ++t)
    for (index_t j = 0; j < P; ++j) {
      const double v = co[cidx(pb.B, P, t, b, j)];
      const bool left = j < H;
      if (v < 0.0) s.contract = false;
      if (bound_is_nan(v, left ? pb.w.L : pb.w.M)) s.nan_bound = true;
      if (std::isfinite(v)) (left ? s.omax_l : s.omax_r) = std::max(left ? s.omax_l : s.omax_r, std::fabs(v));
      if (std::isinf(v)) (left ? s.omax_l : s.omax_r) = 1e300;
    }
  if (pb.w.causal) s.omax_r = 0.0;
  return s;
}

// Column facts: max |x| over valid rows, and whether they are all finite.
struct column {
  double xmax = 0.0, xsum = 0.0;
  bool finite = true;
};
column scan_column(const vec& cv, const problem& pb, index_t b, index_t c) {
  column col;
  for (index_t t = 0; t < pb.n(b); ++t) {
    const double v = cv[cidx(pb.B, pb.C, t, b, c)];
    if (!std::isfinite(v)) col.finite = false;
    else col.xmax = std::max(col.xmax, std::fabs(v)), col.xsum += std::fabs(v);
  }
  return col;
}

// The tile-local prefix sums of one head (rows of values up to xmax / K) stay inside the accumulator's range.
// The offsets' backward reads slopes off them whatever dy is: past the range a slope is Inf - Inf, and
// 0 * NaN is NaN even where dy = 0 makes the exact gradient 0.
template <class A>
bool sums_in_range(double rows, double xmax, double inv_k) {
  return 4.0 * rows * xmax * inv_k < dt<A>::max / 8.0;
}

// Bound on one forward value y[t, b, c] of the window aggregation (see the file comment):
// tile-local prefix sums over `rows` rows of values up to xmax / K, four of them read; the two edges
// known to `da` tokens; the storage rounding of y.
template <class V>
double forward_bound(double rows, double xmax, double inv_k, double da, double yref) {
  using A = talkconv::acc_t<V>;
  const double s = rows * xmax * inv_k;
  if (!(4.0 * s < dt<A>::max / 8.0) || !(s + std::fabs(yref) < dt<V>::max / 4.0)) return kInf;
  return 8.0 * dt<A>::unit * rows * s + da * xmax * inv_k + 2.0 * dt<V>::unit * std::fabs(yref) + 2.0 * dt<V>::tiny +
         rows * 8.0 * dt<A>::tiny;
}

template <class V>
void run_window_forward(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  expected e;
  expect_problem(e, pb, sizeof(V), sizeof(A), false);
  if (pb.null_which == 1) e.add(status::null_pointer, "x");
  if (pb.null_which == 2) e.add(status::null_pointer, "offsets");
  if (pb.null_which == 3) e.add(status::null_pointer, "y");
  if (!e.empty()) {
    expect_refusal(e, "window_forward", [&] {
      cpu::window_forward<V>(talkconv::seq_shape{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)}, pb.w.params(),
                             pb.null_which == 1 ? nullptr : forbidden<const V>(), pb.null_which == 2 ? nullptr : forbidden<const A>(),
                             pb.null_which == 3 ? nullptr : forbidden<V>(), pb.lengths_ptr());
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C, H = pb.w.H, R = C / H, L = pb.w.L, M = pb.w.M;
  index_t P = 0;
  offsets_per_token(pb.w, &P);
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  fill(d.o, d.co, static_cast<size_t>(T * B * P), g, read_style(r), true);
  apply_overrides<V>(r, {{&d.x, &d.cx}});
  apply_overrides<A>(r, {{&d.o, &d.co}});
  const auto xs = to_layout(d.x, lay, T, B, C);
  const auto os = to_layout(d.o, lay, T, B, P);
  std::vector<V> y(xs.size(), store<V>(-777));
  expect_accept("window_forward", [&] {
    cpu::window_forward<V>(talkconv::seq_shape{T, B, C, lay}, pb.w.params(), xs.data(), os.data(), y.data(), pb.lengths_ptr());
  });
  const vec got = from_layout(y, lay, T, B, C);
  const ref::problem rp = ref_problem(pb);
  const vec want = ref::window_forward(rp, d.cx, d.co);
  const double K = static_cast<double>(L) + static_cast<double>(M) + 1.0, inv_k = 1.0 / K, uA = dt<A>::unit;
  for (index_t b = 0; b < B; ++b) {
    const index_t n = pb.n(b);
    const seq_offsets so = scan_offsets(pb, d.co, b, P);
    const index_t reach = reach_of(so.omax_l, L, n) + reach_of(so.omax_r, M, n);
    const double rows = span_rows(n, reach);
    for (index_t c = 0; c < C; ++c) {
      const column col = scan_column(d.cx, pb, b, c);
      const index_t h = c / R;
      for (index_t t = 0; t < T; ++t) {
        const size_t i = cidx(B, C, t, b, c);
        if (t >= n) {
          expect_zero("window_forward y", i, got[i]);
          continue;
        }
        const double ol = d.co[cidx(B, P, t, b, h)], orr = pb.w.causal ? 0.0 : d.co[cidx(B, P, t, b, H + h)];
        const bool own_contract = !(ol < 0.0) && !(orr < 0.0);
        const double da = 4.0 * uA * (clampn(std::fabs(ol) * static_cast<double>(L), static_cast<double>(n)) +
                                      clampn(std::fabs(orr) * static_cast<double>(M), static_cast<double>(n)) + 2.0);
        // A NaN reference (a NaN offset: NaN in its head) still gets a finite bound: the result must be NaN.
        double bound = forward_bound<V>(rows, col.xmax, inv_k, da, std::isfinite(want[i]) ? want[i] : 0.0);
        if (!col.finite || !own_contract) bound = kInf;
        expect_close("window_forward y", i, got[i], want[i], bound);
      }
    }
  }
}

template <class V>
void run_window_backward(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  expected e;
  expect_problem(e, pb, sizeof(V), sizeof(A), false);
  const char* names[] = {"", "x", "offsets", "dy", "dx"};
  if (pb.null_which >= 1 && pb.null_which <= 4) e.add(status::null_pointer, names[pb.null_which]);
  if (!e.empty()) {
    const auto nz = [&](int k, auto* p) { return pb.null_which == k ? nullptr : p; };
    expect_refusal(e, "window_backward", [&] {
      cpu::window_backward<V>(talkconv::seq_shape{pb.T, pb.B, pb.C, static_cast<layout>(pb.lay)}, pb.w.params(),
                              nz(1, forbidden<const V>()), nz(2, forbidden<const A>()), nz(3, forbidden<const V>()),
                              nz(4, forbidden<V>()), pb.with_optional ? forbidden<A>() : nullptr, pb.lengths_ptr());
    });
    return;
  }
  if (too_big(pb)) shrink(pb, r);
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C, H = pb.w.H, R = C / H, L = pb.w.L, M = pb.w.M;
  index_t P = 0;
  offsets_per_token(pb.w, &P);
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  fill(d.dy, d.cdy, static_cast<size_t>(T * B * C), g, read_style(r), false);
  fill(d.o, d.co, static_cast<size_t>(T * B * P), g, read_style(r), true);
  apply_overrides<V>(r, {{&d.x, &d.cx}, {&d.dy, &d.cdy}});
  apply_overrides<A>(r, {{&d.o, &d.co}});
  const auto xs = to_layout(d.x, lay, T, B, C), dys = to_layout(d.dy, lay, T, B, C);
  const auto os = to_layout(d.o, lay, T, B, P);
  std::vector<V> dx(xs.size(), store<V>(-777));
  std::vector<A> d_o(os.size(), A(-777));
  expect_accept("window_backward", [&] {
    cpu::window_backward<V>(talkconv::seq_shape{T, B, C, lay}, pb.w.params(), xs.data(), os.data(), dys.data(), dx.data(),
                            pb.with_optional ? d_o.data() : nullptr, pb.lengths_ptr());
  });
  const vec got_dx = from_layout(dx, lay, T, B, C), got_do = from_layout(d_o, lay, T, B, P);
  // The reference on sequences it can take (no NaN bound); the others get zero offsets there.
  std::vector<seq_offsets> so(static_cast<size_t>(B));
  vec co_ref = d.co;
  for (index_t b = 0; b < B; ++b) {
    so[static_cast<size_t>(b)] = scan_offsets(pb, d.co, b, P);
    if (so[static_cast<size_t>(b)].nan_bound)
      for (index_t t = 0; t < T; ++t)
        for (index_t j = 0; j < P; ++j) co_ref[cidx(B, P, t, b, j)] = 0.0;
  }
  const ref::problem rp = ref_problem(pb);
  vec want_dx, want_do;
  ref::window_backward(rp, d.cx, co_ref, d.cdy, want_dx, want_do);
  const double K = static_cast<double>(L) + static_cast<double>(M) + 1.0, inv_k = 1.0 / K, uA = dt<A>::unit, uT = dt<V>::unit;
  for (index_t b = 0; b < B; ++b) {
    const index_t n = pb.n(b);
    const seq_offsets& s = so[static_cast<size_t>(b)];
    const index_t reach = reach_of(s.omax_l, L, n) + reach_of(s.omax_r, M, n);
    const double rows = span_rows(n, reach);
    const bool seq_ok = s.contract && !s.nan_bound;
    std::vector<column> xc(static_cast<size_t>(C)), dyc(static_cast<size_t>(C));
    bool seq_finite = true;
    for (index_t c = 0; c < C; ++c) {
      xc[static_cast<size_t>(c)] = scan_column(d.cx, pb, b, c);
      dyc[static_cast<size_t>(c)] = scan_column(d.cdy, pb, b, c);
      seq_finite = seq_finite && xc[static_cast<size_t>(c)].finite && dyc[static_cast<size_t>(c)].finite;
    }
    double da_max = 0.0;
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < P; ++j) {
        const double v = std::fabs(d.co[cidx(B, P, t, b, j)]);
        const double reach_j = static_cast<double>(j < H ? L : M);
        da_max = std::max(da_max, 4.0 * uA * (clampn(v * reach_j, static_cast<double>(n)) + 2.0));
      }
    // dx: a running suffix sum over the tile of tap weights times dy (sum of |weights| per token: 2).
    for (index_t c = 0; c < C; ++c) {
      const column& dc = dyc[static_cast<size_t>(c)];
      const double nn = static_cast<double>(n);
      const double mag = 2.0 * dc.xsum * inv_k;
      for (index_t t = 0; t < T; ++t) {
        const size_t i = cidx(B, C, t, b, c);
        if (t >= n) {
          expect_zero("window_backward dx", i, got_dx[i]);
          continue;
        }
        double bound = 2.0 * uA * (5.0 * nn + 10.0) * mag + 2.0 * da_max * dc.xsum * inv_k + 2.0 * uT * std::fabs(want_dx[i]) +
                       2.0 * dt<V>::tiny + nn * 8.0 * dt<A>::tiny;
        // The CPU path sums tap weight * dy before it scales by 1 / K, so its running sums reach
        // 2 * sum |dy| unscaled: past the accumulator's range they may overflow though dx would not.
        if (!seq_ok || !seq_finite || !(2.0 * dc.xsum * 4.0 < dt<A>::max / 8.0) ||
            !(std::fabs(want_dx[i]) + mag < dt<V>::max / 4.0))
          bound = kInf;
        expect_close("window_backward dx", i, got_dx[i], want_dx[i], bound);
      }
    }
    if (!pb.with_optional) continue;
    for (index_t t = 0; t < T; ++t)
      for (index_t j = 0; j < P; ++j) {
        const size_t i = cidx(B, P, t, b, j);
        if (t >= n) {
          expect_zero("window_backward d_offsets", i, got_do[i]);
          continue;
        }
        const bool left = j < H;
        const index_t h = left ? j : j - H;
        const double reach_j = static_cast<double>(left ? L : M);
        const double o = d.co[i];
        const double u = left ? static_cast<double>(t) - o * reach_j : static_cast<double>(t) + o * reach_j;
        const double delta = 4.0 * uA * (std::fabs(o) * reach_j + static_cast<double>(t) + 2.0);
        double acc = 0.0, mag = 0.0, dysum = 0.0, xhead = 0.0;
        for (index_t c = h * R; c < (h + 1) * R; ++c) {
          const double dyv = std::fabs(d.cdy[cidx(B, C, t, b, c)]);
          const double xm = xc[static_cast<size_t>(c)].xmax;
          acc += dyv * 2.0 * 8.0 * uA * rows * rows * xm * inv_k;  // two ring sums
          mag += dyv * xm * inv_k;
          dysum += dyv;
          xhead = std::max(xhead, xm);
        }
        // Subnormal x / K underflows: the sums are off by up to a subnormal ulp per row, times dy.
        double bound = reach_j * (acc + 2.0 * uA * static_cast<double>(R + 8) * mag) + 4.0 * uA * std::fabs(want_do[i]) +
                       reach_j * (static_cast<double>(R) + 4.0 * rows * dysum) * 8.0 * dt<A>::tiny;
        if (!seq_ok || !seq_finite || !std::isfinite(o) || (reach_j > 0 && near_kink(u, delta)) ||
            !(reach_j * mag * rows * 4.0 < dt<A>::max / 8.0) || !sums_in_range<A>(rows, xhead, inv_k))
          bound = kInf;
        expect_close("window_backward d_offsets", i, got_do[i], want_do[i], bound);
      }
  }
}

// ---- the layer ---------------------------------------------------------------------------------------

template <class V, int Heads>
void run_layer_typed(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  // The configuration, raw.
  talkconv::talk_config cfg{pb.C, pb.w.H, pb.w.L, pb.w.M, pb.w.causal};
  raw_window cw = pb.w;
  if (Heads != talkconv::dynamic_heads) {
    cfg.heads = (pb.variant & 16) ? pb.w.H : 0;
    if (cfg.heads == 0) cw.H = Heads;
  }
  expected ce;
  if (Heads != talkconv::dynamic_heads && cfg.heads != 0 && cfg.heads != Heads) ce.add(status::invalid_shape, "H");
  expect_window(ce, cw);
  expect_shape(ce, 1, 1, cfg.channels, 0);
  expect_heads(ce, 1, 1, cfg.channels, cw);
  if (cw.H > 0 && cfg.channels > 0) {  // the weight [P, C] must be indexable
    index_t P;
    if (offsets_per_token(cw, &P) && mul_overflows(P, cfg.channels)) ce.add(status::size_overflow, "P*C");
  }
  if (!ce.empty()) {
    expect_refusal(ce, "talk_conv constructor", [&] { (void)talkconv::talk_conv<V, Heads>(cfg); });
    return;
  }
  // A call C that differs from the layer's is refused.
  const bool other_c = (pb.extra_mode & 7) == 7;
  const index_t call_C = other_c ? pb.extra : pb.C;
  const talkconv::dropout_params dp{pb.p, pb.seed, pb.training};
  pb.w = cw;
  expected e;
  expect_shape(e, pb.T, pb.B, call_C, pb.lay);
  expect_window(e, cw);
  expect_heads(e, pb.T, pb.B, call_C, cw);
  expect_lengths(e, pb.lengths_ptr(), pb.T, pb.B);
  if (call_C != cfg.channels) e.add(status::invalid_shape, "C");
  expect_problem_bytes(e, pb.T, pb.B, call_C, cw, sizeof(V), sizeof(A), true);
  expect_dropout(e, pb.p);
  const bool backward_call = pb.variant & 1;
  const char* fwd_names[] = {"", "x", "weight", "y"};
  const char* bwd_names[] = {"", "x", "weight", "dy", "dx", "dweight"};
  if (!backward_call && pb.null_which >= 1 && pb.null_which <= 3) e.add(status::null_pointer, fwd_names[pb.null_which]);
  if (backward_call && pb.null_which >= 1 && pb.null_which <= 5) e.add(status::null_pointer, bwd_names[pb.null_which]);
  std::unique_ptr<talkconv::talk_conv<V, Heads>> layer;
  expect_accept("talk_conv constructor", [&] { layer.reset(new talkconv::talk_conv<V, Heads>(cfg)); });
  if (layer->num_offsets() != (cw.causal ? cw.H : 2 * cw.H) || layer->heads() != cw.H)
    finding("talk_conv: heads() / num_offsets() disagree with the configuration");
  (void)layer->weight_size();
  if (!e.empty()) {
    const talkconv::seq_shape raw{pb.T, pb.B, call_C, static_cast<layout>(pb.lay)};
    const auto nz = [&](int k, auto* p) { return pb.null_which == k ? nullptr : p; };
    if (!backward_call) {
      talkconv::forward_args<V> a;
      a.shape = raw, a.x = nz(1, forbidden<const V>()), a.weight = nz(2, forbidden<const V>()), a.y = nz(3, forbidden<V>());
      a.bias = pb.with_bias ? forbidden<const V>() : nullptr, a.saved_offsets = pb.with_saved ? forbidden<A>() : nullptr;
      a.lengths = pb.lengths_ptr(), a.dropout = dp;
      expect_refusal(e, "talk_conv::forward", [&] { layer->forward(a); });
    } else {
      talkconv::backward_args<V> a;
      a.shape = raw, a.x = nz(1, forbidden<const V>()), a.weight = nz(2, forbidden<const V>()), a.dy = nz(3, forbidden<const V>());
      a.dx = nz(4, forbidden<V>()), a.dweight = nz(5, forbidden<V>());
      a.bias = pb.with_bias ? forbidden<const V>() : nullptr, a.saved_offsets = pb.with_saved ? forbidden<const A>() : nullptr;
      a.dbias = pb.with_optional ? forbidden<V>() : nullptr, a.lengths = pb.lengths_ptr(), a.dropout = dp;
      expect_refusal(e, "talk_conv::backward", [&] { layer->backward(a); });
    }
    return;
  }
  if (too_big(pb)) {  // a valid call too large to run here: a smaller layer with the same window
    shrink(pb, r);
    if (Heads != talkconv::dynamic_heads) pb.w.H = Heads, pb.C = Heads * (1 + pb.C % 8);
    cw = pb.w;
    cfg.channels = pb.C, cfg.heads = pb.w.H;
    expect_accept("talk_conv constructor", [&] { layer.reset(new talkconv::talk_conv<V, Heads>(cfg)); });
  }
  const layout lay = static_cast<layout>(pb.lay);
  const index_t T = pb.T, B = pb.B, C = pb.C, H = cw.H, R = C / H, L = cw.L, M = cw.M;
  const index_t P = layer->num_offsets();
  if (layer->weight_size() != P * C || layer->saved_size(T, B) != T * B * P) finding("talk_conv: size queries are wrong");
  tensors<V> d;
  fill(d.x, d.cx, static_cast<size_t>(T * B * C), g, read_style(r), false);
  const style ws = read_style(r);
  fill(d.W, d.cW, static_cast<size_t>(P * C), g, ws, false);
  fill(d.bias, d.cbias, pb.with_bias ? static_cast<size_t>(P) : 0, g, ws, false);
  fill(d.dy, d.cdy, static_cast<size_t>(T * B * C), g, read_style(r), false);
  apply_overrides<V>(r, {{&d.x, &d.cx}, {&d.W, &d.cW}, {&d.bias, &d.cbias}, {&d.dy, &d.cdy}});
  const auto xs = to_layout(d.x, lay, T, B, C), dys = to_layout(d.dy, lay, T, B, C);
  std::vector<V> y(xs.size(), store<V>(-777));
  std::vector<A> saved(static_cast<size_t>(T * B * P), A(-777));
  talkconv::forward_args<V> fa;
  fa.shape = {T, B, C, lay}, fa.x = xs.data(), fa.weight = d.W.data(), fa.bias = pb.with_bias ? d.bias.data() : nullptr;
  fa.y = y.data(), fa.saved_offsets = pb.with_saved ? saved.data() : nullptr, fa.lengths = pb.lengths_ptr(), fa.dropout = dp;
  expect_accept("talk_conv::forward", [&] { layer->forward(fa); });

  const ref::problem rp = ref_problem(pb);
  const ref::dropout rd{dp.active(), dp.p, dp.seed};
  const bool params_clean = all_finite(d.cW) && all_finite(d.cbias);
  // Sequences whose own inputs are finite; the reference runs on the data with the others zeroed.
  std::vector<char> clean(static_cast<size_t>(B), params_clean ? 1 : 0);
  vec cx_ref = d.cx, cdy_ref = d.cdy;
  for (index_t b = 0; b < B; ++b) {
    for (index_t t = 0; t < pb.n(b); ++t)
      for (index_t c = 0; c < C; ++c)
        if (!std::isfinite(d.cx[cidx(B, C, t, b, c)])) clean[static_cast<size_t>(b)] = 0;
    if (!clean[static_cast<size_t>(b)])
      for (index_t t = 0; t < T; ++t)
        for (index_t c = 0; c < C; ++c) cx_ref[cidx(B, C, t, b, c)] = 0.0, cdy_ref[cidx(B, C, t, b, c)] = 0.0;
  }
  vec cW_ref = d.cW, cb_ref = d.cbias;
  if (!params_clean) std::fill(cW_ref.begin(), cW_ref.end(), 0.0), std::fill(cb_ref.begin(), cb_ref.end(), 0.0);
  vec want_pre, want_o;
  ref::offsets(rp, cx_ref, cW_ref, cb_ref, rd, want_pre, want_o);
  const vec want_y = ref::window_forward(rp, cx_ref, want_o);
  const double smax = dp.active() ? 1.0 / (1.0 - static_cast<double>(dp.p)) : 1.0;
  const offsets_err oe = offsets_bounds<A>(pb, cx_ref, cW_ref, cb_ref, want_pre, smax);
  // A sequence with an offset whose projection z may overflow the accumulator (a NaN or saturated
  // offset in the library, a finite one in float64) is not compared, except its padding rows.
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < pb.n(b); ++t)
      for (index_t j = 0; j < P; ++j)
        if (!(oe.d_o[cidx(B, P, t, b, j)] < kInf)) clean[static_cast<size_t>(b)] = 0;
  const double K = static_cast<double>(L) + static_cast<double>(M) + 1.0, inv_k = 1.0 / K, uA = dt<A>::unit, uT = dt<V>::unit;
  const vec got_y = from_layout(y, lay, T, B, C), got_saved = from_layout(saved, lay, T, B, P);
  std::vector<std::vector<column>> xcol(static_cast<size_t>(B), std::vector<column>(static_cast<size_t>(C)));
  std::vector<double> rows_b(static_cast<size_t>(B));
  for (index_t b = 0; b < B; ++b) {
    const index_t n = pb.n(b);
    const index_t reach = reach_of(smax, L, n) + reach_of(smax, M, n);
    rows_b[static_cast<size_t>(b)] = span_rows(n, reach);
    for (index_t c = 0; c < C; ++c) xcol[static_cast<size_t>(b)][static_cast<size_t>(c)] = scan_column(d.cx, pb, b, c);
  }
  // Edge uncertainty of token (t, b), head h: rounding of o * L plus L times the offset error.
  auto edge_delta = [&](index_t t, index_t b, index_t j) {
    const size_t i = cidx(B, P, t, b, j);
    const double reach_j = static_cast<double>(j < H ? L : M);
    const double n = static_cast<double>(pb.n(b));
    return std::min(n, reach_j * oe.d_o[i]) + 4.0 * uA * (std::min(want_o[i] * reach_j, n) + static_cast<double>(t) + 2.0);
  };
  for (index_t b = 0; b < B; ++b) {
    const index_t n = pb.n(b);
    for (index_t t = 0; t < T; ++t) {
      for (index_t j = 0; j < P && pb.with_saved; ++j) {
        const size_t i = cidx(B, P, t, b, j);
        if (t >= n) expect_zero("talk_conv saved_offsets", i, got_saved[i]);
        else expect_close("talk_conv saved_offsets", i, got_saved[i], want_pre[i], clean[static_cast<size_t>(b)] ? oe.d_pre[i] : kInf);
      }
      for (index_t c = 0; c < C; ++c) {
        const size_t i = cidx(B, C, t, b, c);
        if (t >= n) {
          expect_zero("talk_conv y", i, got_y[i]);
          continue;
        }
        const index_t h = c / R;
        const double da = edge_delta(t, b, h) + (cw.causal ? 0.0 : edge_delta(t, b, H + h));
        double bound = forward_bound<V>(rows_b[static_cast<size_t>(b)], xcol[static_cast<size_t>(b)][static_cast<size_t>(c)].xmax,
                                        inv_k, da, want_y[i]);
        // z may overflow the accumulator (Inf - Inf: a NaN offset): not bounded.
        const bool z_bounded = oe.d_o[cidx(B, P, t, b, h)] < kInf && (cw.causal || oe.d_o[cidx(B, P, t, b, H + h)] < kInf);
        if (!clean[static_cast<size_t>(b)] || !z_bounded) bound = kInf;
        expect_close("talk_conv y", i, got_y[i], want_y[i], bound);
      }
    }
  }

  // Backward, with the saved offsets (when kept) and recomputing them: the same bits (README).
  std::vector<V> dx(xs.size(), store<V>(-777)), dW(static_cast<size_t>(P * C), store<V>(-777)),
      db(static_cast<size_t>(P), store<V>(-777));
  talkconv::backward_args<V> ba;
  ba.shape = fa.shape, ba.x = xs.data(), ba.weight = d.W.data(), ba.bias = fa.bias, ba.dy = dys.data();
  ba.saved_offsets = pb.with_saved ? saved.data() : nullptr, ba.dx = dx.data(), ba.dweight = dW.data();
  ba.dbias = pb.with_optional ? db.data() : nullptr, ba.lengths = pb.lengths_ptr(), ba.dropout = dp;
  expect_accept("talk_conv::backward", [&] { layer->backward(ba); });
  if (pb.with_saved) {
    std::vector<V> dx2(xs.size(), store<V>(-555)), dW2(dW.size(), store<V>(-555)), db2(db.size(), store<V>(-555));
    talkconv::backward_args<V> b2 = ba;
    b2.saved_offsets = nullptr, b2.dx = dx2.data(), b2.dweight = dW2.data(), b2.dbias = pb.with_optional ? db2.data() : nullptr;
    expect_accept("talk_conv::backward (recompute)", [&] { layer->backward(b2); });
    const auto same = [](const std::vector<V>& a, const std::vector<V>& b) {
      return std::memcmp(a.data(), b.data(), a.size() * sizeof(V)) == 0;
    };
    if (!same(dx, dx2) || !same(dW, dW2) || (pb.with_optional && !same(db, db2)))
      finding("talk_conv::backward: saved offsets and recomputed offsets give different bits");
  }
  // Reference gradients: clean sequences (x and dy finite) with finite parameters.
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < pb.n(b); ++t)
      for (index_t c = 0; c < C; ++c)
        if (!std::isfinite(d.cdy[cidx(B, C, t, b, c)]) && clean[static_cast<size_t>(b)]) {
          clean[static_cast<size_t>(b)] = 0;
          for (index_t tt = 0; tt < T; ++tt)
            for (index_t cc = 0; cc < C; ++cc) cx_ref[cidx(B, C, tt, b, cc)] = 0.0, cdy_ref[cidx(B, C, tt, b, cc)] = 0.0;
        }
  bool all_clean = true;
  for (char v : clean) all_clean = all_clean && v;
  vec o_pre, o, d_o_ref, want_dx, want_dW, want_db;
  ref::offsets(rp, cx_ref, cW_ref, cb_ref, rd, o_pre, o);
  ref::window_backward(rp, cx_ref, o, cdy_ref, want_dx, d_o_ref);
  ref::offsets_backward(rp, cx_ref, cW_ref, o_pre, d_o_ref, rd, want_dx, want_dW, want_db);
  // d_o error per (t, b, j): rounding of the local sums and the head sum, or the whole value at a kink.
  vec ddz(static_cast<size_t>(T * B * P), 0.0), dzmag(ddz.size(), 0.0), dxwin_err(static_cast<size_t>(T * B * C), 0.0);
  bool bounded = true;
  for (index_t b = 0; b < B; ++b) {
    if (!clean[static_cast<size_t>(b)]) continue;
    const double rows = rows_b[static_cast<size_t>(b)];
    for (index_t t = 0; t < pb.n(b); ++t)
      for (index_t j = 0; j < P; ++j) {
        const size_t i = cidx(B, P, t, b, j);
        const bool left = j < H;
        const index_t h = left ? j : j - H;
        const double reach_j = static_cast<double>(left ? L : M);
        double acc = 0.0, mag = 0.0, dysum = 0.0, xhead = 0.0;
        for (index_t c = h * R; c < (h + 1) * R; ++c) {
          const double dyv = std::fabs(d.cdy[cidx(B, C, t, b, c)]);
          const double xm = xcol[static_cast<size_t>(b)][static_cast<size_t>(c)].xmax;
          acc += dyv * 2.0 * 8.0 * uA * rows * rows * xm * inv_k;
          mag += dyv * xm * inv_k;
          dysum += dyv;
          xhead = std::max(xhead, xm);
        }
        const double u = left ? static_cast<double>(t) - want_o[i] * reach_j : static_cast<double>(t) + want_o[i] * reach_j;
        const bool kink = reach_j > 0 && near_kink(u, edge_delta(t, b, j));
        const double dd_o = reach_j * (acc + 2.0 * uA * static_cast<double>(R + 8) * mag) + 4.0 * uA * std::fabs(d_o_ref[i]) +
                            (kink ? 2.0 * reach_j * mag : 0.0) +
                            reach_j * (static_cast<double>(R) + 4.0 * rows * dysum) * 8.0 * dt<A>::tiny;  // subnormal sums
        const double s = rd.scale(t, b, j), op = o_pre[i], gsig = op * (1.0 - op);
        const double dgs = std::min(0.25, oe.d_pre[i] * (1.0 + oe.d_pre[i]) + 2.0 * uA);
        ddz[i] = s * (dd_o * (std::fabs(gsig) + dgs) + std::fabs(d_o_ref[i]) * dgs) + 8.0 * uA * s * std::fabs(d_o_ref[i] * gsig) +
                 8.0 * s * dt<A>::tiny;  // subnormal dz: an absolute ulp
        dzmag[i] = s * (std::fabs(d_o_ref[i]) + dd_o) * (std::fabs(gsig) + dgs);
        if (!std::isfinite(ddz[i]) || !(reach_j * mag * rows * 4.0 < dt<A>::max / 8.0) || !sums_in_range<A>(rows, xhead, inv_k))
          bounded = false;
      }
  }
  const double guard = std::min(dt<A>::max, dt<V>::max) / 16.0;
  const vec got_dx = from_layout(dx, lay, T, B, C);
  for (index_t b = 0; b < B; ++b) {
    const index_t n = pb.n(b);
    const double nn = static_cast<double>(n);
    double da_max = 0.0;
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < P; ++j) da_max = std::max(da_max, edge_delta(t, b, j));
    for (index_t c = 0; c < C; ++c) {
      const column dc = scan_column(d.cdy, pb, b, c);
      const double mag_win = 2.0 * dc.xsum * inv_k;
      for (index_t t = 0; t < T; ++t) {
        const size_t i = cidx(B, C, t, b, c);
        if (t >= n) {
          expect_zero("talk_conv dx", i, got_dx[i]);
          continue;
        }
        double wdz = 0.0, wmag = 0.0;
        for (index_t j = 0; j < P; ++j) {
          const double wjc = std::fabs(d.cW[static_cast<size_t>(j * C + c)]);
          wdz += wjc * ddz[cidx(B, P, t, b, j)];
          wmag += wjc * dzmag[cidx(B, P, t, b, j)];
        }
        const double mag = mag_win + wmag;
        double bound = 2.0 * uA * (5.0 * nn + 10.0) * mag_win + 2.0 * da_max * dc.xsum * inv_k + wdz +
                       2.0 * uA * static_cast<double>(P + 4) * mag + 2.0 * uT * std::fabs(want_dx[i]) + 2.0 * dt<V>::tiny +
                       (nn + static_cast<double>(P)) * 8.0 * dt<A>::tiny;
        // As in window_backward: the window part sums tap weight * dy unscaled (2 * sum |dy| at most).
        if (!clean[static_cast<size_t>(b)] || !bounded || !(mag * 4.0 < guard) || !(2.0 * dc.xsum * 4.0 < guard) ||
            !(std::fabs(want_dx[i]) + mag < guard))
          bound = kInf;
        expect_close("talk_conv dx", i, got_dx[i], want_dx[i], bound);
      }
    }
  }
  if (!all_clean || !bounded) return;
  double nrows = 0;
  for (index_t b = 0; b < B; ++b) nrows += static_cast<double>(pb.n(b));
  for (index_t j = 0; j < P; ++j) {
    for (index_t c = 0; c < C; ++c) {
      double mag = 0.0, err = 0.0;
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < pb.n(b); ++t) {
          const double xv = std::fabs(d.cx[cidx(B, C, t, b, c)]);
          mag += dzmag[cidx(B, P, t, b, j)] * xv;
          err += ddz[cidx(B, P, t, b, j)] * xv;
        }
      const size_t i = static_cast<size_t>(j * C + c);
      double bound = err + 2.0 * uA * (nrows + 4.0) * mag + 2.0 * uT * std::fabs(want_dW[i]) + 4.0 * dt<V>::tiny +
                     nrows * 8.0 * dt<A>::tiny;
      if (!(mag < guard)) bound = kInf;
      expect_close("talk_conv dweight", i, dbl<V>(dW[i]), want_dW[i], bound);
    }
    if (pb.with_optional) {
      double mag = 0.0, err = 0.0;
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < pb.n(b); ++t) mag += dzmag[cidx(B, P, t, b, j)], err += ddz[cidx(B, P, t, b, j)];
      const size_t i = static_cast<size_t>(j);
      double bound = err + 2.0 * uA * (nrows + 4.0) * mag + 2.0 * uT * std::fabs(want_db[i]) + 4.0 * dt<V>::tiny +
                     nrows * 8.0 * dt<A>::tiny;
      if (!(mag < guard)) bound = kInf;
      expect_close("talk_conv dbias", i, dbl<V>(db[i]), want_db[i], bound);
    }
  }
}

template <class V>
void run_layer(problem& pb, reader& r, rng& g) {
  if constexpr (std::is_same<V, float>::value) {
    if (pb.variant & 8) return run_layer_typed<V, 2>(pb, r, g);
  }
  run_layer_typed<V, talkconv::dynamic_heads>(pb, r, g);
}

// ---- incremental decoding -------------------------------------------------------------------------------

template <class V>
void run_decoder(problem& pb, reader& r, rng& g) {
  using A = talkconv::acc_t<V>;
  talkconv::talk_config cfg{pb.C, pb.w.H, pb.w.L, pb.w.M, pb.w.causal};
  expected ce;
  expect_window(ce, pb.w);
  expect_shape(ce, 1, 1, cfg.channels, 0);
  expect_heads(ce, 1, 1, cfg.channels, pb.w);
  if (pb.w.H > 0 && cfg.channels > 0) {
    index_t P;
    if (offsets_per_token(pb.w, &P) && mul_overflows(P, cfg.channels)) ce.add(status::size_overflow, "P*C");
  }
  if (!ce.empty()) {
    expect_refusal(ce, "talk_conv constructor", [&] { (void)talkconv::talk_conv<V>(cfg); });
    return;
  }
  // make_decoder(batch): refused, or its state size known before it is allocated.
  const index_t batch = pb.B;
  expected e;
  if (!pb.w.causal) e.add(status::invalid_window, "causal");
  expect_shape(e, 1, batch, pb.C, 0);
  index_t s1 = 0, s2 = 0;
  if (batch > 0 && (mul_overflows(pb.w.L + 2, batch, &s1) || mul_overflows(s1, pb.C, &s2))) e.add(status::size_overflow, "(L+2)*B*C");
  expect_problem_bytes(e, 1, batch, pb.C, pb.w, sizeof(V), sizeof(A), true);
  expect_bytes(e, pb.w.L + 2, batch, pb.C, sizeof(A), "(L+2)*B*C");
  std::unique_ptr<talkconv::talk_conv<V>> layer;
  expect_accept("talk_conv constructor", [&] { layer.reset(new talkconv::talk_conv<V>(cfg)); });
  if (!e.empty()) {
    expect_refusal(e, "make_decoder", [&] { (void)layer->make_decoder(batch); });
    return;
  }
  if (s2 > kMaxDecoderState || pb.C > kMaxC || batch > kMaxB || pb.w.H > kMaxH) {
    // Accepted but too large to allocate here: decode a small layer with the same window instead.
    pb.w.H = 1 + pb.w.H % 4;
    pb.C = pb.w.H * (1 + pb.C % 8);
    pb.B = 1 + batch % 3;
    pb.w.L = pb.w.L % 200;
    cfg = talkconv::talk_config{pb.C, pb.w.H, pb.w.L, 0, true};
    expect_accept("talk_conv constructor", [&] { layer.reset(new talkconv::talk_conv<V>(cfg)); });
  }
  const index_t B = pb.B, C = pb.C, H = pb.w.H, L = pb.w.L, P = H;
  std::unique_ptr<talkconv::cpu::decoder<V>> dec;
  expect_accept("make_decoder", [&] { dec.reset(new talkconv::cpu::decoder<V>(layer->make_decoder(B))); });
  tensors<V> d;
  const style ws = read_style(r);
  fill(d.W, d.cW, static_cast<size_t>(P * C), g, ws, false);
  fill(d.bias, d.cbias, pb.with_bias ? static_cast<size_t>(P) : 0, g, ws, false);
  const index_t steps = 1 + static_cast<index_t>(r.u8() % 40);
  fill(d.x, d.cx, static_cast<size_t>(steps * B * C), g, read_style(r), false);
  apply_overrides<V>(r, {{&d.x, &d.cx}, {&d.W, &d.cW}, {&d.bias, &d.cbias}});
  const bool params_clean = all_finite(d.cW) && all_finite(d.cbias);
  // Each sequence's history of rows (canonical), reordered with the state.
  std::vector<vec> hist(static_cast<size_t>(B));
  std::vector<V> y(static_cast<size_t>(B * C));
  const double uA = dt<A>::unit, K = static_cast<double>(L) + 1.0, inv_k = 1.0 / K;
  for (index_t s = 0; s < steps; ++s) {
    const std::uint8_t op = r.u8();
    const V* xt = d.x.data() + s * B * C;
    if (op >= 240 && op < 244) {  // a refused step: nothing changes
      const int which = op - 240;  // 0 x_t, 1 weight, 2 y_t, 3 new_order (reorder)
      expected ne;
      const index_t before = dec->position();
      if (which < 3) {
        ne.add(status::null_pointer, which == 0 ? "x_t" : which == 1 ? "weight" : "y_t");
        expect_refusal(ne, "decoder::step", [&] {
          dec->step(which == 0 ? nullptr : forbidden<const V>(), which == 1 ? nullptr : forbidden<const V>(),
                    pb.with_bias ? forbidden<const V>() : nullptr, which == 2 ? nullptr : forbidden<V>());
        });
      } else {
        ne.add(status::null_pointer, "new_order");
        expect_refusal(ne, "decoder::reorder", [&] { dec->reorder(nullptr); });
      }
      if (dec->position() != before) finding("decoder: a refused call moved the position");
    } else if (op >= 244 && op < 250) {  // reorder, valid or not
      std::vector<index_t> order(static_cast<size_t>(B));
      for (auto& v : order) v = static_cast<index_t>(r.u8()) % B;
      expected ne;
      if (op >= 248) {
        const size_t at = r.u8() % order.size();
        const index_t bad[] = {-1, B, kIndexMax, kIndexMin};
        order[at] = bad[r.u8() % 4];
        for (index_t b = 0; b < B; ++b)
          if (order[static_cast<size_t>(b)] < 0 || order[static_cast<size_t>(b)] >= B)
            ne.add(status::invalid_shape, "new_order[" + std::to_string(b) + "]");
        expect_refusal(ne, "decoder::reorder", [&] { dec->reorder(order.data()); });
      } else {
        expect_accept("decoder::reorder", [&] { dec->reorder(order.data()); });
        std::vector<vec> old = hist;
        for (index_t b = 0; b < B; ++b) hist[static_cast<size_t>(b)] = old[static_cast<size_t>(order[static_cast<size_t>(b)])];
      }
    } else if (op >= 250 && op < 252) {
      dec->reset();
      for (auto& hv : hist) hv.clear();
    }
    // One step.
    expect_accept("decoder::step", [&] { dec->step(xt, d.W.data(), pb.with_bias ? d.bias.data() : nullptr, y.data()); });
    const index_t t = dec->position() - 1;
    for (index_t b = 0; b < B; ++b) {
      vec& hv = hist[static_cast<size_t>(b)];
      for (index_t c = 0; c < C; ++c) hv.push_back(d.cx[static_cast<size_t>((s * B + b) * C + c)]);
      if (static_cast<index_t>(hv.size()) != (t + 1) * C) finding("decoder: position() does not count the steps");
      // The full causal forward of this sequence's history, row t.
      ref::problem rp;
      rp.T = t + 1, rp.B = 1, rp.C = C, rp.H = H, rp.L = L, rp.M = 0, rp.causal = true;
      bool clean = params_clean && all_finite(hv);
      vec pre, o;
      const vec hx = clean ? hv : vec(hv.size(), 0.0);
      ref::offsets(rp, hx, clean ? d.cW : vec(d.cW.size(), 0.0), clean ? d.cbias : vec(d.cbias.size(), 0.0), ref::dropout{}, pre, o);
      const vec want = ref::window_forward(rp, hx, o);
      problem sp = pb;
      sp.T = t + 1, sp.B = 1, sp.lengths.clear();
      const offsets_err oe = offsets_bounds<A>(sp, hx, d.cW, d.cbias, pre, 1.0);
      const double rows = static_cast<double>(std::min<index_t>(t + 2, 2 * (L + 2) + 2));
      for (index_t c = 0; c < C; ++c) {
        double xmax = 0.0;
        for (index_t tau = 0; tau <= t; ++tau) xmax = std::max(xmax, std::fabs(hx[static_cast<size_t>(tau * C + c)]));
        const size_t oi = static_cast<size_t>(t * P + c / (C / H));
        const double da = std::min(static_cast<double>(t + 1), static_cast<double>(L) * oe.d_o[oi]) +
                          4.0 * uA * (std::min(o[oi] * static_cast<double>(L), static_cast<double>(t + 1)) + static_cast<double>(t) + 2.0);
        double bound = forward_bound<V>(rows, xmax, inv_k, da, want[static_cast<size_t>(t * C + c)]);
        if (!clean || !(oe.d_o[oi] < kInf)) bound = kInf;  // z may overflow: a NaN offset
        expect_close("decoder y_t", static_cast<size_t>(b * C + c), dbl<V>(y[static_cast<size_t>(b * C + c)]),
                     want[static_cast<size_t>(t * C + c)], bound);
      }
    }
  }
}

template <class V>
void run(problem& pb, reader& r, rng& g) {
  switch (pb.ep) {
    case entry::prefix_sum: return run_prefix_sum<V>(pb, r, g);
    case entry::head_sum: return run_head_sum<V>(pb, r, g);
    case entry::offsets_forward: return run_offsets_forward<V>(pb, r, g);
    case entry::offsets_backward: return run_offsets_backward<V>(pb, r, g);
    case entry::window_forward: return run_window_forward<V>(pb, r, g);
    case entry::window_backward: return run_window_backward<V>(pb, r, g);
    case entry::layer: return run_layer<V>(pb, r, g);
    case entry::decoder: return run_decoder<V>(pb, r, g);
    default: return;
  }
}

}  // namespace fz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  fz::reader r{data, size};
  fz::problem pb = fz::decode_problem(r);
  fz::make_lengths(pb, r);
  fz::rng g{r.u64()};
  fz::g_context = pb.str();
  if (std::getenv("TALKCONV_FUZZ_VERBOSE")) std::fprintf(stderr, "input: %s\n", fz::g_context.c_str());
  switch (pb.dtype) {
    case 0: fz::run<float>(pb, r, g); break;
    case 1: fz::run<double>(pb, r, g); break;
    case 2: fz::run<Eigen::half>(pb, r, g); break;
    default: fz::run<Eigen::bfloat16>(pb, r, g); break;
  }
  return 0;
}
