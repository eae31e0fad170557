// SpinBarrier: a reusable barrier for a fixed team of threads that meet many times within one short job
// (the native decode step's phases: ~30 meetings in a millisecond), where a futex wait and wake per
// meeting would cost more than the work between meetings.
//
// A waiting thread spins (with the CPU's pause hint) for a few microseconds, then yields its core on each
// further check, so a member that the OS has descheduled is not starved by its teammates' spinning.
//
// Thread safety: Wait is called by exactly `parties` threads per phase, each once; any thread may be one of
// them. Reusable: the phase after a Wait may begin at once.
#ifndef BRT_SERVER_MODEL_SPIN_BARRIER_H_
#define BRT_SERVER_MODEL_SPIN_BARRIER_H_

#include <atomic>
#include <cstdint>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace brt {

class SpinBarrier {
 public:
  explicit SpinBarrier(int parties) : parties_(parties) {}
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;

  int parties() const { return parties_; }

  // Returns once all `parties` threads have called Wait for this phase. Every write a thread made before
  // its Wait is visible to every thread after theirs.
  void Wait() {
    if (parties_ <= 1) return;
    const uint32_t phase = phase_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == parties_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      phase_.store(phase + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 4000;  // ~10-40 us of pause instructions, then yield per check

  const int parties_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> phase_{0};
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_SPIN_BARRIER_H_
