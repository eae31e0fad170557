#include "server/http/http_server.h"

#include <httplib.h>

#include <functional>
#include <optional>
#include <random>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/http/handlers.h"
#include "server/http/http_errors.h"
#include "server/http/prefix_cache.h"
#include "server/http/warm_first_pool.h"
#include "server/core/client_text.h"

namespace brt {
namespace http {

HttpServer::HttpServer(Engine* engine, HttpServerOptions options)
    : engine_(engine),
      options_(std::move(options)),
      started_unix_s_(absl::ToUnixSeconds(absl::Now())),
      prefix_cache_(std::make_unique<PrefixCache>(options_.prefix_cache_bytes)),
      server_(std::make_unique<httplib::Server>()) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Engine* engine,
                                                              HttpServerOptions options) {
  const std::string listen = options.listen;
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http_listen must be HOST:PORT (for instance 127.0.0.1:8080), got \"", listen, "\""));
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_threads must be >= 1, got ", options.threads));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::unique_ptr<HttpServer> s(new HttpServer(engine, std::move(options)));
  s->Routes();
  httplib::Server& srv = *s->server_;
  const int threads = s->options_.threads;
  srv.new_task_queue = [threads] { return new WarmFirstPool(threads); };
  srv.set_payload_max_length(s->options_.max_body_bytes);
  srv.set_read_timeout(s->options_.read_timeout_s, 0);
  srv.set_write_timeout(s->options_.write_timeout_s, 0);
  srv.set_keep_alive_max_count(1000);
  srv.set_keep_alive_timeout(5);
  const int bound = port == 0 ? srv.bind_to_any_port(host) : (srv.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen for HTTP on ", listen, ": the address is in use or not local; choose another "
        "--http_listen"));
  }
  s->port_ = bound;
  s->thread_ = std::thread([srv = s->server_.get()] { srv->listen_after_bind(); });
  return s;
}

void HttpServer::Stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

void HttpServer::Routes() {
  std::random_device rd;
  auto ctx = std::make_shared<HandlerContext>(HandlerContext{
      engine_, &options_, &next_id_, started_unix_s_,
      absl::StrFormat("cmpl-%08x%08x-", rd(), rd()), prefix_cache_.get()});
  httplib::Server& srv = *server_;
  // Every API route authenticates first (the same keys as gRPC): 401 with an OpenAI error object.
  using Handler = std::function<void(const Tenant&, const httplib::Request&, httplib::Response&)>;
  auto authed = [auth = options_.auth](Handler handler) {
    return [auth, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
      absl::StatusOr<Tenant> tenant = Tenant{};
      if (auth != nullptr) {
        std::optional<std::string> header;
        if (req.has_header("Authorization")) header = req.get_header_value("Authorization");
        tenant = auth->Resolve(header ? std::optional<std::string_view>(*header) : std::nullopt,
                               std::nullopt);
      }
      if (!tenant.ok()) {
        res.set_header("WWW-Authenticate", "Bearer");
        return SendError(res, tenant.status());
      }
      handler(*tenant, req, res);
    };
  };
  srv.Post("/v1/completions", authed([ctx](const Tenant& tenant, const httplib::Request& req,
                                           httplib::Response& res) {
             HandleCompletions(*ctx, tenant, req, res);
           }));
  srv.Get("/v1/models", authed([ctx](const Tenant&, const httplib::Request&, httplib::Response& res) {
            HandleModels(*ctx, res);
          }));
  srv.Post("/tokenize", authed([ctx](const Tenant&, const httplib::Request& req,
                                     httplib::Response& res) { HandleTokenize(*ctx, req, res); }));
  srv.Post("/detokenize", authed([ctx](const Tenant&, const httplib::Request& req,
                                       httplib::Response& res) { HandleDetokenize(*ctx, req, res); }));
  srv.Get("/tokenizer_info", authed([ctx](const Tenant&, const httplib::Request&,
                                          httplib::Response& res) { HandleTokenizerInfo(*ctx, res); }));
  srv.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) {
      res.status = 503;
      res.set_content("{\"status\":\"draining\"}", "application/json");
    } else {
      SendJson(res, "{\"status\":\"ok\"}");
    }
  });
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kWebPageHtml, "text/html; charset=utf-8");
  });
  // Everything else, and errors httplib raises itself (body too large, bad request line), as
  // OpenAI error objects.
  srv.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    absl::Status status;
    if (res.status == 404) {
      status = absl::NotFoundError(absl::StrCat(
          "no route ", req.method, " ", QuoteClientInput(req.path),
          "; the API has POST /v1/completions, GET /v1/models, POST /tokenize, POST /detokenize, "
          "GET /tokenizer_info, GET /health and GET /"));
    } else if (res.status == 413) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "the request body is larger than ", options_.max_body_bytes,
          " bytes (--http_max_body_bytes); score longer texts in pieces through a session"));
      res.set_content(ErrorJson(status), "application/json");
      res.status = 413;
      return;
    } else {
      status = absl::InvalidArgumentError(absl::StrCat("HTTP ", res.status, " for ", req.method, " ",
                                                      QuoteClientInput(req.path)));
    }
    const int code = res.status;
    res.set_content(ErrorJson(status), "application/json");
    res.status = code;
  });
  srv.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        res.status = 500;
        res.set_content(ErrorJson(absl::InternalError(absl::StrCat("internal error: ", what))),
                        "application/json");
      });
}

}  // namespace http
}  // namespace brt
