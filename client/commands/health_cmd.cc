// brt health: is the server SERVING (grpc.health.v1), and what does it run (brt.v1 GetServerInfo).
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/commands/proto_json.h"
#include "client/rpc/connection.h"
#include "client/rpc/scorer.h"

namespace brt::client {

int RunHealth(const Args& args) {
  ConnectionOptions conn_options;
  bool json = false;
  ArgParser parser("brt health", "[options]",
                   "Checks the server's gRPC health status (grpc.health.v1) and prints its model,\n"
                   "limits and executor statistics. Exits 1 unless the server is SERVING.");
  parser.AddFlag("json", &json, "print {status, server_info} as JSON");
  bool status_only = false;
  parser.AddFlag("status_only", &status_only,
                 "check only the health status (no GetServerInfo, so no API key is needed): for probes");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());
  Connection& c = **conn;

  grpc::health::v1::HealthCheckResponse health;
  auto ctx = c.NewContext(false);
  if (absl::Status s = c.Check(c.health().Check(ctx.get(), {}, &health), "Health.Check"); !s.ok()) {
    return Fail(s);
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(health.status());
  if (health.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return Fail(absl::UnavailableError(absl::StrCat(c.server(), " reports ", status)));
  }
  if (status_only) {
    std::printf(json ? "{\"server\": \"%s\", \"status\": \"%s\"}\n" : "%s: %s\n", c.server().c_str(),
                status.c_str());
    return 0;
  }
  absl::StatusOr<brt::v1::ServerInfo> info = GetServerInfo(c);
  if (!info.ok()) return Fail(info.status());
  if (json) {
    PrintJson({{"server", c.server()}, {"status", status}, {"server_info", ProtoToJson(*info)}});
    return 0;
  }
  const brt::v1::ModelInfo& m = info->model();
  const brt::v1::ServerLimits& l = info->limits();
  const brt::v1::ExecutorStats& e = info->executor();
  std::printf("%s: %s (brt-server %s)\n", c.server().c_str(), status.c_str(),
              info->version().c_str());
  std::printf("  model      %s  fingerprint %.16s\n", m.name().c_str(), m.fingerprint().c_str());
  std::printf(
      "             W=%u  S=%u  layers=%u (%u recurrent)  d_model=%u  heads=%u  vocab=%u  "
      "params=%llu\n",
      m.window(), m.n_state(), m.n_layers(), m.n_recurrent(), m.d_model(), m.n_heads(),
      m.vocab_size(), static_cast<unsigned long long>(m.parameters()));
  std::printf("             %s %s, %llu state bytes per session\n", m.device().c_str(),
              m.dtype().c_str(), static_cast<unsigned long long>(m.state_bytes_per_session()));
  std::printf("  sessions   %u of %u, active calls %u\n", e.sessions(), l.max_sessions(),
              e.active_calls());
  std::printf("  limits     queue %u, batch %u, chunk %llu bytes, max_tokens %u, top_k %u\n",
              l.max_queue(), l.max_batch_size(),
              static_cast<unsigned long long>(l.max_chunk_bytes()), l.max_tokens_cap(),
              l.max_top_k());
  std::printf("  executor   %llu score calls (%llu tokens), %llu span calls (%llu tokens), %llu decode "
              "calls (%llu tokens)\n",
              static_cast<unsigned long long>(e.score_calls()),
              static_cast<unsigned long long>(e.scored_block_tokens()),
              static_cast<unsigned long long>(e.span_calls()),
              static_cast<unsigned long long>(e.span_tokens()),
              static_cast<unsigned long long>(e.decode_calls()),
              static_cast<unsigned long long>(e.decoded_tokens()));
  return 0;
}

}  // namespace brt::client
