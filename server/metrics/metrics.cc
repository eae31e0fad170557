#include "server/metrics/metrics.h"

#include <algorithm>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"

namespace brt::metrics {
namespace {

constexpr std::array<std::string_view, kNumGrpcCodes> kGrpcCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
constexpr int kUnknownCode = 2;

// Snapshot failure reasons registered at 0 up front, so that an alert on increase() sees the first
// failure (a series born at 1 has no earlier sample to increase from). Other codes appear on first
// use.
constexpr std::array<absl::StatusCode, 6> kExpectedSnapshotFailures = {
    absl::StatusCode::kInternal,           absl::StatusCode::kDataLoss,
    absl::StatusCode::kFailedPrecondition, absl::StatusCode::kNotFound,
    absl::StatusCode::kResourceExhausted,  absl::StatusCode::kUnavailable,
};

// The catalogue. Create() registers families only through Def(), so every exported brt_ family is
// here.
struct Definition {
  std::string_view name;
  std::string_view type;
  std::string_view help;
  std::initializer_list<std::string_view> labels;
};

const Definition kDefinitions[] = {
    {"brt_requests_total",
     "counter",
     "Finished RPCs by method and gRPC status code.",
     {"method", "code"}},
    {"brt_tenant_requests_total",
     "counter",
     "Finished gRPC calls by tenant (API key or client certificate) and status code; calls "
     "without a tenant (single-tenant mode) are not counted here.",
     {"tenant", "code"}},
    {"brt_request_duration_seconds",
     "histogram",
     "Wall time of finished RPCs (whole stream for Score and Generate), by method.",
     {"method"}},
    {"brt_scored_tokens_total", "counter", "Tokens consumed by the model for Score calls.", {}},
    {"brt_generated_tokens_total", "counter", "Tokens sampled for Generate calls.", {}},
    {"brt_time_to_first_token_seconds",
     "histogram",
     "Generate: time from admission of the call to its first sampled token.",
     {}},
    {"brt_inter_token_latency_seconds",
     "histogram",
     "Generate: time between consecutive sampled tokens of one call.",
     {}},
    {"brt_queue_depth", "gauge", "Active Score and Generate calls held by the scheduler.", {}},
    {"brt_queue_capacity",
     "gauge",
     "Maximum active calls (--max_queue); further calls fail with UNAVAILABLE.",
     {}},
    {"brt_queue_wait_seconds",
     "histogram",
     "Time from admission of a call to the first model step that includes it.",
     {}},
    {"brt_executor_batch_rows",
     "histogram",
     "Rows (sessions) per batched model call, by kind.",
     {"kind"}},
    {"brt_executor_step_duration_seconds",
     "histogram",
     "Wall time of one batched model call, by kind.",
     {"kind"}},
    {"brt_sessions_resident", "gauge", "Sessions held by the server.", {}},
    {"brt_sessions_capacity", "gauge", "Maximum sessions held at once (--max_sessions).", {}},
    {"brt_sessions_evicted_total",
     "counter",
     "Sessions removed by the server, by reason.",
     {"reason"}},
    {"brt_session_state_bytes",
     "gauge",
     "Bytes of session state (model memory) held, by location.",
     {"location"}},
    {"brt_snapshot_duration_seconds",
     "histogram",
     "Wall time of successful snapshot saves and restores, by op.",
     {"op"}},
    {"brt_snapshot_bytes_total",
     "counter",
     "Bytes written by snapshot saves and read by restores.",
     {"op"}},
    {"brt_snapshot_failures_total",
     "counter",
     "Failed snapshot saves and restores, by op and status code.",
     {"op", "reason"}},
    {"brt_model_info",
     "gauge",
     "The loaded model; the value is always 1.",
     {"name", "fingerprint", "device", "dtype"}},
    {"brt_build_info",
     "gauge",
     "The server build; the value is always 1.",
     {"version", "git_commit"}},
};

const Definition& Def(std::string_view name, std::string_view type) {
  for (const Definition& d : kDefinitions) {
    if (d.name == name && d.type == type) return d;
  }
  // A programming error in this file, caught by any test that constructs Metrics.
  throw std::logic_error(absl::StrCat("metric ", std::string(name), " of type ", std::string(type),
                                      " is not in the catalogue"));
}

template <typename T, typename BuildFn>
prometheus::Family<T>& Register(prometheus::Registry& registry, std::string_view name,
                                std::string_view type, BuildFn build) {
  const Definition& d = Def(name, type);
  return build().Name(std::string(d.name)).Help(std::string(d.help)).Register(registry);
}

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& r,
                                                       std::string_view n) {
  return Register<prometheus::Counter>(r, n, "counter", prometheus::BuildCounter);
}
prometheus::Family<prometheus::Gauge>& GaugeFamily(prometheus::Registry& r, std::string_view n) {
  return Register<prometheus::Gauge>(r, n, "gauge", prometheus::BuildGauge);
}
prometheus::Family<prometheus::Histogram>& HistogramFamily(prometheus::Registry& r,
                                                           std::string_view n) {
  return Register<prometheus::Histogram>(r, n, "histogram", prometheus::BuildHistogram);
}

int CodeFromName(std::string_view name) {
  for (int i = 0; i < kNumGrpcCodes; ++i) {
    if (kGrpcCodeNames[i] == name) return i;
  }
  return kUnknownCode;
}

int ClampCode(int code) { return code >= 0 && code < kNumGrpcCodes ? code : kUnknownCode; }

template <typename E>
size_t Index(E e) {
  return static_cast<size_t>(e);
}

}  // namespace

