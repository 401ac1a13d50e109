// Scalar traits: the customization point that lets talkconv run on a user's own element type.
#pragma once

#include "talkconv/config.hpp"

#include <type_traits>

namespace talkconv {

// scalar_traits<T> tells talkconv how to compute with storage type T.
//
//   acc_type          the type sums, offsets and gradients are accumulated in (SPEC Numerics):
//                     T itself for float and double, float for half and bfloat16.
//   to_acc(T)         widen a stored value.
//   from_acc(acc)     round an accumulated value back to storage.
//
// The primary template covers every arithmetic type. To use your own type, specialize it in namespace
// talkconv before the first talkconv call that names your type:
//
//   template <> struct talkconv::scalar_traits<my_fixed16> {
//     using acc_type = float;
//     static float to_acc(my_fixed16 v) { return v.to_float(); }
//     static my_fixed16 from_acc(float v) { return my_fixed16::from_float(v); }
//   };
//
// acc_type must be float or double (or another type with the arithmetic of a real number that
// <cmath>'s floor, ceil, exp and isnan accept). Mark the functions TALKCONV_HOST_DEVICE to use the type
// on the CUDA path.
template <class T, class Enable = void>
struct scalar_traits {
  static_assert(std::is_arithmetic<T>::value,
                "talkconv::scalar_traits<T> has no specialization for this type: specialize it "
                "(see talkconv/traits.hpp) to give its accumulator type and conversions");
  using acc_type = T;
  TALKCONV_HOST_DEVICE static constexpr acc_type to_acc(T v) { return v; }
  TALKCONV_HOST_DEVICE static constexpr T from_acc(acc_type v) { return v; }
};

template <class T>
using acc_t = typename scalar_traits<T>::acc_type;

template <class T>
TALKCONV_HOST_DEVICE inline acc_t<T> to_acc(const T& v) {
  return scalar_traits<T>::to_acc(v);
}

template <class T>
TALKCONV_HOST_DEVICE inline T from_acc(const acc_t<T>& v) {
  return scalar_traits<T>::from_acc(v);
}

}  // namespace talkconv
