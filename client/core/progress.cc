#include "client/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace brt::client {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string FormatProgress(const std::string& label, uint64_t bytes_done, uint64_t bytes_total,
                           uint64_t tokens, double elapsed_s, int bar_width) {
  const double frac =
      bytes_total == 0 ? 1.0 : std::min(1.0, static_cast<double>(bytes_done) / bytes_total);
  const int filled = static_cast<int>(frac * bar_width);
  const double rate = elapsed_s > 0 ? tokens / elapsed_s : 0;
  // Too early an estimate swings wildly: none before 1% or 1 s.
  const double eta = frac >= 0.01 && elapsed_s >= 1.0 ? elapsed_s * (1 - frac) / frac : -1;
  return absl::StrFormat("%s[%s%s] %3d%%  %d tok  %.0f tok/s  ETA %s",
                         label.empty() ? "" : label + " ", std::string(filled, '#'),
                         std::string(bar_width - filled, '-'), static_cast<int>(frac * 100), tokens,
                         rate, FormatDuration(eta));
}

ProgressBar::ProgressBar(std::string label, uint64_t bytes_total, bool enabled)
    : label_(std::move(label)),
      total_(bytes_total),
      enabled_(enabled && isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(uint64_t bytes_done, uint64_t tokens) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "\r\033[K%s",
               FormatProgress(label_, bytes_done, total_, tokens, elapsed).c_str());
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace brt::client
