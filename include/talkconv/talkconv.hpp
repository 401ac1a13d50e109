// talkconv: TaLK convolutions (Lioutas & Guo, ICML 2020) for C++ on the CPU (Eigen) and CUDA.
#pragma once

#include "talkconv/config.hpp"
#include "talkconv/eigen_traits.hpp"
#include "talkconv/error.hpp"
#include "talkconv/params.hpp"
#include "talkconv/traits.hpp"

#include "talkconv/cpu/heads.hpp"
#include "talkconv/cpu/offsets.hpp"
#include "talkconv/cpu/prefix_sum.hpp"
#include "talkconv/cpu/window.hpp"
#include "talkconv/cpu/window_shard.hpp"
#include "talkconv/talk_conv.hpp"