const std::vector<double> kLatencyBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10,    30};
const std::vector<double> kRequestBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
const std::vector<double> kBatchRowBuckets = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};

std::string_view BatchKindName(BatchKind kind) {
  switch (kind) {
    case BatchKind::kScoreBlock: return "score_block";
    case BatchKind::kDecode: return "decode";
    case BatchKind::kSpan: return "span";
  }
  return "unknown";
}
std::string_view StateLocationName(StateLocation location) {
  return location == StateLocation::kDevice ? "device" : "host";
}
std::string_view SnapshotOpName(SnapshotOp op) {
  return op == SnapshotOp::kSave ? "save" : "restore";
}
std::string_view EvictionReasonName(EvictionReason reason) {
  return reason == EvictionReason::kIdleTimeout ? "idle_timeout" : "capacity";
}
std::string_view GrpcCodeName(int code) { return kGrpcCodeNames[ClampCode(code)]; }

prometheus::Counter& Metrics::CodeCounters::Get(int code) {
  code = ClampCode(code);
  prometheus::Counter* c = by_code[code].load(std::memory_order_acquire);
  if (c == nullptr) {
    prometheus::Labels labels_with_code = labels;
    labels_with_code[code_label] = std::string(kGrpcCodeNames[code]);
    c = &family->Add(labels_with_code);
    by_code[code].store(c, std::memory_order_release);
  }
  return *c;
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    std::shared_ptr<prometheus::Registry> registry, MetricsOptions options) {
  if (registry == nullptr) return absl::InvalidArgumentError("Metrics::Create: registry is null");
  std::vector<std::string> sorted = options.methods;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i].empty() || sorted[i] == "other" || (i > 0 && sorted[i] == sorted[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Metrics::Create: method names must be non-empty, unique and not \"other\"; got \"",
          sorted[i], "\""));
    }
  }
  try {
    return std::unique_ptr<Metrics>(new Metrics(std::move(registry), options));
  } catch (const std::exception& e) {
    // prometheus-cpp throws std::invalid_argument for a name already registered with another type.
    return absl::InvalidArgumentError(
        absl::StrCat("Metrics::Create: cannot register the brt_ metrics: ", e.what()));
  }
}

