// Baselines' shared helpers (not part of the library): SPEC's window bounds written out once more,
// independently of talkconv/detail, plus the OpenMP loop the baselines share.
#pragma once

#include <talkconv/params.hpp>
#include <talkconv/traits.hpp>

#include <cmath>
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace talkconv_bench {

using talkconv::index_t;

// A real bound a = clamp(t + shift, 0, n - 1) as floor(a) = lo, ceil(a) = hi, frac = a - lo.
// The shift is split before it is added to t so frac keeps the offset's precision at large t.
struct bound {
  index_t lo;
  index_t hi;
  float frac;
};

template <class A>
inline bound make_bound(index_t t, A shift, index_t n) {
  if (shift <= A(-t)) return {0, 0, 0.0f};
  if (shift >= A(n - 1 - t)) return {n - 1, n - 1, 0.0f};
  const A fl = std::floor(shift);
  const index_t lo = t + static_cast<index_t>(fl);
  const A frac = shift - fl;
  return {lo, frac > A(0) ? lo + 1 : lo, static_cast<float>(frac)};
}

// SPEC step 3 for head h of token t of a sequence of length n, from its row of P offsets.
struct window_bounds {
  bound l;  // a_l
  bound r;  // a_r
};

template <class A>
inline window_bounds bounds_of(const talkconv::window_params& w, index_t n, index_t t, const A* row, index_t h) {
  window_bounds b;
  b.l = make_bound<A>(t, -(row[h] * A(w.max_left)), n);
  b.r = w.causal ? bound{t, t, 0.0f} : make_bound<A>(t, row[w.heads + h] * A(w.max_right), n);
  return b;
}

// body(i) for i in [0, n) on OpenMP threads (static schedule: a fixed partition for a fixed thread count).
template <class F>
inline void parallel_for(index_t n, F&& body) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
  for (index_t i = 0; i < n; ++i) body(i);
#else
  for (index_t i = 0; i < n; ++i) body(i);
#endif
}

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace talkconv_bench
