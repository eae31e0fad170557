// brt-generate-load: a light C++ gRPC client that runs concurrent Generate streams against a running
// brt-server and prints what it saw, so that the benchmark's client does not take the CPU the server
// needs. On this project's 2-core machine the Python client (32 threads, one sync stream each) used about
// a third of the CPU during a 32-session run; this client spends a few percent. By default each stream has
// a thread blocked in Read (~32 us of CPU a token at 32 streams on the project's 2-core VM);
// --client_api=callback reads every stream through gRPC's callback API instead (no thread per stream, about
// 40% of that CPU, but one stream's and the first tokens' gaps came out longer: benchmarks/README.md).
// "client_cpu_s" in the output says what a run cost.
//
//   build/bin/brt-generate-load --address=127.0.0.1:50051 --session_ids=ID1,ID2,...
//       --prompts_file=FILE --max_tokens=64 [--temperature=0.8 --top_p=0.95] [--api_key=KEY]
//       [--stream_interval=N] [--arrival_ms=MS]
//
// The caller creates the sessions (and puts them at whatever position it wants) and deletes them after;
// this tool only times the Generate calls. Session i gets line i % lines of --prompts_file as its prompt
// and seed i + 1. All streams start together (a barrier), or with --arrival_ms stream i starts i * MS ms
// after the barrier (arrivals while others generate), and the clock runs from the barrier's release to
// the last stream's end. One JSON object on stdout:
//   {"sessions": N, "tokens": T, "seconds": S, "tokens_per_s": T/S,
//    "messages": M, "client_api": "sync", "client_cpu_s": C, "gaps_us": [...every gap between messages that carry tokens, each stream's in order...],
//    "errors": [...]}
// With --stream_interval 1 (the default) every message before the last carries one token, so the gaps
// are the inter-token gaps; with N > 1 a message carries up to N tokens (GenerateResponse.tokens, the
// last message's included). Exit status 0 when every stream ended OK, 1 otherwise.
//
// Thread safety: main() only; each stream (its thread, or its reactor's callbacks, which gRPC runs one at a
// time per stream) owns its slot of the results until it is joined or has signalled its end.

#include <sys/resource.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "brt/v1/brt.grpc.pb.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "brt-server's gRPC address");
ABSL_FLAG(std::string, session_ids, "", "Comma-separated session ids, one stream each");
ABSL_FLAG(std::string, prompts_file, "", "Prompts, one per line (session i gets line i % lines)");
ABSL_FLAG(int, max_tokens, 64, "GenerateRequest.max_tokens");
ABSL_FLAG(double, temperature, 0.0, "SamplingParams.temperature (0 = greedy)");
ABSL_FLAG(double, top_p, 1.0, "SamplingParams.top_p");
ABSL_FLAG(std::string, api_key, "", "Sent as 'authorization: Bearer KEY' when set");
ABSL_FLAG(int, timeout_s, 600, "Deadline of each Generate call");
ABSL_FLAG(int, stream_interval, 1, "GenerateRequest.stream_interval (tokens per message)");
ABSL_FLAG(int, arrival_ms, 0, "Stream i starts i * this many ms after the first (0: all at once)");
ABSL_FLAG(std::string, client_api, "sync",
          "callback: every stream a ClientReadReactor, read on gRPC's own threads (no thread per stream); "
          "sync: a thread per stream blocked in ClientReader::Read (the first version of this tool)");

