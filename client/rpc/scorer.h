// Streams text into a session with one Score call (bidirectional stream): a writer thread sends the
// text in chunks while the calling thread reads the token scores as the server runs each block. The
// text is one tokenization unit (the API's Score semantics), however it is chunked.
// Thread-safe to call from several threads on one Connection (each call has its own stream).
#ifndef BRT_CLIENT_RPC_SCORER_H_
#define BRT_CLIENT_RPC_SCORER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "client/core/summary.h"
#include "client/core/token_table.h"
#include "client/rpc/connection.h"

namespace brt::client {

// Hands out the text to score, a chunk per call: at most max_bytes; empty at the end.
using ByteSource = std::function<absl::StatusOr<std::string>(size_t max_bytes)>;
ByteSource StringSource(std::string_view text);  // REQUIRES: text outlives the source
// Reads the file lazily ("-": stdin); NOT_FOUND if it cannot be opened (at the first read).
ByteSource FileSource(const std::string& path);

struct ScoreOptions {
  size_t chunk_bytes = 64 * 1024;
  // Stream no per-token scores (only the summary); on_token is then never called.
  bool omit_tokens = false;
};

// Called on the reading thread for each scored token, in order.
using TokenCallback = std::function<void(TokenRow&& row)>;

// Runs one Score call into `session_id`. Returns the server's summary.
absl::StatusOr<Summary> ScoreInto(Connection& conn, const std::string& session_id,
                                  ByteSource source, const ScoreOptions& options,
                                  const TokenCallback& on_token);

// Thin wrappers over the session RPCs (errors via Connection::Check).
absl::StatusOr<brt::v1::Session> CreateSession(Connection& conn, const std::string& label);
absl::Status DeleteSession(Connection& conn, const std::string& session_id);
absl::StatusOr<brt::v1::ServerInfo> GetServerInfo(Connection& conn);

}  // namespace brt::client

#endif  // BRT_CLIENT_RPC_SCORER_H_
