// SPEC Errors: every host entry point refuses bad input with a talkconv::error that names the argument
// and its value, before touching memory (outputs keep a sentinel). One test case per bad input.
#include "util.hpp"

#include <functional>
#include <limits>

using namespace tt;
namespace cpu = talkconv::cpu;
using talkconv::status;

namespace {

constexpr float sentinel = -31337.0f;

// A valid base problem (T = 6, B = 2, C = 4, H = 2, L = 2, M = 1) with every buffer; each test case
// breaks one argument. Output buffers hold the sentinel; inputs hold ordinary values.
struct fixture {
  talkconv::seq_shape shape{6, 2, 4, layout::tbc};
  talkconv::window_params win{2, 2, 1, false};
  std::vector<index_t> lengths{6, 3};
  const index_t* lengths_p = lengths.data();
  talkconv::dropout_params drop{0.1f, 5, true};

  std::vector<float> x = std::vector<float>(48, 0.5f), dy = std::vector<float>(48, 0.25f);
  std::vector<float> W = std::vector<float>(16, 0.1f), bias = std::vector<float>(4, 0.0f);
  std::vector<float> o_in = std::vector<float>(48, 0.5f), d_o_in = std::vector<float>(48, 1.0f);
  // outputs
  std::vector<float> y = std::vector<float>(48, sentinel), dx = std::vector<float>(48, sentinel);
  std::vector<float> dW = std::vector<float>(16, sentinel), db = std::vector<float>(4, sentinel);
  std::vector<float> saved = std::vector<float>(48, sentinel), o_out = std::vector<float>(48, sentinel);
  std::vector<float> o_pre_out = std::vector<float>(48, sentinel), d_o_out = std::vector<float>(48, sentinel);
  std::vector<float> S = std::vector<float>(48, sentinel), heads_out = std::vector<float>(24, sentinel);

  // Pointers the entry points get; a test may null one.
  const float *px = x.data(), *pW = W.data(), *pbias = bias.data(), *pdy = dy.data(), *po_in = o_in.data(),
              *pd_o_in = d_o_in.data();
  float *py = y.data(), *pdx = dx.data(), *pdW = dW.data(), *pdb = db.data(), *psaved = saved.data(),
        *po_out = o_out.data(), *po_pre_out = o_pre_out.data(), *pd_o_out = d_o_out.data(), *pS = S.data(),
        *pheads = heads_out.data();

