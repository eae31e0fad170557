#include "client/rpc/connection.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace brt::client {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

}  // namespace

void AddConnectionFlags(ArgParser& parser, ConnectionOptions* o) {
  parser.AddString("server", &o->server, "HOST:PORT", "brt-server address (env BRT_SERVER)");
  parser.AddString("api_key", &o->api_key, "KEY",
                   "sent as 'authorization: Bearer KEY' metadata (env BRT_API_KEY); checked by a "
                   "server started with --api_keys_file");
  parser.AddFlag("tls", &o->tls, "connect with TLS (system root certificates)");
  parser.AddString("tls_root_cert", &o->tls_root_cert, "PEM",
                   "connect with TLS, trusting this root certificate (env BRT_TLS_ROOT_CERT)");
  parser.AddString("tls_server_name", &o->tls_server_name, "NAME",
                   "name to verify in the server's certificate, if not the host");
  parser.AddString("tls_cert", &o->tls_cert, "PEM",
                   "this client's certificate, for a server that requires one (mutual TLS; env "
                   "BRT_TLS_CERT); implies TLS");
  parser.AddString("tls_key", &o->tls_key, "PEM", "the private key of --tls_cert (env BRT_TLS_KEY)");
  parser.AddDouble("timeout", &o->timeout_s,
                   "deadline per call in seconds; 0: 30 s for quick calls, none for streams");
  // After registering, so help shows the built-in defaults and never prints a key from the
  // environment; options given on the command line override these.
  o->server = Env("BRT_SERVER", o->server);
  o->api_key = Env("BRT_API_KEY", o->api_key);
  o->tls_root_cert = Env("BRT_TLS_ROOT_CERT", o->tls_root_cert);
  o->tls_cert = Env("BRT_TLS_CERT", o->tls_cert);
  o->tls_key = Env("BRT_TLS_KEY", o->tls_key);
}

Connection::Connection(ConnectionOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      brt_(brt::v1::Brt::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Create(const ConnectionOptions& options) {
  if (options.server.empty()) return absl::InvalidArgumentError("--server is empty");
  if (options.timeout_s < 0) return absl::InvalidArgumentError("--timeout must be >= 0");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  if (options.tls || !options.tls_root_cert.empty() || !options.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
      std::ifstream in(path, std::ios::binary);
      if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
      std::stringstream pem;
      pem << in.rdbuf();
      return pem.str();
    };
    if (!options.tls_root_cert.empty()) {
      auto pem = read(options.tls_root_cert, "--tls_root_cert");
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = *pem;
    }
    if (options.tls_cert.empty() != options.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together (mutual TLS)");
    }
    if (!options.tls_cert.empty()) {
      auto cert = read(options.tls_cert, "--tls_cert");
      if (!cert.ok()) return cert.status();
      auto key = read(options.tls_key, "--tls_key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(options.server, creds, args);
  return std::unique_ptr<Connection>(new Connection(options, std::move(channel)));
}

std::unique_ptr<grpc::ClientContext> Connection::NewContext(bool streaming,
                                                            const std::string& session_id) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!options_.api_key.empty()) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  if (!session_id.empty()) ctx->AddMetadata("x-brt-session", session_id);
  const double timeout = options_.timeout_s > 0 ? options_.timeout_s : (streaming ? 0 : 30);
  if (timeout > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
  }
  return ctx;
}

absl::Status Connection::Check(const grpc::Status& status, const std::string& rpc) const {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(rpc, " to ", options_.server, ": ", status.error_message()));
}

}  // namespace brt::client
