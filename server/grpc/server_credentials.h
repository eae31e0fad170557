// Server credentials for brt-server's gRPC port from its TLS flags: plaintext without a certificate,
// TLS with --tls_cert_file/--tls_key_file, mutual TLS (client certificates required and verified
// against --tls_client_ca_file) when a client CA is given. Also the loopback test behind "secure by
// default".
//
// Thread safety: stateless functions.
#ifndef BRT_SERVER_GRPC_SERVER_CREDENTIALS_H_
#define BRT_SERVER_GRPC_SERVER_CREDENTIALS_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace brt {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain; "" = plaintext
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA bundle; "" = no client certificates (plain TLS)
};

// INVALID_ARGUMENT for an inconsistent set of flags (a key without a certificate, a client CA without
// TLS), NOT_FOUND for a file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls);

// True when HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1, localhost), or the address
// is a Unix socket ("unix:PATH").
bool IsLoopbackListen(std::string_view host_port);

}  // namespace brt

#endif  // BRT_SERVER_GRPC_SERVER_CREDENTIALS_H_