  bool outputs_untouched() const {
    for (const auto* v : {&y, &dx, &dW, &db, &saved, &o_out, &o_pre_out, &d_o_out, &S, &heads_out})
      for (float e : *v)
        if (!(e == sentinel)) return false;
    return true;
  }
};

struct entry {
  const char* name;
  bool uses_window, uses_lengths, uses_dropout;
  std::function<void(const fixture&)> call;
};

talkconv::talk_conv<float> layer_of(const fixture& f) {
  return talkconv::talk_conv<float>(
      talkconv::talk_config{f.shape.C, f.win.heads, f.win.max_left, f.win.max_right, f.win.causal});
}

const std::vector<entry>& entries() {
  static const std::vector<entry> e = {
      {"talk_conv::forward", true, true, true,
       [](const fixture& f) {
         talkconv::forward_args<float> a;
         a.shape = f.shape, a.x = f.px, a.weight = f.pW, a.bias = f.pbias, a.y = f.py, a.saved_offsets = f.psaved;
         a.lengths = f.lengths_p, a.dropout = f.drop;
         layer_of(f).forward(a);
       }},
      {"talk_conv::backward", true, true, true,
       [](const fixture& f) {
         talkconv::backward_args<float> a;
         a.shape = f.shape, a.x = f.px, a.weight = f.pW, a.bias = f.pbias, a.dy = f.pdy, a.dx = f.pdx;
         a.dweight = f.pdW, a.dbias = f.pdb, a.lengths = f.lengths_p, a.dropout = f.drop;
         layer_of(f).backward(a);
       }},
      {"cpu::offsets_forward", true, true, true,
       [](const fixture& f) {
         cpu::offsets_forward<float>(f.shape, f.win, f.px, f.pW, f.pbias, f.drop, f.po_out, f.po_pre_out, f.lengths_p);
       }},
      {"cpu::offsets_backward", true, true, true,
       [](const fixture& f) {
         cpu::offsets_backward<float>(f.shape, f.win, f.px, f.pW, f.po_in, f.pd_o_in, f.drop, f.pdx, f.pdW, f.pdb,
                                      f.lengths_p);
       }},
      {"cpu::window_forward", true, true, false,
       [](const fixture& f) { cpu::window_forward<float>(f.shape, f.win, f.px, f.po_in, f.py, f.lengths_p); }},
      {"cpu::window_backward", true, true, false,
       [](const fixture& f) {
         cpu::window_backward<float>(f.shape, f.win, f.px, f.po_in, f.pdy, f.pdx, f.pd_o_out, f.lengths_p);
       }},
      {"cpu::prefix_sum", false, false, false, [](const fixture& f) { cpu::prefix_sum<float>(f.shape, f.px, f.pS, 0.5f); }},
      {"cpu::head_sum", true, false, false, [](const fixture& f) { cpu::head_sum<float>(f.shape, f.win, f.px, f.pheads); }},
  };
  return e;
}

// Calls `e` on `f` and checks: a talkconv::error with this code and argument whose what() contains
// `needle` (the value) and the status name; every output still holds the sentinel.
void expect_error(const entry& e, const fixture& f, status code, const std::string& arg, const std::string& needle) {
  INFO("entry point: ", std::string(e.name), "; expected ", std::string(talkconv::status_name(code)), " naming '", arg, "' with '", needle, "'");
  bool threw = false;
  try {
    e.call(f);
  } catch (const talkconv::error& err) {
    threw = true;
    const std::string what = err.what();
    INFO("what() = ", what, "; argument() = ", err.argument());
    CHECK(err.code() == code);
    CHECK(err.argument() == arg);
    CHECK(what.find(needle) != std::string::npos);
    CHECK(what.find(talkconv::status_name(code)) != std::string::npos);
  }
  CHECK(threw);
  CHECK(f.outputs_untouched());
}

// Every entry point that takes the broken argument.
enum class kind { shape, window, lengths, dropout };
void expect_everywhere(const fixture& f, kind k, status code, const std::string& arg, const std::string& needle) {
  int called = 0;
  for (const entry& e : entries()) {
    if ((k == kind::window && !e.uses_window) || (k == kind::lengths && !e.uses_lengths) ||
        (k == kind::dropout && !e.uses_dropout))
      continue;
    expect_error(e, f, code, arg, needle);
    ++called;
  }
  CHECK(called >= 2);
}

}  // namespace