Metrics::Metrics(std::shared_ptr<prometheus::Registry> registry, const MetricsOptions& options)
    : registry_(std::move(registry)) {
  prometheus::Registry& r = *registry_;

  auto& requests = CounterFamily(r, "brt_requests_total");
  tenant_requests_ = &CounterFamily(r, "brt_tenant_requests_total");
  auto& request_duration = HistogramFamily(r, "brt_request_duration_seconds");
  method_names_ = options.methods;
  method_names_.push_back("other");
  for (const std::string& name : method_names_) {
    auto series = std::make_unique<MethodSeries>();
    series->duration = &request_duration.Add({{"method", name}}, kRequestBuckets);
    series->requests.family = &requests;
    series->requests.labels = {{"method", name}};
    series->requests.code_label = "code";
    if (name != "other") series->requests.Get(0);  // method="...",code="OK" exported as 0
    methods_.push_back(std::move(series));
  }

  scored_tokens_ = &CounterFamily(r, "brt_scored_tokens_total").Add({});
  generated_tokens_ = &CounterFamily(r, "brt_generated_tokens_total").Add({});
  ttft_ = &HistogramFamily(r, "brt_time_to_first_token_seconds").Add({}, kLatencyBuckets);
  itl_ = &HistogramFamily(r, "brt_inter_token_latency_seconds").Add({}, kLatencyBuckets);

  queue_depth_ = &GaugeFamily(r, "brt_queue_depth").Add({});
  queue_capacity_ = &GaugeFamily(r, "brt_queue_capacity").Add({});
  queue_wait_ = &HistogramFamily(r, "brt_queue_wait_seconds").Add({}, kLatencyBuckets);

  auto& batch_rows = HistogramFamily(r, "brt_executor_batch_rows");
  auto& step_duration = HistogramFamily(r, "brt_executor_step_duration_seconds");
  for (BatchKind kind : {BatchKind::kScoreBlock, BatchKind::kDecode, BatchKind::kSpan}) {
    const prometheus::Labels labels = {{"kind", std::string(BatchKindName(kind))}};
    batch_rows_[Index(kind)] = &batch_rows.Add(labels, kBatchRowBuckets);
    step_duration_[Index(kind)] = &step_duration.Add(labels, kLatencyBuckets);
  }

  sessions_resident_ = &GaugeFamily(r, "brt_sessions_resident").Add({});
  sessions_capacity_ = &GaugeFamily(r, "brt_sessions_capacity").Add({});
  auto& evicted = CounterFamily(r, "brt_sessions_evicted_total");
  for (EvictionReason reason : {EvictionReason::kIdleTimeout, EvictionReason::kCapacity}) {
    sessions_evicted_[Index(reason)] =
        &evicted.Add({{"reason", std::string(EvictionReasonName(reason))}});
  }
  auto& state_bytes = GaugeFamily(r, "brt_session_state_bytes");
  for (StateLocation location : {StateLocation::kDevice, StateLocation::kHost}) {
    state_bytes_[Index(location)] =
        &state_bytes.Add({{"location", std::string(StateLocationName(location))}});
  }

  auto& snapshot_duration = HistogramFamily(r, "brt_snapshot_duration_seconds");
  auto& snapshot_bytes = CounterFamily(r, "brt_snapshot_bytes_total");
  auto& snapshot_failures = CounterFamily(r, "brt_snapshot_failures_total");
  for (SnapshotOp op : {SnapshotOp::kSave, SnapshotOp::kRestore}) {
    const prometheus::Labels labels = {{"op", std::string(SnapshotOpName(op))}};
    snapshot_duration_[Index(op)] = &snapshot_duration.Add(labels, kRequestBuckets);
    snapshot_bytes_[Index(op)] = &snapshot_bytes.Add(labels);
    auto failures = std::make_unique<CodeCounters>();
    failures->family = &snapshot_failures;
    failures->labels = labels;
    failures->code_label = "reason";
    for (absl::StatusCode code : kExpectedSnapshotFailures) failures->Get(static_cast<int>(code));
    snapshot_failures_[Index(op)] = std::move(failures);
  }

  model_info_ = &GaugeFamily(r, "brt_model_info");
  build_info_ = &GaugeFamily(r, "brt_build_info");
}

std::vector<MetricDescriptor> Metrics::Catalog() {
  std::vector<MetricDescriptor> out;
  for (const Definition& d : kDefinitions) {
    MetricDescriptor m{std::string(d.name), std::string(d.type), std::string(d.help), {}};
    for (std::string_view label : d.labels) m.labels.emplace_back(label);
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(),
            [](const MetricDescriptor& a, const MetricDescriptor& b) { return a.name < b.name; });
  return out;
}

Metrics::MethodSeries& Metrics::FindMethod(std::string_view method) {
  // A linear scan over ~10 short names is cheaper than hashing and runs once per RPC.
  for (size_t i = 0; i + 1 < method_names_.size(); ++i) {
    if (method_names_[i] == method) return *methods_[i];
  }
  return *methods_.back();  // "other"
}

