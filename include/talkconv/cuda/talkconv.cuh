// talkconv's CUDA API in one include (compile with nvcc): building blocks and the talk_conv layer.
//
//   talkconv::cuda::window_forward / window_backward   building block 4 (device_window.cuh)
//   talkconv::cuda::offsets_forward / offsets_backward building block 2 (device_offsets.cuh)
//   talkconv::cuda::prefix_sum, head_sum               building blocks 1 and 3 (device_scan.cuh)
//   talkconv::cuda::talk_conv<T, Heads>                the layer (talk_conv.cuh)
//   talkconv::cuda::decoder<T>                         incremental decoding, graph-replayable (decoder.cuh)
//
// Every pointer is device memory (lengths too: B int64 values, clamped to [0, T] in the kernels); every
// call takes a cudaStream_t, never allocates (except the documented convenience overloads, which use
// cudaMallocAsync on the caller's stream) and never synchronizes. Calls that need scratch memory follow
// CUB's two-phase protocol. Host-side validation throws the CPU path's named talkconv::error.
//
// The tree, CUB's way (one job per file):
//   device_*.cuh   host launchers: plans, dispatch on dtype / index type / causality, the two-phase workspace
//   kernel_*.cuh   the __global__ entry points, thin: each calls its agent
//   agent_*.cuh    one kernel's per-block work (tiles, stages, mma steps); the per-element formulas are in
//                  talkconv/detail/ (host+device, run by the CPU tests too)
//   policy.cuh     every per-dtype, per-architecture tuning choice and the A/B switches
//   smem_layout.cuh, geometry.cuh, workspace.cuh, dispatch.cuh   shared-memory layouts, problem descriptors and
//                  channel plans, workspace carving, the dispatchers
//   async_copy.cuh, mma_tf32.cuh   device primitives: cp.async and L2 hints, the 3xTF32 products
//   error.hpp, cuda_traits.hpp     errors, dtype traits
//   talk_conv.cuh (the layer), decoder.cuh (incremental decoding), shard_rows.cuh (time shards)

// Spell the namespace out (talkconv::cuda, or an alias): after `using namespace talkconv;` a bare
// `cuda::` is ambiguous with libcu++'s ::cuda.
#pragma once

#include "talkconv/cuda/cuda_traits.hpp"
#include "talkconv/cuda/decoder.cuh"
#include "talkconv/cuda/device_offsets.cuh"
#include "talkconv/cuda/device_scan.cuh"
#include "talkconv/cuda/device_window.cuh"
#include "talkconv/cuda/error.hpp"
#include "talkconv/cuda/talk_conv.cuh"