TEST_SUITE("errors") {

TEST_CASE("errors: the valid base problem is accepted by every entry point (the fixture is sound)") {
  for (const entry& e : entries()) {
    fixture f;
    INFO(std::string(e.name));
    CHECK_NOTHROW(e.call(f));
  }
}

TEST_CASE("errors: T <= 0") {
  for (index_t T : {index_t(0), index_t(-3)}) {
    fixture f;
    f.shape.T = T;
    expect_everywhere(f, kind::shape, status::invalid_shape, "T", "T = " + std::to_string(T));
  }
}

TEST_CASE("errors: B <= 0") {
  for (index_t B : {index_t(0), index_t(-1)}) {
    fixture f;
    f.shape.B = B;
    expect_everywhere(f, kind::shape, status::invalid_shape, "B", "B = " + std::to_string(B));
  }
}

TEST_CASE("errors: C <= 0") {
  for (index_t C : {index_t(0), index_t(-4)}) {
    fixture f;
    f.shape.C = C;
    expect_everywhere(f, kind::shape, status::invalid_shape, "C", "C = " + std::to_string(C));
  }
}

TEST_CASE("errors: H <= 0") {
  for (index_t H : {index_t(0), index_t(-2)}) {
    fixture f;
    f.win.heads = H;
    expect_everywhere(f, kind::window, status::invalid_shape, "H", "H = " + std::to_string(H));
  }
}

TEST_CASE("errors: C % H != 0") {
  fixture f;
  f.win.heads = 3;
  expect_everywhere(f, kind::window, status::invalid_shape, "C", "C = 4 is not divisible by H = 3");
}

TEST_CASE("errors: compile-time Heads differs from the configured heads") {
  try {
    talkconv::talk_conv<float, 4> conv(talkconv::talk_config{8, 2, 1, 1, false});
    FAIL("talk_conv<float, 4> with heads = 2 did not throw");
  } catch (const talkconv::error& e) {
    CHECK(e.code() == status::invalid_shape);
    CHECK(e.argument() == "H");
    CHECK(std::string(e.what()).find("H = 2") != std::string::npos);
  }
}

TEST_CASE("errors: L < 0") {
  fixture f;
  f.win.max_left = -1;
  expect_everywhere(f, kind::window, status::invalid_window, "max_left", "= -1");
}

TEST_CASE("errors: M < 0") {
  fixture f;
  f.win.max_right = -5;
  expect_everywhere(f, kind::window, status::invalid_window, "max_right", "= -5");
}

TEST_CASE("errors: causal with M != 0") {
  fixture f;
  f.win.causal = true;
  f.win.max_right = 1;
  expect_everywhere(f, kind::window, status::invalid_window, "max_right", "= 1");
}

TEST_CASE("errors: n_b outside [0, T]") {
  for (index_t n : {index_t(-1), index_t(7), index_t(1000)}) {
    fixture f;
    f.lengths[1] = n;
    expect_everywhere(f, kind::lengths, status::invalid_length, "lengths[1]", "lengths[1] = " + std::to_string(n));
  }
}

TEST_CASE("errors: dropout p outside [0, 1), NaN included") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::pair<float, const char*> bad[] = {{-0.1f, "-0.1"}, {1.0f, "= 1"}, {1.5f, "1.5"}, {nan, "nan"}, {inf, "inf"}};
  for (const auto& [p, needle] : bad) {
    CAPTURE(p);
    fixture f;
    f.drop.p = p;
    expect_everywhere(f, kind::dropout, status::invalid_dropout, "dropout", needle);
  }
  // The edges of the valid range are accepted.
  for (float p : {0.0f, 0.999f}) {
    fixture f;
    f.drop.p = p;
    for (const entry& e : entries()) CHECK_NOTHROW(e.call(f));
  }
}

