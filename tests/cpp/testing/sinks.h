// Collecting ScoreSink / GenerateSink for core tests: they record everything and let a test wait
// for OnFinish.
#ifndef BRT_TESTS_CPP_TESTING_SINKS_H_
#define BRT_TESTS_CPP_TESTING_SINKS_H_

#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/core/engine.h"

namespace brt::testing {

class CollectingScoreSink : public ScoreSink {
 public:
  void OnTokens(std::vector<TokenScoreResult> tokens) override {
    absl::MutexLock lock(&mu_);
    for (auto& t : tokens) tokens_.push_back(std::move(t));
  }
  void OnInputReady() override { ready_count_++; }
  void OnFinish(absl::StatusOr<ScoreSummaryResult> summary) override {
    {
      absl::MutexLock lock(&mu_);
      summary_ = std::move(summary);
    }
    done_.Notify();
  }
  // Waits for OnFinish (up to 30 s).
  absl::StatusOr<ScoreSummaryResult> Wait() {
    if (!done_.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      return absl::DeadlineExceededError("test sink: no OnFinish within 30 s");
    }
    absl::MutexLock lock(&mu_);
    return *summary_;
  }
  std::vector<TokenScoreResult> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  std::atomic<int> ready_count_{0};

 private:
  absl::Mutex mu_;
  std::vector<TokenScoreResult> tokens_;
  std::optional<absl::StatusOr<ScoreSummaryResult>> summary_;
  absl::Notification done_;
};

class CollectingGenerateSink : public GenerateSink {
 public:
  void OnToken(GeneratedToken token) override {
    absl::MutexLock lock(&mu_);
    tokens_.push_back(std::move(token));
  }
  void OnFinish(absl::StatusOr<GenerateSummary> summary) override {
    {
      absl::MutexLock lock(&mu_);
      summary_ = std::move(summary);
    }
    done_.Notify();
  }
  absl::StatusOr<GenerateSummary> Wait() {
    if (!done_.WaitForNotificationWithTimeout(absl::Seconds(30))) {
      return absl::DeadlineExceededError("test sink: no OnFinish within 30 s");
    }
    absl::MutexLock lock(&mu_);
    return *summary_;
  }
  std::vector<GeneratedToken> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  std::vector<int32_t> ids() {
    std::vector<int32_t> out;
    for (const auto& t : tokens()) out.push_back(t.token_id);
    return out;
  }
  std::string text() {
    std::string out;
    for (const auto& t : tokens()) out += t.text;
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<GeneratedToken> tokens_;
  std::optional<absl::StatusOr<GenerateSummary>> summary_;
  absl::Notification done_;
};

}  // namespace brt::testing

#endif  // BRT_TESTS_CPP_TESTING_SINKS_H_
