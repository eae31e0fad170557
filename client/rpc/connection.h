// Connection: the gRPC edge of the clients. Builds the channel (plaintext, or TLS with an optional
// root certificate), stamps every call with the API key and deadline, and turns a grpc::Status into
// an absl::Status whose message names the RPC and the server, so the tool can print
// "CODE: message" and exit non-zero.
//
// The API key is sent as metadata `authorization: Bearer KEY` on every call. (brt-server does not
// check it yet; it is there for a proxy in front of the server or a later server version.)
// Thread-safe: the stubs and NewContext() may be used from several threads at once.
#ifndef BRT_CLIENT_RPC_CONNECTION_H_
#define BRT_CLIENT_RPC_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "brt/v1/brt.grpc.pb.h"
#include "client/core/args.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace brt::client {

struct ConnectionOptions {
  std::string server = "127.0.0.1:50051";  // host:port; env BRT_SERVER
  std::string api_key;                     // env BRT_API_KEY
  bool tls = false;
  std::string tls_root_cert;    // PEM file; implies tls. env BRT_TLS_ROOT_CERT
  std::string tls_server_name;  // overrides the name checked in the server certificate
  std::string tls_cert;         // this client's PEM certificate (mutual TLS); env BRT_TLS_CERT
  std::string tls_key;          // its PEM private key; env BRT_TLS_KEY
  double timeout_s = 0;         // per call; 0: 30 s for unary calls, none for streams
};

// Registers --server, --api_key, --tls, --tls_root_cert, --tls_server_name, --tls_cert, --tls_key
// and --timeout on `parser`, then takes defaults from the environment (BRT_SERVER, BRT_API_KEY,
// BRT_TLS_ROOT_CERT, BRT_TLS_CERT, BRT_TLS_KEY).
void AddConnectionFlags(ArgParser& parser, ConnectionOptions* options);

class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Create(const ConnectionOptions& options);

  brt::v1::Brt::Stub& brt() { return *brt_; }
  grpc::health::v1::Health::Stub& health() { return *health_; }
  const std::string& server() const { return options_.server; }

  // A context with the API key metadata and the deadline (`streaming` calls get none by default).
  // A call about one session passes its id: it goes out as `x-brt-session` metadata, which a proxy
  // in front of several replicas routes by (deploy/README.md).
  std::unique_ptr<grpc::ClientContext> NewContext(bool streaming,
                                                  const std::string& session_id = "") const;

  // OK for an OK status; otherwise the same code with "RPC to SERVER: message".
  absl::Status Check(const grpc::Status& status, const std::string& rpc) const;

 private:
  Connection(ConnectionOptions options, std::shared_ptr<grpc::Channel> channel);
  ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<brt::v1::Brt::Stub> brt_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace brt::client

#endif  // BRT_CLIENT_RPC_CONNECTION_H_