TEST_CASE("errors: null required pointers") {
  struct nulled {
    const char* entry;
    const char* arg;
    std::function<void(fixture&)> null_it;
  };
  const nulled cases[] = {
      {"talk_conv::forward", "x", [](fixture& f) { f.px = nullptr; }},
      {"talk_conv::forward", "weight", [](fixture& f) { f.pW = nullptr; }},
      {"talk_conv::forward", "y", [](fixture& f) { f.py = nullptr; }},
      {"talk_conv::backward", "x", [](fixture& f) { f.px = nullptr; }},
      {"talk_conv::backward", "weight", [](fixture& f) { f.pW = nullptr; }},
      {"talk_conv::backward", "dy", [](fixture& f) { f.pdy = nullptr; }},
      {"talk_conv::backward", "dx", [](fixture& f) { f.pdx = nullptr; }},
      {"talk_conv::backward", "dweight", [](fixture& f) { f.pdW = nullptr; }},
      {"cpu::offsets_forward", "x", [](fixture& f) { f.px = nullptr; }},
      {"cpu::offsets_forward", "weight", [](fixture& f) { f.pW = nullptr; }},
      {"cpu::offsets_forward", "offsets", [](fixture& f) { f.po_out = nullptr; }},
      {"cpu::offsets_backward", "x", [](fixture& f) { f.px = nullptr; }},
      {"cpu::offsets_backward", "weight", [](fixture& f) { f.pW = nullptr; }},
      {"cpu::offsets_backward", "offsets_pre", [](fixture& f) { f.po_in = nullptr; }},
      {"cpu::offsets_backward", "d_offsets", [](fixture& f) { f.pd_o_in = nullptr; }},
      {"cpu::offsets_backward", "dweight", [](fixture& f) { f.pdW = nullptr; }},
      {"cpu::window_forward", "x", [](fixture& f) { f.px = nullptr; }},
      {"cpu::window_forward", "offsets", [](fixture& f) { f.po_in = nullptr; }},
      {"cpu::window_forward", "y", [](fixture& f) { f.py = nullptr; }},
      {"cpu::window_backward", "x", [](fixture& f) { f.px = nullptr; }},
      {"cpu::window_backward", "offsets", [](fixture& f) { f.po_in = nullptr; }},
      {"cpu::window_backward", "dy", [](fixture& f) { f.pdy = nullptr; }},
      {"cpu::window_backward", "dx", [](fixture& f) { f.pdx = nullptr; }},
      {"cpu::prefix_sum", "x", [](fixture& f) { f.px = nullptr; }},
      {"cpu::prefix_sum", "S", [](fixture& f) { f.pS = nullptr; }},
      {"cpu::head_sum", "in", [](fixture& f) { f.px = nullptr; }},
      {"cpu::head_sum", "out", [](fixture& f) { f.pheads = nullptr; }},
  };
  for (const nulled& c : cases) {
    fixture f;
    c.null_it(f);
    const entry* e = nullptr;
    for (const entry& cand : entries())
      if (std::string(cand.name) == c.entry) e = &cand;
    REQUIRE(e != nullptr);
    expect_error(*e, f, status::null_pointer, c.arg, std::string(c.arg) + " is a null pointer");
  }
  // Optional pointers may be null: bias, saved_offsets, lengths, dbias, offsets_pre, d_offsets, dx of offsets_backward.
  fixture f;
  f.pbias = nullptr, f.psaved = nullptr, f.lengths_p = nullptr, f.pdb = nullptr, f.po_pre_out = nullptr;
  f.pd_o_out = nullptr;
  for (const entry& e : entries()) {
    INFO(std::string(e.name));
    CHECK_NOTHROW(e.call(f));
  }
}

TEST_CASE("errors: null pointers given to the decoder") {
  const talkconv::talk_conv<float> conv(talkconv::talk_config{4, 2, 3, 0, true});
  auto dec = conv.make_decoder(2);
  std::vector<float> x(8, 1.0f), W(8, 0.1f), y(8, sentinel);
  const std::pair<const char*, int> cases[] = {{"x_t", 0}, {"weight", 1}, {"y_t", 2}};
  for (const auto& [arg, which] : cases) {
    INFO(std::string(arg));
    try {
      dec.step(which == 0 ? nullptr : x.data(), which == 1 ? nullptr : W.data(), nullptr, which == 2 ? nullptr : y.data());
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::null_pointer);
      CHECK(e.argument() == arg);
    }
    for (float v : y) CHECK(v == sentinel);
    CHECK(dec.position() == 0);
  }
  try {
    (void)conv.make_decoder(0);
    FAIL("make_decoder(0) did not throw");
  } catch (const talkconv::error& e) {
    CHECK(e.code() == status::invalid_shape);
    CHECK(e.argument() == "B");
  }
}

