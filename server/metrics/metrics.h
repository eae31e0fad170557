// Metrics: the typed facade through which the server records what operators scrape from /metrics.
//
// The server creates one Metrics over a prometheus::Registry it owns (shared with the exposer, see
// metrics_exposer.h) and passes a Metrics* to the components that record; there is no global
// instance, so a test can build a private registry, drive the facade and read the registry back.
// Every metric follows the Prometheus conventions: prefix `brt_`, base units (seconds, bytes),
// counters end in `_total`, and label values come from closed sets (enums below, the configured RPC
// method names, the 17 gRPC status code names), never from a session id or user input, so the
// number of series is bounded.
//
// Cost: label lookups happen once, in Create(); the per-token and per-step methods touch one
// pre-resolved counter (a lock-free atomic add) or one pre-resolved histogram (a short uncontended
// mutex). See benchmarks/README-metrics.md for measured figures.
//
// Thread safety: all methods are safe to call concurrently from any thread without external
// locking.
#ifndef BRT_SERVER_METRICS_METRICS_H_
#define BRT_SERVER_METRICS_METRICS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/labels.h"
#include "prometheus/registry.h"

namespace brt::metrics {

// Label value sets. Adding a value means adding an enumerator and its name in metrics.cc.
enum class BatchKind { kScoreBlock = 0, kDecode = 1, kSpan = 2 };  // kind="score_block"|"decode"|"span"
enum class StateLocation { kDevice = 0, kHost = 1 };    // label location="device"|"host"
enum class SnapshotOp { kSave = 0, kRestore = 1 };      // label op="save"|"restore"
enum class EvictionReason {
  kIdleTimeout = 0,
  kCapacity = 1
};  // label reason="idle_timeout"|"capacity"

std::string_view BatchKindName(BatchKind kind);
std::string_view StateLocationName(StateLocation location);
std::string_view SnapshotOpName(SnapshotOp op);
std::string_view EvictionReasonName(EvictionReason reason);

// The number of gRPC status codes (OK = 0 ... UNAUTHENTICATED = 16); absl::StatusCode uses the same
// values.
inline constexpr int kNumGrpcCodes = 17;
// Canonical gRPC name of a status code ("OK", "NOT_FOUND", ...); "UNKNOWN" for a value outside
// 0..16.
std::string_view GrpcCodeName(int code);

// Histogram bucket upper bounds, chosen for this workload.
// Latencies of one step or one token: 100 us (a small decode step) to 30 s (a long batched score
// call or a request stuck behind a full queue); roughly 1-2.5-5 per decade so percentiles have ~2x
// resolution.
extern const std::vector<double> kLatencyBuckets;
// Whole RPCs (a Score stream over a book, a 4096-token Generate) and snapshot save/restore: 1 ms to
// 10 min.
extern const std::vector<double> kRequestBuckets;
// Rows per batched model call: 1 .. 64 (the largest --max_decode_batch we run).
extern const std::vector<double> kBatchRowBuckets;

// One line of the metric catalogue (see Metrics::Catalog()).
struct MetricDescriptor {
  std::string name;  // family name as exposed, e.g. "brt_requests_total"
  std::string type;  // "counter" | "gauge" | "histogram" (the Prometheus TYPE)
  std::string help;
  std::vector<std::string> labels;  // label names, in a fixed order
};

struct MetricsOptions {
  // RPC method names (the short gRPC method name) that RecordRequest accepts as the `method` label;
  // any other name is recorded as method="other". Their (method, code="OK") counters and duration
  // histograms are created up front, so they are exported as 0 before the first call (rate() and
  // absent() then work).
  std::vector<std::string> methods = {
      "CreateSession", "GetSession",    "ListSessions", "DeleteSession",  "Score",
      "Generate",      "GetServerInfo", "SaveSession",  "RestoreSession", "ForkSession"};
};

class Metrics {
 public:
  // Registers every brt_ family in `registry`. Fails with INVALID_ARGUMENT if the registry already
  // holds a family of the same name with another type, or the options name a method twice or an
  // empty one.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      std::shared_ptr<prometheus::Registry> registry, MetricsOptions options = {});

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The families this facade defines (brt_ only; see ProcessCollector for process_*), sorted by
  // name.
  static std::vector<MetricDescriptor> Catalog();

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // ---- gRPC handlers
  // ----------------------------------------------------------------------------------- One
  // finished RPC: brt_requests_total{method,code} += 1 and brt_request_duration_seconds{method}.
  // `grpc_code_name` is a canonical name ("OK", "UNAVAILABLE", ...); anything else counts as
  // "UNKNOWN".
  void RecordRequest(std::string_view method, std::string_view grpc_code_name, double seconds);
  // Same, with the numeric code (grpc::StatusCode or absl::StatusCode cast to int).
  void RecordRequest(std::string_view method, int grpc_code, double seconds);

  // One finished call of a named tenant: brt_tenant_requests_total{tenant,code} += 1 (nothing for the
  // unnamed tenant). Tenants come from the keys file or client certificates, so the labels are
  // bounded by the operator's configuration.
  void RecordTenantRequest(std::string_view tenant, int grpc_code);

