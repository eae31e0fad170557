// PoolMemory: where a CPU model's session memory pools live. Each pool (a layer's key/value rings, the
// recurrent state) gets one reservation of address space sized for max_slots slots, mapped lazily by the
// kernel, and the pools are tensor views of its first `capacity` slots: growing them extends the views in
// place, with no new allocation and no copy of the sessions' memory; a new slot's pages become resident
// when its session first writes them.
//
// Why: the pools double when a session takes a slot beyond their capacity, on the executor, between two
// model calls, so every running session waits. When growth meant a new pool, a copy of the old one and
// the first touch of every new page (~14 us a page on this project's VM), doubling from 32 to 64 slots of
// the shipped model stalled every generating session ~160 ms, and each doubling after that twice as long
// (benchmarks/README.md, "pool growth"). Untouched address space costs no memory: the resident set grows
// with the slots used, as before. (Touching the next slots' pages ahead on a background thread was tried:
// no gain measured over faulting them in with each new session's first writes.)
//
// Contract: Create reserves max_slots * slot_bytes[i] bytes of zeroed, not yet resident address space
// per pool, or returns null (the runner then allocates pools itself, as on a GPU). View(i, ...) is a
// tensor over the start of pool i; each view keeps the reservation alive, so the memory outlives this
// object while a view does. Memory beyond the views is zero.
//
// Thread safety: View may be called from any thread; Touch only before the views are used.
#ifndef BRT_SERVER_MODEL_POOL_MEMORY_H_
#define BRT_SERVER_MODEL_POOL_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

namespace brt {

// Has the kernel map every whole page inside [data, data + bytes) writable now, in one call
// (madvise(MADV_POPULATE_WRITE), Linux 5.14+; nothing elsewhere), without writing to them: the first
// writes then skip the guest's page faults. On the project's VM that halved the cost of touching fresh
// memory (the hypervisor still backs each page on its first write). Safe on memory in use.
void PrefaultForWrite(void* data, size_t bytes);

class PoolMemory {
 public:
  // One pool per entry: the bytes of one slot. Null when the address space cannot be reserved.
  static std::unique_ptr<PoolMemory> Create(const std::vector<int64_t>& slot_bytes, int64_t max_slots);
  ~PoolMemory();
  PoolMemory(const PoolMemory&) = delete;
  PoolMemory& operator=(const PoolMemory&) = delete;

  // Pool i's first `slots` slots as a tensor of (slots, dims...) of dtype; dims' elements times the
  // dtype's size must be the pool's slot bytes.
  at::Tensor View(size_t pool, int64_t slots, const std::vector<int64_t>& dims, at::ScalarType dtype) const;

  // Touches every pool's pages of slots [0, slots) now, on the calling thread: a new pool's first slots,
  // before any model call, so that the first sessions do not fault them in on the executor. Writes
  // zeros, so only before anything uses them.
  void Touch(int64_t slots);

 private:
  struct Region;
  PoolMemory() = default;

  std::vector<std::shared_ptr<Region>> regions_;
  std::vector<int64_t> slot_bytes_;
  int64_t max_slots_ = 0;
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_POOL_MEMORY_H_
