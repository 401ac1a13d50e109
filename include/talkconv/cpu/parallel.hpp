// Fixed work partition over OpenMP threads: tasks never depend on the thread count, so neither do results.
#pragma once

#include "talkconv/config.hpp"

#include <limits>

#if TALKCONV_HAS_OPENMP
#include <omp.h>
#endif

namespace talkconv {
namespace cpu {

// Threads talkconv may use (OpenMP's setting: OMP_NUM_THREADS, omp_set_num_threads); 1 without OpenMP.
inline int max_threads() {
#if TALKCONV_HAS_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

// a * b for a, b >= 0, or the largest index when that overflows: for work estimates, which only
// decide whether a call goes parallel.
inline index_t saturating_mul(index_t a, index_t b) {
  return a != 0 && b > std::numeric_limits<index_t>::max() / a ? std::numeric_limits<index_t>::max() : a * b;
}

// Runs init() once per thread to make its scratch, then body(task, scratch) for task in [0, tasks).
// Work below `serial_below` elements stays on the calling thread (no fork cost for small calls).
template <class Init, class Body>
void parallel_tasks(index_t tasks, index_t work, Init&& init, Body&& body) {
  constexpr index_t serial_below = index_t(1) << 15;
#if TALKCONV_HAS_OPENMP
  if (tasks > 1 && work >= serial_below && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      auto scratch = init();
#pragma omp for schedule(dynamic, 1)
      for (index_t i = 0; i < tasks; ++i) body(i, scratch);
    }
    return;
  }
#else
  (void)work;
  (void)serial_below;
#endif
  auto scratch = init();
  for (index_t i = 0; i < tasks; ++i) body(i, scratch);
}

}  // namespace detail
}  // namespace cpu
}  // namespace talkconv
