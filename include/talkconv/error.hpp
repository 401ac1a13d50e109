// Status codes and the exception every host entry point throws on bad input.
#pragma once

#include "talkconv/config.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace talkconv {

// Why a call was refused; cudaError_t cannot say most of these (as CUTLASS's Status).
enum class status : int {
  success = 0,
  invalid_shape,        // T, B, C, H <= 0, C % H != 0
  invalid_window,       // L < 0, M < 0, M != 0 in causal mode
  invalid_length,       // n_b outside [0, T]
  invalid_dropout,      // p outside [0, 1)
  null_pointer,         // a required pointer is null
  workspace_too_small,  // caller's workspace is smaller than the size query said
  size_overflow,        // a product of sizes overflows the index type
  invalid_layout,       // unknown layout value
  cuda_error,           // a CUDA call or launch failed (message carries cudaGetErrorString)
  comm_error,           // an MPI or NCCL call of a sharded layer failed (message carries its error string)
};

inline const char* status_name(status s) noexcept {
  switch (s) {
    case status::success: return "success";
    case status::invalid_shape: return "invalid_shape";
    case status::invalid_window: return "invalid_window";
    case status::invalid_length: return "invalid_length";
    case status::invalid_dropout: return "invalid_dropout";
    case status::null_pointer: return "null_pointer";
    case status::workspace_too_small: return "workspace_too_small";
    case status::size_overflow: return "size_overflow";
    case status::invalid_layout: return "invalid_layout";
    case status::cuda_error: return "cuda_error";
    case status::comm_error:
      return "comm_error";
  }
  return "unknown";
}

// Thrown by host entry points before any memory is touched. what() names the argument and its value,
// for example: "talkconv: invalid_shape: C = 10 is not divisible by H = 3".
class error : public std::invalid_argument {
 public:
  error(status code, std::string argument, const std::string& message)
      : std::invalid_argument("talkconv: " + std::string(status_name(code)) + ": " + message),
        code_(code),
        argument_(std::move(argument)) {}

  status code() const noexcept { return code_; }
  // The name of the offending argument as SPEC writes it ("C", "max_left", "lengths[3]", "x", ...).
  const std::string& argument() const noexcept { return argument_; }

 private:
  status code_;
  std::string argument_;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <class... Parts>
[[noreturn]] void fail(status code, const std::string& argument, const Parts&... parts) {
  throw error(code, argument, concat(parts...));
}

inline void require_pointer(const void* p, const char* name) {
  if (p == nullptr) fail(status::null_pointer, name, name, " is a null pointer");
}

}  // namespace detail
}  // namespace talkconv
