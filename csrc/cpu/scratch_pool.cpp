// The per-thread scratch pools of scratch_pool.h, and fastconv_C::cpu_scratch_allocations, which counts the
// blocks the pools had to allocate (for tests that check a repeated call allocates nothing).
#include "scratch_pool.h"

#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

namespace fastconv::cpu {
namespace {

// What a thread keeps: at most this many blocks and bytes. Above them the oldest kept blocks are freed.
constexpr size_t kPoolBlocks = 16;
constexpr size_t kPoolBytes = size_t{32} << 20;
// A kept block serves a request it holds with at most this factor of room to spare.
constexpr size_t kMaxWaste = 4;

std::atomic<int64_t> allocations{0};

struct Block {
  void* data;
  size_t bytes;
};

// Set when the thread's pool is destroyed (thread exit; for the main thread, before static objects such as
// the packed-weight cache release their buffers): blocks then go straight to the allocator. A trivially
// destructible thread_local, so it can still be read after the pool is gone.
thread_local bool pool_gone = false;

struct Pool {
  std::vector<Block> blocks;  // oldest first
  size_t bytes = 0;

  ~Pool() {
    pool_gone = true;
    for (const Block& b : blocks) {
      c10::free_cpu(b.data);
    }
  }
};

// The thread's pool, or null once it is destroyed.
Pool* pool() {
  if (pool_gone) {
    return nullptr;
  }
  thread_local Pool p;
  return &p;
}

int64_t cpu_scratch_allocations() { return allocations.load(); }

}  // namespace

void* scratch_acquire(size_t bytes, size_t& capacity) {
  Pool* pp = pool();
  if (pp == nullptr) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    capacity = bytes;
    return c10::alloc_cpu(bytes);
  }
  Pool& p = *pp;
  size_t best = p.blocks.size();
  for (size_t i = 0; i < p.blocks.size(); ++i) {
    const size_t have = p.blocks[i].bytes;
    if (have >= bytes && have <= kMaxWaste * bytes && (best == p.blocks.size() || have < p.blocks[best].bytes)) {
      best = i;
    }
  }
  if (best < p.blocks.size()) {
    const Block b = p.blocks[best];
    p.blocks.erase(p.blocks.begin() + static_cast<std::ptrdiff_t>(best));
    p.bytes -= b.bytes;
    capacity = b.bytes;
    return b.data;
  }
  allocations.fetch_add(1, std::memory_order_relaxed);
  capacity = bytes;
  return c10::alloc_cpu(bytes);
}

void scratch_release(void* block, size_t capacity) {
  if (block == nullptr) {
    return;
  }
  Pool* pp = pool();
  if (pp == nullptr || capacity > kPoolBytes) {
    c10::free_cpu(block);
    return;
  }
  Pool& p = *pp;
  p.blocks.push_back({block, capacity});
  p.bytes += capacity;
  while (p.blocks.size() > kPoolBlocks || p.bytes > kPoolBytes) {
    c10::free_cpu(p.blocks.front().data);
    p.bytes -= p.blocks.front().bytes;
    p.blocks.erase(p.blocks.begin());
  }
}

TORCH_LIBRARY_FRAGMENT(fastconv_C, m) {
  m.def("cpu_scratch_allocations() -> int", &cpu_scratch_allocations);
}

}  // namespace fastconv::cpu