namespace {

using Clock = std::chrono::steady_clock;

struct StreamResult {
  std::vector<Clock::time_point> stamps;  // arrival of each message that carried tokens
  long tokens = 0;
  std::string error;  // empty: the stream ended OK
};

// Releases every waiting worker at once.
class StartGate {
 public:
  explicit StartGate(int parties) : waiting_(parties) {}
  void ArriveAndWait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (--waiting_ == 0) cv_.notify_all();
    cv_.wait(lock, [this] { return waiting_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_;
};

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Tokens a message carries: GenerateResponse.tokens when set (stream_interval > 1), else one unless it is
// the final message (which has a finish reason and no token).
long TokensIn(const brt::v1::GenerateResponse& msg) {
  if (msg.tokens_size() > 0) return msg.tokens_size();
  return msg.finish_reason() == brt::v1::FINISH_REASON_UNSPECIFIED ? 1 : 0;
}

void RunStream(brt::v1::Brt::Stub* stub, const brt::v1::GenerateRequest& req, StartGate* gate,
               std::chrono::milliseconds delay, StreamResult* out) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  const std::string key = absl::GetFlag(FLAGS_api_key);
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
  out->stamps.reserve(req.max_tokens() + 1);
  gate->ArriveAndWait();
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
  std::unique_ptr<grpc::ClientReader<brt::v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
  brt::v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    const long n = TokensIn(msg);
    if (n == 0) continue;
    out->stamps.push_back(Clock::now());
    out->tokens += n;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) out->error = absl::StrCat(status.error_code(), ": ", status.error_message());
}

// One Generate stream read through gRPC's callback API: OnReadDone runs on a gRPC thread, stamps the message
// and asks for the next; no thread of this tool waits per stream.
class CallbackStream final : public grpc::ClientReadReactor<brt::v1::GenerateResponse> {
 public:
  CallbackStream(brt::v1::Brt::Stub* stub, const brt::v1::GenerateRequest& req, StreamResult* out)
      : out_(out) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
    const std::string key = absl::GetFlag(FLAGS_api_key);
    if (!key.empty()) ctx_.AddMetadata("authorization", "Bearer " + key);
    out_->stamps.reserve(req.max_tokens() + 1);
    stub->async()->Generate(&ctx_, &req, this);
  }
  void Start() {
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    const long n = TokensIn(msg_);
    if (n > 0) {
      out_->stamps.push_back(Clock::now());
      out_->tokens += n;
    }
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status& status) override {
    if (!status.ok()) out_->error = absl::StrCat(status.error_code(), ": ", status.error_message());
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  grpc::ClientContext ctx_;
  brt::v1::GenerateResponse msg_;
  StreamResult* out_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<std::string> ids = absl::StrSplit(absl::GetFlag(FLAGS_session_ids), ',', absl::SkipEmpty());
  std::vector<std::string> prompts = ReadLines(absl::GetFlag(FLAGS_prompts_file));
  if (ids.empty() || prompts.empty()) {
    std::fprintf(stderr, "brt-generate-load: need --session_ids (comma list) and a non-empty --prompts_file\n");
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "brt-generate-load: could not connect to %s\n", absl::GetFlag(FLAGS_address).c_str());
    return 2;
  }
  std::unique_ptr<brt::v1::Brt::Stub> stub = brt::v1::Brt::NewStub(channel);

  const int n = static_cast<int>(ids.size());
  std::vector<brt::v1::GenerateRequest> requests(n);
  for (int i = 0; i < n; ++i) {
    brt::v1::GenerateRequest& req = requests[i];
    req.set_session_id(ids[i]);
    req.set_prompt(prompts[i % prompts.size()]);
    req.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
    req.mutable_sampling()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
    req.mutable_sampling()->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
    req.mutable_sampling()->set_seed(i + 1);
    req.set_stream_interval(static_cast<uint32_t>(absl::GetFlag(FLAGS_stream_interval)));
  }
  std::vector<StreamResult> results(n);
  const int arrival_ms = absl::GetFlag(FLAGS_arrival_ms);
  const std::string api = absl::GetFlag(FLAGS_client_api);
  if (api != "callback" && api != "sync") {
    std::fprintf(stderr, "brt-generate-load: --client_api must be callback or sync, got '%s'\n", api.c_str());
    return 2;
  }
  struct rusage before;
  getrusage(RUSAGE_SELF, &before);
  Clock::time_point t0;
  if (api == "callback") {
    std::vector<std::unique_ptr<CallbackStream>> streams;
    for (int i = 0; i < n; ++i) streams.push_back(std::make_unique<CallbackStream>(stub.get(), requests[i], &results[i]));
    t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_until(t0 + std::chrono::milliseconds(i * arrival_ms));
      streams[i]->Start();
    }
    for (auto& s : streams) s->Wait();
  } else {
    StartGate gate(n + 1);
    std::vector<std::thread> workers;
    workers.reserve(n);
    for (int i = 0; i < n; ++i) {
      workers.emplace_back(RunStream, stub.get(), requests[i], &gate, std::chrono::milliseconds(i * arrival_ms),
                           &results[i]);
    }
    gate.ArriveAndWait();
    t0 = Clock::now();
    for (std::thread& w : workers) w.join();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  struct rusage after;
  getrusage(RUSAGE_SELF, &after);
  auto cpu_s = [](const struct rusage& r) {
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
  };

  nlohmann::json gaps = nlohmann::json::array();
  nlohmann::json errors = nlohmann::json::array();
  long tokens = 0;
  long messages = 0;
  for (const StreamResult& r : results) {
    tokens += r.tokens;
    messages += static_cast<long>(r.stamps.size());
    for (size_t j = 1; j < r.stamps.size(); ++j) {
      gaps.push_back(std::chrono::duration<double, std::micro>(r.stamps[j] - r.stamps[j - 1]).count());
    }
    if (!r.error.empty()) errors.push_back(r.error);
  }
  nlohmann::json out = {{"sessions", n},
                        {"tokens", tokens},
                        {"seconds", seconds},
                        {"tokens_per_s", seconds > 0 ? tokens / seconds : 0.0},
                        {"messages", messages},
                        {"client_api", api},
                        {"client_cpu_s", cpu_s(after) - cpu_s(before)},
                        {"gaps_us", gaps},
                        {"errors", errors}};
  std::printf("%s\n", out.dump().c_str());
  return errors.empty() ? 0 : 1;
}
