// Engine internals shared by its translation units (engine.cc: sessions and calls; executor.cc: the
// model loop; engine_snapshots.cc: persistence; housekeeper.cc: TTL, budget, autosave). Not part of
// the core's API: include only from those files and tests of them.
//
// Thread safety: every field of Job is guarded by Engine::mu_ except where noted.
#ifndef BRT_SERVER_CORE_ENGINE_INTERNAL_H_
#define BRT_SERVER_CORE_ENGINE_INTERNAL_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/call_types.h"
#include "server/core/sampler.h"
#include "server/core/session_table.h"
#include "server/core/text_stream.h"
#include "server/tokenizer/incremental_tokenizer.h"

namespace brt {

enum class JobKind { kScore, kGenerate };

// An active Score or Generate call.
struct Job {
  JobKind kind = JobKind::kScore;
  std::shared_ptr<SessionState> session;
  absl::Time deadline = absl::InfiniteFuture();
  bool cancel_requested = false;
  bool engine_cancelled = false;  // session deleted or server stopping
  absl::Status fail_status;       // set by the caller side to end the call with an error
  bool finished = false;
  absl::Status final_status;
  // Metrics only (set when EngineOptions::metrics is on): admission time, whether a model step has
  // included the call yet (queue wait), and the time of the last sampled token (inter-token latency).
  absl::Time admitted;
  bool started = false;
  absl::Time last_token;

  // Score.
  ScoreSink* score_sink = nullptr;
  int32_t top_k = 0;
  bool omit_tokens = false;
  std::optional<IncrementalTokenizer> inc;  // caller thread only (Append/CloseInput)
  bool input_closed = false;
  bool input_paused = false;
  // When the client's silence ends the call (EngineOptions::idle_call_timeout_ms); moved on by every
  // chunk and whenever input resumes after a pause.
  absl::Time idle_deadline = absl::InfiniteFuture();
  bool idle_expired = false;  // the input was closed by the idle timeout
  uint64_t bytes = 0;
  bool token_input = false;       // AppendTokens was used (caller thread only)
  uint64_t token_input_bytes = 0;  // bytes of the pieces given as ids so far (caller thread only)
  uint64_t tokens_given = 0;       // ids accepted by AppendTokens
  uint64_t tokens = 0;
  double total_nll = 0;

  // Generate.
  GenerateSink* gen_sink = nullptr;
  std::optional<Sampler> sampler;
  std::optional<TextStream> text;
  uint32_t max_tokens = 0;
  uint32_t generated = 0;
  uint32_t prompt_tokens = 0;
  uint32_t top_logprobs = 0;
  FinishReason finishing = FinishReason::kUnspecified;
  // The next token, drawn ahead by DrawTokensLocked (with other sessions' draws, in parallel); -1 when
  // none is waiting.
  int32_t drawn = -1;
};

namespace metrics {
class Metrics;
enum class SnapshotOp;
}  // namespace metrics

// One snapshot save or restore that started at t0: its duration and size when `status` is OK, else a
// failure by status code. No-op without metrics. (engine_snapshots.cc)
void RecordSnapshot(metrics::Metrics* m, metrics::SnapshotOp op,
                    std::chrono::steady_clock::time_point t0, const absl::Status& status,
                    uint64_t bytes);

inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace brt

#endif  // BRT_SERVER_CORE_ENGINE_INTERNAL_H_
