// Per-thread reuse of the CPU kernels' scratch buffers, so that a kernel called again with the same shapes
// allocates nothing: Scratch (tiles.h) takes its memory from here and gives it back when it goes.
//
// Each thread keeps the blocks its scratch buffers released, a bounded number of bytes (kPoolBytes per thread),
// and hands a kept block to the next request it can hold without wasting much of it. A block released on
// another thread than the one that acquired it joins that thread's pool; blocks are plain c10::alloc_cpu memory,
// freed when a pool overflows or its thread exits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv::cpu {

// A 64-byte aligned block of at least `bytes` (> 0); `capacity` receives its size, to be given back to
// scratch_release.
void* scratch_acquire(size_t bytes, size_t& capacity);

// Returns a block from scratch_acquire (null is ignored).
void scratch_release(void* block, size_t capacity);

}  // namespace fastconv::cpu
