// Caller workspaces (CUB's two-phase protocol): overflow-checked byte sizes, carving one buffer into
// aligned pieces, and the size query.
#pragma once

#include "talkconv/error.hpp"
#include "talkconv/params.hpp"

#include <cstddef>
#include <limits>

namespace talkconv {
namespace cuda {
namespace detail {

// Bytes of n elements of `size` bytes, or a size_overflow error naming `what` (workspace sizes must
// never wrap around: a wrapped query would let a caller pass a buffer too small for the kernels).
inline std::size_t checked_bytes(index_t n, std::size_t size, const char* what) {
  return static_cast<std::size_t>(talkconv::detail::checked_mul(n, static_cast<index_t>(size), what));
}

// Byte-aligned carving of one caller workspace into typed pieces (CUB's AliasTemporaries, simplified).
struct workspace_plan {
  static constexpr std::size_t align = 256;
  std::size_t bytes = 0;
  std::size_t add(std::size_t n) {
    const std::size_t at = bytes;
    if (n > std::numeric_limits<std::size_t>::max() - align - bytes)
      talkconv::detail::fail(status::size_overflow, "workspace_bytes", "the workspace (", bytes, " + ", n,
                             " bytes) overflows size_t");
    bytes += (n + align - 1) / align * align;
    return at;
  }
};

// The two-phase workspace protocol: returns true when this call was only a size query.
inline bool workspace_query(void* workspace, std::size_t& bytes, std::size_t need) {
  if (workspace == nullptr) {
    bytes = need;
    return true;
  }
  if (bytes < need)
    talkconv::detail::fail(status::workspace_too_small, "workspace_bytes", "workspace_bytes = ", bytes,
                           " is smaller than the ", need, " bytes this call needs");
  return false;
}

}  // namespace detail
}  // namespace cuda
}  // namespace talkconv
