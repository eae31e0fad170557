// Start-up pieces of brt-server that need no flags: where the model is, opening the snapshot store, the
// snapshot signing key, a replica id, the metrics registry and its exposer, and the thread that re-reads
// API keys on SIGHUP. server/main.cc reads the flags and wires these together; each piece returns an
// absl::Status whose message names the flag at fault, and main prints it once.
//
// Thread safety: free functions with no shared state; StartKeyReloader's thread touches only the
// authenticator it is given (whose Reload() is thread-safe).
#ifndef BRT_SERVER_STARTUP_H_
#define BRT_SERVER_STARTUP_H_

#include <signal.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/model/backend.h"
#include "server/persistence/snapshot_store.h"

namespace brt::startup {

// The directory of the running executable ("." when /proc/self/exe cannot be read).
std::string ExecutableDir();

// model/artifacts when run from the repository root, else the artifacts beside the build tree.
std::string DefaultModelDir();

// Opens --snapshot_store's URI. "file://relative/dir" is taken relative to the current directory
// (CreateSnapshotStore itself wants file:///absolute).
absl::StatusOr<std::unique_ptr<persistence::SnapshotStore>> OpenSnapshotStore(const std::string& uri);

// Reads --snapshot_hmac_key_file: the file's bytes without trailing newlines; at least 16 bytes.
absl::StatusOr<std::string> ReadHmacKey(const std::string& path);

// "<host>-<pid>-<8 random hex digits>": a replica id unique enough for session leases.
std::string DefaultReplicaId();

// The metrics registry (labelled with the model and the build) and its /metrics exposer on `address`,
// with the process collector when /proc allows it.
struct MetricsSetup {
  std::unique_ptr<metrics::Metrics> metrics;
  std::unique_ptr<metrics::MetricsExposer> exposer;
};
absl::StatusOr<MetricsSetup> StartMetrics(const std::string& address, const ModelMetadata& meta,
                                          const std::string& version, const std::string& commit);

// A detached thread that waits for the signals in `hangup` (blocked in every thread by the caller) and
// re-reads the API keys each time, logging how many were loaded or why the old ones were kept.
// `hangup` and `auth` must outlive the process's serving life.
void StartKeyReloader(const sigset_t* hangup, auth::Authenticator* auth);

}  // namespace brt::startup

#endif  // BRT_SERVER_STARTUP_H_
