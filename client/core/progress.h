// The progress line `brt score` and `brt compare` draw on a terminal: a bar over the bytes scored,
// the token count, tokens per second and an ETA. FormatProgress is pure; ProgressBar draws on
// stderr and only when stderr is a terminal (quiet otherwise), at most every 100 ms. Not
// thread-safe: one thread (the one reading responses) updates it.
#ifndef BRT_CLIENT_CORE_PROGRESS_H_
#define BRT_CLIENT_CORE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace brt::client {

// e.g. "[#########-----------]  45%  12345 tok  1234 tok/s  ETA 0:42". bytes_done <= bytes_total.
std::string FormatProgress(const std::string& label, uint64_t bytes_done, uint64_t bytes_total,
                           uint64_t tokens, double elapsed_s, int bar_width = 24);

// "1:02:03" / "2:03"; "?" when negative or not finite.
std::string FormatDuration(double seconds);

class ProgressBar {
 public:
  // enabled=false, or stderr not a terminal: all calls do nothing.
  ProgressBar(std::string label, uint64_t bytes_total, bool enabled);
  ~ProgressBar();
  void Update(uint64_t bytes_done, uint64_t tokens);
  bool enabled() const { return enabled_; }
  // Erases the line.
  void Finish();

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_PROGRESS_H_