  // ---- tokens (executor)
  // -------------------------------------------------------------------------------
  void AddScoredTokens(uint64_t n);     // brt_scored_tokens_total
  void AddGeneratedTokens(uint64_t n);  // brt_generated_tokens_total
  // Generate: from the call's admission to its first sampled token, and between consecutive tokens.
  void ObserveTimeToFirstToken(double seconds);   // brt_time_to_first_token_seconds
  void ObserveInterTokenLatency(double seconds);  // brt_inter_token_latency_seconds

  // ---- scheduler
  // -----------------------------------------------------------------------------------------
  void SetQueueDepth(int64_t calls);     // brt_queue_depth (active Score/Generate calls)
  void SetQueueCapacity(int64_t calls);  // brt_queue_capacity (--max_queue; for saturation ratios)
  // From a call's admission to the first model step that includes its tokens.
  void ObserveQueueWait(double seconds);  // brt_queue_wait_seconds

  // ---- executor
  // ------------------------------------------------------------------------------------------ One
  // batched model call: brt_executor_batch_rows{kind} and brt_executor_step_duration_seconds{kind}.
  void ObserveBatch(BatchKind kind, uint32_t rows, double seconds);

  // ---- sessions
  // ------------------------------------------------------------------------------------------
  void SetSessionsResident(int64_t sessions);  // brt_sessions_resident
  void SetSessionsCapacity(int64_t sessions);  // brt_sessions_capacity (--max_sessions)
  void AddSessionsEvicted(EvictionReason reason,
                          uint64_t n = 1);  // brt_sessions_evicted_total{reason}
  // Bytes of session state (model memory) held now: brt_session_state_bytes{location}.
  void SetStateBytes(StateLocation location, uint64_t bytes);

  // ---- persistence
  // --------------------------------------------------------------------------------------- One
  // successful save or restore: brt_snapshot_duration_seconds{op} and brt_snapshot_bytes_total{op}.
  void ObserveSnapshot(SnapshotOp op, double seconds, uint64_t bytes);
  // One failed save or restore; the reason is the status code the persistence layer returned
  // (DATA_LOSS = corrupt, FAILED_PRECONDITION = another model, NOT_FOUND, ...):
  // brt_snapshot_failures_total{op,reason}.
  void AddSnapshotFailure(SnapshotOp op, absl::StatusCode reason);

  // ---- info gauges (value 1; calling again replaces the previous label set)
  // ------------------------------
  void SetModelInfo(std::string_view name, std::string_view fingerprint, std::string_view device,
                    std::string_view dtype);  // brt_model_info{name,fingerprint,device,dtype}
  void SetBuildInfo(std::string_view version, std::string_view git_commit);  // brt_build_info{...}

 private:
  // Counters of one family by status code, for fixed other labels. A slot is filled on first use
  // (or up front for the codes Create() pre-registers); Family::Add returns the same object for the
  // same labels, so two threads racing to fill a slot store the same pointer.
  struct CodeCounters {
    prometheus::Family<prometheus::Counter>* family = nullptr;
    prometheus::Labels labels;  // everything but the code label
    std::string code_label;     // "code" or "reason"
    std::array<std::atomic<prometheus::Counter*>, kNumGrpcCodes> by_code{};
    prometheus::Counter& Get(int code);
  };
  struct MethodSeries {
    prometheus::Histogram* duration = nullptr;
    CodeCounters requests;
  };

  Metrics(std::shared_ptr<prometheus::Registry> registry, const MetricsOptions& options);
  MethodSeries& FindMethod(std::string_view method);

  const std::shared_ptr<prometheus::Registry> registry_;

  std::vector<std::string> method_names_;               // options.methods, then "other"
  std::vector<std::unique_ptr<MethodSeries>> methods_;  // parallel to method_names_

  prometheus::Family<prometheus::Counter>* tenant_requests_ = nullptr;
  absl::Mutex tenants_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<CodeCounters>> tenants_
      ABSL_GUARDED_BY(tenants_mu_);

  prometheus::Counter* scored_tokens_ = nullptr;
  prometheus::Counter* generated_tokens_ = nullptr;
  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* itl_ = nullptr;

  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Gauge* queue_capacity_ = nullptr;
  prometheus::Histogram* queue_wait_ = nullptr;

  std::array<prometheus::Histogram*, 3> batch_rows_{};     // by BatchKind
  std::array<prometheus::Histogram*, 3> step_duration_{};  // by BatchKind

  prometheus::Gauge* sessions_resident_ = nullptr;
  prometheus::Gauge* sessions_capacity_ = nullptr;
  std::array<prometheus::Counter*, 2> sessions_evicted_{};  // by EvictionReason
  std::array<prometheus::Gauge*, 2> state_bytes_{};         // by StateLocation

  std::array<prometheus::Histogram*, 2> snapshot_duration_{};       // by SnapshotOp
  std::array<prometheus::Counter*, 2> snapshot_bytes_{};            // by SnapshotOp
  std::array<std::unique_ptr<CodeCounters>, 2> snapshot_failures_;  // by SnapshotOp

  absl::Mutex info_mu_;
  prometheus::Family<prometheus::Gauge>* model_info_ = nullptr;
  prometheus::Family<prometheus::Gauge>* build_info_ = nullptr;
  prometheus::Gauge* model_info_series_ ABSL_GUARDED_BY(info_mu_) = nullptr;
  prometheus::Gauge* build_info_series_ ABSL_GUARDED_BY(info_mu_) = nullptr;
};

}  // namespace brt::metrics

#endif  // BRT_SERVER_METRICS_METRICS_H_
