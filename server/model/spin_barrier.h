// SpinBarrier: a reusable barrier for a fixed team of threads that meet many times within one short job
// (the native decode step's phases: ~30 meetings in a millisecond), where a futex wait and wake per
// meeting would cost more than the work between meetings.
//
// A waiting thread spins (with the CPU's pause hint) for a few tens of microseconds, then sleeps (a futex
// on Linux, else yields on each check) until the last thread arrives and wakes it: when the OS has
// descheduled a member (on a 2-core machine, to run an RPC or delivery thread), its teammates give their
// cores back rather than spin through the scheduler's time slice, and the member can run on a freed core.
//
// Thread safety: Wait is called by exactly `parties` threads per phase, each once; any thread may be one of
// them. Reusable: the phase after a Wait may begin at once.
#ifndef BRT_SERVER_MODEL_SPIN_BARRIER_H_
#define BRT_SERVER_MODEL_SPIN_BARRIER_H_

#include <atomic>
#include <climits>
#include <cstdint>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
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
      phase_.store(phase + 1, std::memory_order_seq_cst);
      // Only when someone went to sleep (or is about to: it counted itself in sleepers_ before its last
      // look at phase_, which the seq_cst order of the two makes see the new phase or be woken).
      if (sleepers_.load(std::memory_order_seq_cst) > 0) Wake();
      return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__)
        _mm_pause();
#endif
        continue;
      }
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      if (phase_.load(std::memory_order_seq_cst) == phase) Sleep(phase);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

 private:
  // Pause instructions before sleeping: ~20-60 us here, longer than a phase of a decode step normally
  // waits for its slowest member, far shorter than a scheduler time slice.
  static constexpr int kSpins = 2000;

  // Sleeps while phase_ is still `phase` (may return early; the caller looks again).
  void Sleep(uint32_t phase) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&phase_), FUTEX_WAIT_PRIVATE, phase, nullptr, nullptr, 0);
#else
    (void)phase;
    std::this_thread::yield();
#endif
  }
  void Wake() {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&phase_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#endif
  }

  const int parties_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> phase_{0};  // bumped when the last thread arrives; the futex word
  std::atomic<int> sleepers_{0};    // threads in (or entering) Sleep
};

}  // namespace brt

#endif  // BRT_SERVER_MODEL_SPIN_BARRIER_H_