TEST_CASE("errors: sizes whose product overflows the index type") {
  {  // T * B * C overflows int64 (2^40 * 2^20 * 2^8 = 2^68)
    fixture f;
    f.shape.T = index_t(1) << 40, f.shape.B = index_t(1) << 20, f.shape.C = index_t(1) << 8;
    f.win.heads = 1;
    f.lengths_p = nullptr;  // the lengths array has B = 2 entries
    expect_everywhere(f, kind::shape, status::size_overflow, "T*B*C", std::to_string(index_t(1) << 60));
  }
  {  // T * B * C = 2^62 fits, T * B * P = 2^63 (P = 2H = 2) does not
    fixture f;
    f.shape.T = index_t(1) << 31, f.shape.B = index_t(1) << 31, f.shape.C = 1;
    f.win.heads = 1;
    f.lengths_p = nullptr;
    expect_everywhere(f, kind::window, status::size_overflow, "T*B*P", std::to_string(index_t(1) << 62));
  }
  {  // L + M + 1 overflows
    fixture f;
    f.win.max_left = std::numeric_limits<index_t>::max() - 1;
    expect_everywhere(f, kind::window, status::size_overflow, "max_left", std::to_string(f.win.max_left));
  }
  {  // the decoder's state (L + 2) * B * C
    const talkconv::talk_conv<float> conv(talkconv::talk_config{8, 2, 3, 0, true});
    try {
      (void)conv.make_decoder(index_t(1) << 61);
      FAIL("make_decoder(2^61) did not throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      INFO(std::string(e.what()));
      CHECK(std::string(e.what()).find(std::to_string(index_t(1) << 61)) != std::string::npos);
    }
  }
}

TEST_CASE("errors: byte sizes, the weight's P * C and P = 2H overflow before memory is touched") {
  const std::string two61 = std::to_string(index_t(1) << 61);
  {  // T*B*C = 2^61 elements fit an index; 2^61 floats are 2^63 bytes, which do not
    fixture f;
    f.shape.T = index_t(1) << 40, f.shape.B = index_t(1) << 20, f.shape.C = 2;
    f.win.heads = 1;
    f.lengths_p = nullptr;
    expect_everywhere(f, kind::shape, status::size_overflow, "T*B*C", two61 + " elements of 4 bytes");
  }
  {  // T*B*C = 2^60 floats fit (2^62 bytes); the offsets, T*B*P = 2^61 float accumulators, do not
    fixture f;
    f.shape.T = index_t(1) << 40, f.shape.B = index_t(1) << 20, f.shape.C = 1;
    f.win.heads = 1;
    f.lengths_p = nullptr;
    expect_everywhere(f, kind::window, status::size_overflow, "T*B*P", two61 + " elements of 4 bytes");
  }
  {  // the weight: P*C = 2^32 * 2^32 elements (C = 2^32, H = 2^31); T*B*C and T*B*P fit
    fixture f;
    f.shape.T = 1, f.shape.B = 1, f.shape.C = index_t(1) << 32;
    f.win.heads = index_t(1) << 31;
    f.lengths_p = nullptr;
    for (const char* name : {"talk_conv::forward", "talk_conv::backward", "cpu::offsets_forward", "cpu::offsets_backward"})
      for (const entry& e : entries())
        if (std::string(e.name) == name) expect_error(e, f, status::size_overflow, "P*C", std::to_string(index_t(1) << 32));
    // The window blocks take no weight: their problem is fine (with these dummy sizes they would go on
    // to read memory, so only the check itself is called here).
    CHECK_NOTHROW(talkconv::detail::validate_bytes(f.shape, f.win, sizeof(float), sizeof(float)));
  }
  {  // P*C = 2^62 elements fit; as floats they are 2^64 bytes
    fixture f;
    f.shape.T = 1, f.shape.B = 1, f.shape.C = index_t(1) << 31;
    f.win.heads = index_t(1) << 30;
    f.lengths_p = nullptr;
    for (const char* name : {"talk_conv::forward", "talk_conv::backward", "cpu::offsets_forward", "cpu::offsets_backward"})
      for (const entry& e : entries())
        if (std::string(e.name) == name)
          expect_error(e, f, status::size_overflow, "P*C", std::to_string(index_t(1) << 62) + " elements of 4 bytes");
  }
  {  // 16-bit storage: 2^61 halves are 2^62 bytes, but the float offsets of T*B*P = 2^62 are not
    const talkconv::seq_shape shape{index_t(1) << 42, index_t(1) << 20, 1, layout::tbc};  // T*B*C = 2^62 halves
    const talkconv::window_params win{1, 2, 1, false};                                     // T*B*P = 2^63: elements
    const Eigen::half* dummy = reinterpret_cast<const Eigen::half*>(&sentinel);
    try {
      talkconv::cpu::window_forward<Eigen::half>(shape, win, dummy, nullptr, nullptr);
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "T*B*P");
    }
    const talkconv::seq_shape shape2{index_t(1) << 40, index_t(1) << 20, 2, layout::btc};  // 2^61 halves: 2^62 bytes
    const talkconv::window_params win2{1, 2, 0, true};  // P = 1: T*B*P = 2^60 floats, 2^62 bytes: fits too
    // x fits in 2^62 bytes, but a float S or widened rows of the same count (2^63 bytes) would not:
    // refused under T*B*C, naming the accumulator's 4 bytes.
    try {
      talkconv::cpu::window_forward<Eigen::half>(shape2, win2, dummy, nullptr, nullptr);
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "T*B*C");
      CHECK(std::string(e.what()).find(two61 + " elements of 4 bytes") != std::string::npos);
    }
  }
  {  // prefix_sum with a double accumulator for float input: 2^60 elements, 2^63 bytes of S
    const talkconv::seq_shape shape{index_t(1) << 40, index_t(1) << 20, 1, layout::tbc};
    std::vector<double> S(4, -1.0);
    try {
      talkconv::cpu::prefix_sum<float, double>(shape, &sentinel, S.data(), 0.5);
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "T*B*C");
      CHECK(std::string(e.what()).find("elements of 8 bytes") != std::string::npos);
    }
    for (double v : S) CHECK(v == -1.0);
  }
  {  // P = 2H overflows (C = H = 2^62, bidirectional); causal, P = H fits but P*C = 2^124 does not
    fixture f;
    f.shape.T = 1, f.shape.B = 1, f.shape.C = index_t(1) << 62;
    f.win.heads = index_t(1) << 62;
    f.lengths_p = nullptr;
    expect_everywhere(f, kind::window, status::size_overflow, "H", std::to_string(index_t(1) << 62));
    try {
      talkconv::talk_conv<float> conv(talkconv::talk_config{index_t(1) << 62, index_t(1) << 62, 1, 1, false});
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "H");
    }
    try {
      talkconv::talk_conv<float> conv(talkconv::talk_config{index_t(1) << 62, index_t(1) << 62, 1, 0, true});
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "P*C");
    }
  }
  {  // the layer's size queries: weight_size() needs P*C to fit (checked at construction), saved_size checks
    try {
      talkconv::talk_conv<float> conv(talkconv::talk_config{index_t(1) << 32, index_t(1) << 31, 1, 1, false});
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "P*C");
    }
    const talkconv::talk_conv<float> conv(talkconv::talk_config{8, 2, 3, 1, false});
    try {
      (void)conv.saved_size(index_t(1) << 40, index_t(1) << 30);
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "T*B");
    }
    try {
      (void)conv.saved_size(index_t(1) << 40, index_t(1) << 21);  // T*B = 2^61, P = 4
      FAIL("no throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "T*B*P");
    }
    CHECK(conv.saved_size(6, 2) == 48);
  }
  {  // the decoder's state: (L+2)*B*C = 4 * 2^57 * 8 = 2^62 accumulators fit an index, their bytes do not
    const talkconv::talk_conv<float> conv(talkconv::talk_config{8, 2, 2, 0, true});
    try {
      (void)conv.make_decoder(index_t(1) << 57);
      FAIL("make_decoder(2^57) did not throw");
    } catch (const talkconv::error& e) {
      CHECK(e.code() == status::size_overflow);
      CHECK(e.argument() == "(L+2)*B*C");
      CHECK(std::string(e.what()).find(std::to_string(index_t(1) << 62) + " elements of 4 bytes") != std::string::npos);
    }
  }
}

