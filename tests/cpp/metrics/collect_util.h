// Test helpers: read values back from a registry's Collect(), by family name and labels.
// Thread safety: plain functions over a snapshot; safe wherever Collect() is.
#ifndef BRT_TESTS_CPP_METRICS_COLLECT_UTIL_H_
#define BRT_TESTS_CPP_METRICS_COLLECT_UTIL_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "prometheus/client_metric.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace brt::metrics::testing {

using LabelMap = std::map<std::string, std::string>;

inline const prometheus::MetricFamily* FindFamily(const std::vector<prometheus::MetricFamily>& fams,
                                                  const std::string& name) {
  for (const auto& f : fams) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The series of `name` whose labels are exactly `labels`; nullopt if absent.
inline std::optional<prometheus::ClientMetric> FindSeries(const prometheus::Collectable& c,
                                                          const std::string& name,
                                                          const LabelMap& labels = {}) {
  const std::vector<prometheus::MetricFamily> fams = c.Collect();
  const prometheus::MetricFamily* f = FindFamily(fams, name);
  if (f == nullptr) return std::nullopt;
  for (const auto& m : f->metric) {
    LabelMap got;
    for (const auto& l : m.label) got[l.name] = l.value;
    if (got == labels) return m;
  }
  return std::nullopt;
}

// Number of series in family `name` (0 if the family is absent).
inline size_t SeriesCount(const prometheus::Collectable& c, const std::string& name) {
  const std::vector<prometheus::MetricFamily> fams = c.Collect();
  const prometheus::MetricFamily* f = FindFamily(fams, name);
  return f == nullptr ? 0 : f->metric.size();
}

}  // namespace brt::metrics::testing

#endif  // BRT_TESTS_CPP_METRICS_COLLECT_UTIL_H_
