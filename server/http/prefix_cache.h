// PrefixCache: recent prompt prefixes the HTTP edge has read, each with the session checkpoint taken
// at its end (a block boundary) and, when the prompt was echoed, the scores of its tokens. A request
// whose prompt starts with a cached prefix starts its temporary session from that checkpoint and
// reads only the rest; the cached scores stand in for the prefix's own (they are the same numbers: a
// session that reads the prompt from the start computes exactly these). This is what makes
// lm-evaluation-harness's many continuations of one long context cheap.
//
// Bounded by bytes (--http_prefix_cache_bytes), least recently used first out.
//
// Thread safety: thread-safe (one mutex); entries are immutable and shared.
#ifndef BRT_SERVER_HTTP_PREFIX_CACHE_H_
#define BRT_SERVER_HTTP_PREFIX_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/core/checkpoint_log.h"
#include "server/http/completion_runner.h"

namespace brt {
namespace http {

struct PrefixEntry {
  std::string tenant;  // Tenant::name of the request that read it: only that tenant reuses it
  std::vector<int32_t> tokens;  // BOS, then a prompt's tokens
  // Checkpoints of a session that read `tokens`, at positions <= tokens.size(), oldest first.
  std::vector<std::shared_ptr<const Checkpoint>> checkpoints;
  // Scores of tokens[1..] (offsets unused) with `top_k` alternatives each, or none (has_scores false).
  bool has_scores = false;
  int32_t top_k = 0;
  std::vector<TokenLogprob> scores;
  uint64_t bytes() const;
};

struct PrefixCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t reused_tokens = 0;
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

class PrefixCache {
 public:
  explicit PrefixCache(uint64_t max_bytes) : max_bytes_(max_bytes) {}
  bool enabled() const { return max_bytes_ > 0; }

  // Among `tenant`'s entries (tenants never share prefixes: a hit would tell one tenant what another
  // sent), the entry and checkpoint that reach furthest into `full` (BOS first): the checkpoint's position is
  // within the tokens `full` shares with the entry; the entry has scores with at least top_k
  // alternatives when need_scores. {null, null} when none.
  struct Hit {
    std::shared_ptr<const PrefixEntry> entry;
    std::shared_ptr<const Checkpoint> checkpoint;
  };
  Hit Lookup(const std::string& tenant, const std::vector<int32_t>& full, bool need_scores,
             int32_t top_k);
  // Adds an entry (unless it is larger than the whole cache), dropping the least recently used ones.
  void Insert(std::shared_ptr<const PrefixEntry> entry);
  PrefixCacheStats stats() const;

 private:
  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  std::list<std::shared_ptr<const PrefixEntry>> entries_ ABSL_GUARDED_BY(mu_);  // most recent first
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  PrefixCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_PREFIX_CACHE_H_
