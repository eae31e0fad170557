#include "server/startup.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "brt/v1/brt.pb.h"
#include "server/metrics/process_collector.h"

namespace brt::startup {

std::string ExecutableDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string DefaultModelDir() {
  if (std::ifstream("model/artifacts/brt.pt").good()) return "model/artifacts";
  return ExecutableDir() + "/../../model/artifacts";
}

absl::StatusOr<std::unique_ptr<persistence::SnapshotStore>> OpenSnapshotStore(const std::string& uri) {
  if (absl::StartsWith(uri, "file://") && !absl::StartsWith(uri, "file:///")) {
    return persistence::CreateSnapshotStore(uri.substr(7));
  }
  return persistence::CreateSnapshotStore(uri);
}

absl::StatusOr<std::string> ReadHmacKey(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  if (!in.good() && !in.eof()) {
    return absl::NotFoundError(absl::StrCat("cannot read --snapshot_hmac_key_file ", path));
  }
  if (key.size() < 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--snapshot_hmac_key_file ", path, " holds ", key.size(), " bytes; use >= 16 (32 random)"));
  }
  return key;
}

std::string DefaultReplicaId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::random_device rd;
  return absl::StrCat(host, "-", getpid(), "-", absl::Hex(rd(), absl::kZeroPad8));
}

absl::StatusOr<MetricsSetup> StartMetrics(const std::string& address, const ModelMetadata& meta,
                                          const std::string& version, const std::string& commit) {
  auto registry = std::make_shared<prometheus::Registry>();
  // The method label's closed set: every method of brt.v1.Brt, from the compiled-in descriptor.
  metrics::MetricsOptions options;
  options.methods.clear();
  const google::protobuf::ServiceDescriptor* api =
      brt::v1::ServerInfo::descriptor()->file()->FindServiceByName("Brt");
  for (int i = 0; api != nullptr && i < api->method_count(); ++i) {
    options.methods.push_back(api->method(i)->name());
  }
  MetricsSetup setup;
  auto created = metrics::Metrics::Create(registry, std::move(options));
  if (!created.ok()) return created.status();
  setup.metrics = *std::move(created);
  setup.metrics->SetModelInfo(meta.name, meta.fingerprint, meta.device, meta.dtype);
  setup.metrics->SetBuildInfo(version, commit);
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables = {registry};
  auto process = metrics::ProcessCollector::Create();
  if (process.ok()) {
    collectables.push_back(*std::move(process));
  } else {
    std::fprintf(stderr, "brt-server: no process metrics: %s\n", process.status().ToString().c_str());
  }
  auto started = metrics::MetricsExposer::Start(address, std::move(collectables));
  if (!started.ok()) return started.status();
  setup.exposer = *std::move(started);
  return setup;
}

void StartKeyReloader(const sigset_t* hangup, auth::Authenticator* auth) {
  std::thread([hangup, auth] {
    while (true) {
      int sig = 0;
      if (sigwait(hangup, &sig) != 0) return;
      auto reloaded = auth->Reload();
      if (reloaded.ok()) {
        std::fprintf(stderr, "brt-server: SIGHUP: %zu API keys loaded\n", *reloaded);
      } else {
        std::fprintf(stderr, "brt-server: SIGHUP: keeping the previous API keys: %s\n",
                     reloaded.status().ToString().c_str());
      }
      std::fflush(stderr);
    }
  }).detach();
}

}  // namespace brt::startup