void Metrics::RecordRequest(std::string_view method, std::string_view grpc_code_name,
                            double seconds) {
  RecordRequest(method, CodeFromName(grpc_code_name), seconds);
}

void Metrics::RecordRequest(std::string_view method, int grpc_code, double seconds) {
  MethodSeries& series = FindMethod(method);
  series.requests.Get(grpc_code).Increment();
  series.duration->Observe(seconds);
}

void Metrics::RecordTenantRequest(std::string_view tenant, int grpc_code) {
  if (tenant.empty()) return;
  CodeCounters* counters = nullptr;
  {
    absl::MutexLock lock(&tenants_mu_);
    auto& slot = tenants_[std::string(tenant)];
    if (slot == nullptr) {
      slot = std::make_unique<CodeCounters>();
      slot->family = tenant_requests_;
      slot->labels = {{"tenant", std::string(tenant)}};
      slot->code_label = "code";
    }
    counters = slot.get();
  }
  counters->Get(grpc_code).Increment();
}

void Metrics::AddScoredTokens(uint64_t n) { scored_tokens_->Increment(static_cast<double>(n)); }
void Metrics::AddGeneratedTokens(uint64_t n) {
  generated_tokens_->Increment(static_cast<double>(n));
}
void Metrics::ObserveTimeToFirstToken(double seconds) { ttft_->Observe(seconds); }
void Metrics::ObserveInterTokenLatency(double seconds) { itl_->Observe(seconds); }

void Metrics::SetQueueDepth(int64_t calls) { queue_depth_->Set(static_cast<double>(calls)); }
void Metrics::SetQueueCapacity(int64_t calls) { queue_capacity_->Set(static_cast<double>(calls)); }
void Metrics::ObserveQueueWait(double seconds) { queue_wait_->Observe(seconds); }

void Metrics::ObserveBatch(BatchKind kind, uint32_t rows, double seconds) {
  batch_rows_[Index(kind)]->Observe(static_cast<double>(rows));
  step_duration_[Index(kind)]->Observe(seconds);
}

void Metrics::SetSessionsResident(int64_t sessions) {
  sessions_resident_->Set(static_cast<double>(sessions));
}
void Metrics::SetSessionsCapacity(int64_t sessions) {
  sessions_capacity_->Set(static_cast<double>(sessions));
}
void Metrics::AddSessionsEvicted(EvictionReason reason, uint64_t n) {
  sessions_evicted_[Index(reason)]->Increment(static_cast<double>(n));
}
void Metrics::SetStateBytes(StateLocation location, uint64_t bytes) {
  state_bytes_[Index(location)]->Set(static_cast<double>(bytes));
}

void Metrics::ObserveSnapshot(SnapshotOp op, double seconds, uint64_t bytes) {
  snapshot_duration_[Index(op)]->Observe(seconds);
  snapshot_bytes_[Index(op)]->Increment(static_cast<double>(bytes));
}
void Metrics::AddSnapshotFailure(SnapshotOp op, absl::StatusCode reason) {
  snapshot_failures_[Index(op)]->Get(static_cast<int>(reason)).Increment();
}

void Metrics::SetModelInfo(std::string_view name, std::string_view fingerprint,
                           std::string_view device, std::string_view dtype) {
  absl::MutexLock lock(&info_mu_);
  if (model_info_series_ != nullptr) model_info_->Remove(model_info_series_);
  model_info_series_ = &model_info_->Add({{"name", std::string(name)},
                                          {"fingerprint", std::string(fingerprint)},
                                          {"device", std::string(device)},
                                          {"dtype", std::string(dtype)}});
  model_info_series_->Set(1);
}

void Metrics::SetBuildInfo(std::string_view version, std::string_view git_commit) {
  absl::MutexLock lock(&info_mu_);
  if (build_info_series_ != nullptr) build_info_->Remove(build_info_series_);
  build_info_series_ = &build_info_->Add(
      {{"version", std::string(version)}, {"git_commit", std::string(git_commit)}});
  build_info_series_->Set(1);
}

}  // namespace brt::metrics
