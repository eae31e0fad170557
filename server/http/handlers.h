// The HTTP routes' handlers (internal to server/http): completions_handler.cc for /v1/completions,
// tokenizer_handlers.cc for /tokenize, /detokenize, /tokenizer_info and /v1/models.
//
// Thread safety: handlers run on httplib's pool threads; they share only the Engine (thread-safe)
// and the atomic id counter.
#ifndef BRT_SERVER_HTTP_HANDLERS_H_
#define BRT_SERVER_HTTP_HANDLERS_H_

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/core/engine.h"
#include "server/http/http_server.h"
#include "server/http/prefix_cache.h"

namespace brt {
namespace http {

struct HandlerContext {
  Engine* engine;
  const HttpServerOptions* options;
  std::atomic<uint64_t>* next_id;
  int64_t started_unix_s;
  std::string id_prefix;  // "cmpl-<random>-": completion ids are this + a counter
  PrefixCache* prefix_cache;  // may be disabled (max bytes 0)
};

// Sets the status code and OpenAI error body.
void SendError(httplib::Response& res, const absl::Status& status);
void SendJson(httplib::Response& res, const std::string& body);

// `tenant`: whom the request acts for (authenticated by the server).
void HandleCompletions(const HandlerContext& ctx, const Tenant& tenant, const httplib::Request& req,
                       httplib::Response& res);
void HandleModels(const HandlerContext& ctx, httplib::Response& res);
void HandleTokenize(const HandlerContext& ctx, const httplib::Request& req, httplib::Response& res);
void HandleDetokenize(const HandlerContext& ctx, const httplib::Request& req,
                      httplib::Response& res);
void HandleTokenizerInfo(const HandlerContext& ctx, httplib::Response& res);

// The compiled-in web page (web_page.cc, generated from server/http/web/index.html).
extern const char kWebPageHtml[];

}  // namespace http
}  // namespace brt

#endif  // BRT_SERVER_HTTP_HANDLERS_H_
