// HttpServer: the OpenAI-compatible HTTP edge (cpp-httplib), a second port beside gRPC over the same
// Engine (no second engine, no gRPC inside). Routes:
//   POST /v1/completions   completions, prompt logprobs (echo), server-sent-event streaming
//   GET  /v1/models        the served model
//   POST /tokenize, POST /detokenize, GET /tokenizer_info   the server's tokenizer (lm-eval's remote
//                          tokenizer protocol)
//   GET  /health           200 while serving, 503 once draining
//   GET  /                 the web page (server/http/web/index.html, compiled in)
// The API is documented in README.md ("HTTP API").
//
// Limits (each a brt-server flag): request body bytes, prompts per request, handler threads (each
// streaming response holds one), read/write timeouts (a client that stops reading a stream is cut off
// after the write timeout, so a slow reader holds one thread and bounded memory).
//
// Thread safety: Start/Stop from one thread; handlers run on the server's own thread pool and touch
// only the Engine (thread-safe) and atomics.
#ifndef BRT_SERVER_HTTP_HTTP_SERVER_H_
#define BRT_SERVER_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/auth/authenticator.h"
#include "server/core/engine.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace brt {
namespace http {

class PrefixCache;

struct HttpServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  int threads = 16;
  uint64_t max_body_bytes = uint64_t{8} << 20;
  uint32_t max_prompts = 32;
  // Generated tokens per stream event after the first where a request does not say (stream_interval).
  uint32_t stream_interval = 1;
  int read_timeout_s = 30;
  int write_timeout_s = 60;
  // Per completion; 0 = none (the Engine's calls then run until done or cancelled).
  int64_t request_timeout_s = 0;
  // Prompt prefixes kept for reuse by later requests (prefix_cache.h); 0 = off.
  uint64_t prefix_cache_bytes = uint64_t{256} << 20;
  // Resolves each request's tenant from its Authorization header (as for gRPC); every route but
  // GET /health and GET / (the static page) needs it to succeed (401 otherwise). nullptr =
  // single-tenant mode. Not owned; must outlive the server.
  const auth::Authenticator* auth = nullptr;
};

class HttpServer {
 public:
  // Binds and starts serving on a background thread. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Engine* engine, HttpServerOptions options);
  ~HttpServer();  // Stop()

  int port() const { return port_; }
  // /health answers 503 from now on (graceful shutdown, step 1).
  void SetDraining() { draining_ = true; }
  const PrefixCache& prefix_cache() const { return *prefix_cache_; }
  // Stops accepting, ends keep-alive connections, joins the listener.
  void Stop();

 private:
  HttpServer(Engine* engine, HttpServerOptions options);
  void Routes();

  Engine* const engine_;
  const HttpServerOptions options_;
  const int64_t started_unix_s_;
  std::unique_ptr<PrefixCache> prefix_cache_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{0};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_HTTP_SERVER_H_
