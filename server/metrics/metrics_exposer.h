// MetricsExposer: serves the Prometheus text exposition at GET /metrics over HTTP on its own small
// thread pool (prometheus-cpp's civetweb Exposer), separate from the gRPC port.
//
// The server starts one from its --metrics_address flag (default kDefaultMetricsAddress, loopback
// only: exposing metrics beyond the host is an explicit choice, e.g. "0.0.0.0:9464"; an empty value
// turns the endpoint off). The exposer shares ownership of the collectables it serves (the registry
// behind Metrics and the ProcessCollector), so they outlive every scrape; each scrape calls their
// Collect().
//
// Thread safety: Start() and the destructor must not race with each other; port() is safe from any
// thread. Scrapes run on the exposer's threads concurrently with the server's writes to the
// metrics.
#ifndef BRT_SERVER_METRICS_METRICS_EXPOSER_H_
#define BRT_SERVER_METRICS_METRICS_EXPOSER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace prometheus {
class Exposer;
}

namespace brt::metrics {

inline constexpr char kDefaultMetricsAddress[] = "127.0.0.1:9464";

class MetricsExposer {
 public:
  // Listens on `address` ("host:port", "[v6]:port"; port 0 picks a free one, see port()) and serves
  // the given collectables at /metrics. An empty address means metrics are off: returns nullptr,
  // OK. INVALID_ARGUMENT for an address without host or port; UNAVAILABLE if it cannot listen (port
  // in use).
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      std::string_view address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
      int num_threads = 2);

  // Stops listening and joins the HTTP threads. After a scrape has been served this takes about 2 s
  // (civetweb 1.15's shutdown), so the server should destroy it early in its shutdown, in parallel
  // with draining gRPC calls where possible.
  ~MetricsExposer();
  MetricsExposer(const MetricsExposer&) = delete;
  MetricsExposer& operator=(const MetricsExposer&) = delete;

  // The port actually bound (the one asked for, or the one the kernel picked for port 0).
  int port() const { return port_; }

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer,
                 std::vector<std::shared_ptr<prometheus::Collectable>> collectables, int port);

  std::vector<std::shared_ptr<prometheus::Collectable>>
      collectables_;  // the exposer holds weak_ptrs
  std::unique_ptr<prometheus::Exposer> exposer_;
  const int port_;
};

// The text exposition (format 0.0.4) of the collectables, as /metrics serves it; for tests and
// tools.
std::string RenderText(const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables);

}  // namespace brt::metrics

#endif  // BRT_SERVER_METRICS_METRICS_EXPOSER_H_
