// Eigen/Core for talkconv's headers, included with GCC 12's AVX-512 false positive silenced.
//
// GCC 12 warns "'__Y' may be used uninitialized [-Wmaybe-uninitialized]" from its own avx512fintrin.h
// (the _mm512_undefined_* idiom, GCC bug 105593, fixed in GCC 13) for every Eigen GEMM compiled with
// -march=native on an AVX-512 machine: 133 warnings for one small program, and -isystem does not hide
// them. The warning's location lies in the intrinsics and Eigen headers, so silencing it around their
// first inclusion covers every later use, and nothing else of the user's translation unit. (If the user
// includes Eigen or <immintrin.h> before talkconv, those headers were not ours to silence.)
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
