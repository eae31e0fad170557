#include "server/metrics/metrics_exposer.h"

#include <exception>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace brt::metrics {
namespace {

// Accepts "host:port" and "[v6]:port"; a bare port would make civetweb listen on every interface.
absl::Status ValidateAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  const bool ok =
      colon != std::string_view::npos && colon > 0 &&
      absl::SimpleAtoi(absl::string_view(address.data() + colon + 1, address.size() - colon - 1),
                       &port) &&
      port >= 0 && port <= 65535;
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", std::string(address), "\" must be HOST:PORT (e.g. ",
        kDefaultMetricsAddress,
        ", 0.0.0.0:9464 for every interface, [::1]:9464), or empty to turn /metrics off"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    std::string_view address, std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
    int num_threads) {
  if (address.empty()) return std::unique_ptr<MetricsExposer>();
  if (absl::Status s = ValidateAddress(address); !s.ok()) return s;
  if (num_threads < 1) return absl::InvalidArgumentError("metrics exposer needs num_threads >= 1");
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(std::string(address),
                                                    static_cast<size_t>(num_threads));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", std::string(address),
                                               ": ", e.what(),
                                               " (port in use? set --metrics_address, or empty to "
                                               "turn metrics off)"));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", std::string(address),
                                               ": no listening port after start"));
  }
  for (const auto& c : collectables) exposer->RegisterCollectable(c);
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(std::move(exposer), std::move(collectables), ports.front()));
}

MetricsExposer::MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer,
                               std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
                               int port)
    : collectables_(std::move(collectables)), exposer_(std::move(exposer)), port_(port) {}

MetricsExposer::~MetricsExposer() = default;

std::string RenderText(const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& c : collectables) {
    std::vector<prometheus::MetricFamily> f = c->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()),
                    std::make_move_iterator(f.end()));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace brt::metrics
