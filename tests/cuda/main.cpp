// doctest main of the CUDA tests: without a GPU every GPU case is skipped and the program exits 77,
// which ctest reports as "Skipped" (SKIP_RETURN_CODE), never as passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include "has_gpu.hpp"

#include <doctest/doctest.h>

#include <cstdio>

int main(int argc, char** argv) {
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  const int rc = ctx.run();
  if (ctx.shouldExit()) return rc;
  if (rc == 0 && !has_gpu()) {
    std::printf("talkconv CUDA tests: no CUDA device found; every GPU case was skipped\n");
    return 77;
  }
  return rc;
}