// Sizes that are valid however large the window: scratch and reach follow the sequence, not L, and no
// size is formed from L or 1 / (1 - p) that could overflow (these calls used to allocate by the window).
TEST_CASE("errors: huge windows and segments on short sequences are accepted and computed") {
  std::mt19937_64 rng(1717);
  for (bool causal : {false, true}) {
    ref::problem pb;
    pb.T = 12, pb.B = 2, pb.C = 4, pb.H = 2, pb.L = index_t(1) << 60, pb.M = causal ? 0 : (index_t(1) << 59), pb.causal = causal;
    pb.lengths = {12, 7};
    INFO(pb.str());
    const vec x = round_through<float>(normal_vec(rng, pb.x_size()));
    const vec o = window_offsets<float>(rng, pb, 1.0);
    const auto len = lengths_of(pb);
    std::vector<float> y(x.size(), sentinel);
    const auto os = to_store_vec<float>(o), xs = to_store_vec<float>(x);
    cpu::window_forward<float>(shape_of(pb, layout::tbc), window_of(pb), xs.data(), os.data(), y.data(), lengths_ptr(len));
    const vec want = ref::window_forward(pb, x, o);
    TT_CHECK_CLOSE("window_forward, L = 2^60", to_dbl_vec(y), want, 1e-5, std::max(1e-300, max_abs(want)));
    // The layer, training with p close to 1: its reach L / (1 - p) is far beyond any index.
    const talkconv::talk_conv<float> conv(talkconv::talk_config{pb.C, pb.H, pb.L, pb.M, pb.causal});
    const vec W = round_through<float>(normal_vec(rng, static_cast<size_t>(pb.P() * pb.C)));
    const auto Ws = to_store_vec<float>(W);
    const talkconv::dropout_params dp{0.999f, 8, true};
    std::vector<float> y2(x.size(), sentinel);
    talkconv::forward_args<float> fa;
    fa.shape = shape_of(pb, layout::tbc), fa.x = xs.data(), fa.weight = Ws.data(), fa.y = y2.data();
    fa.lengths = lengths_ptr(len), fa.dropout = dp;
    conv.forward(fa);
    const vec want2 = ref::layer_forward(pb, x, W, vec{}, ref::dropout{true, dp.p, dp.seed});
    TT_CHECK_CLOSE("talk_conv forward, L = 2^60, p = 0.999", to_dbl_vec(y2), want2, 1e-5, std::max(1e-300, max_abs(want2)));
  }
  // prefix_sum: a segment longer than the sequence is one segment (no overflow counting segments).
  ref::problem pb;
  pb.T = 9, pb.B = 2, pb.C = 3;
  const vec x = round_through<float>(normal_vec(rng, pb.x_size()));
  const auto xs = to_store_vec<float>(x);
  std::vector<float> S0(x.size(), sentinel), S1(x.size(), sentinel);
  cpu::prefix_sum<float>(shape_of(pb, layout::tbc), xs.data(), S0.data(), 0.5f, 0);
  cpu::prefix_sum<float>(shape_of(pb, layout::tbc), xs.data(), S1.data(), 0.5f, std::numeric_limits<index_t>::max());
  CHECK(bitwise_equal(S0, S1));
  TT_CHECK_CLOSE("S", to_dbl_vec(S0), ref::prefix_sum(pb, x, 0.5, 0), 1e-6, std::max(1.0, max_abs(x)) * double(pb.T));
}

TEST_CASE("errors: the planning arithmetic does not wrap near the index limit") {
  constexpr index_t max = std::numeric_limits<index_t>::max();
  CHECK(talkconv::detail::ceil_div(max, 1) == max);
  CHECK(talkconv::detail::ceil_div(max, 2) == max / 2 + 1);
  CHECK(talkconv::detail::ceil_div(max - 1, max) == 1);
  CHECK(talkconv::detail::ceil_div(0, 7) == 0);
  CHECK(talkconv::detail::ceil_div(14, 7) == 2);
  CHECK(talkconv::detail::ceil_div(15, 7) == 3);
  CHECK(cpu::detail::saturating_mul(max / 2, 3) == max);
  CHECK(cpu::detail::saturating_mul(index_t(1) << 40, index_t(1) << 30) == max);
  CHECK(cpu::detail::saturating_mul(0, max) == 0);
  CHECK(cpu::detail::saturating_mul(123, 456) == 123 * 456);
}

}  // TEST_SUITE
