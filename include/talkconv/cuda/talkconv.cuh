// talkconv's CUDA API in one include (compile with nvcc): building blocks and the talk_conv layer.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/cuda/device_offsets.cuh"
#include "talkconv/cuda/device_scan.cuh"
#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/error.hpp"
#include "talkconv/cuda/talk_conv.cuh"
