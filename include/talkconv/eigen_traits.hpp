// scalar_traits for Eigen::half and Eigen::bfloat16: stored 16-bit, accumulated in float.
#pragma once

#include "talkconv/traits.hpp"

#include "talkconv/detail/eigen.hpp"

namespace talkconv {

template <>
struct scalar_traits<Eigen::half> {
  using acc_type = float;
  static float to_acc(Eigen::half v) { return static_cast<float>(v); }
  static Eigen::half from_acc(float v) { return Eigen::half(v); }
};

template <>
struct scalar_traits<Eigen::bfloat16> {
  using acc_type = float;
  static float to_acc(Eigen::bfloat16 v) { return static_cast<float>(v); }
  static Eigen::bfloat16 from_acc(float v) { return Eigen::bfloat16(v); }
};

}  // namespace talkconv
