// brt generate: streams a completion to the terminal as tokens arrive.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/core/text.h"
#include "client/rpc/connection.h"
#include "client/rpc/interrupt.h"
#include "client/rpc/scorer.h"

namespace brt::client {
namespace {

std::string FinishReasonName(brt::v1::FinishReason r) {
  std::string name = brt::v1::FinishReason_Name(r);
  const std::string prefix = "FINISH_REASON_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

}  // namespace

int RunGenerate(const Args& args) {
  ConnectionOptions conn_options;
  std::string session_id, label = "brt generate";
  bool json = false, keep = false, stats = false;
  std::optional<uint64_t> max_tokens, top_k, repetition_window, seed, stream_interval;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::vector<std::string> stops, prompt_args;

  ArgParser parser(
      "brt generate", "[options] [PROMPT]",
      "Appends PROMPT to a session and streams the sampled continuation to stdout as it arrives.\n"
      "Without PROMPT (or with '-') the prompt is read from stdin, unless stdin is a terminal\n"
      "(then the prompt is empty). Without --session a new session is used and deleted "
      "afterwards.\n"
      "Sampling options left out take the session's defaults, then the server's.");
  parser.SetPositionals(&prompt_args, 0, 1, "PROMPT  text to append before generating");
  parser.AddString("session", &session_id, "ID",
                   "generate in this existing session (continuing it)");
  parser.AddString("label", &label, "TEXT", "label of a new session");
  parser.AddFlag("keep", &keep, "keep a new session (its id goes to stderr)");
  parser.AddOptionalUint("max_tokens", &max_tokens, "tokens to generate (server default 128)");
  parser.AddOptionalDouble("temperature", &temperature, "softmax temperature in [0, 5]; 0 greedy");
  parser.AddOptionalUint("top_k", &top_k, "keep the k most likely tokens; 0 off");
  parser.AddOptionalDouble("top_p", &top_p, "nucleus sampling threshold in (0, 1]; 1 off");
  parser.AddOptionalDouble("min_p", &min_p, "drop tokens below min_p x the best one's probability");
  parser.AddOptionalDouble("repetition_penalty", &repetition_penalty,
                           "CTRL-style penalty (> 0, at most 10); 1 off");
  parser.AddOptionalUint("repetition_window", &repetition_window,
                         "how many last tokens the penalty looks at, in [0, 4096]");
  parser.AddOptionalUint("seed", &seed, "random seed: same seed, session and settings, same text");
  parser.AddRepeated("stop", &stops, "TEXT", "stop sequence (repeatable, at most 16)");
  parser.AddFlag("json", &json,
                 "print one JSON object at the end (text, tokens, finish_reason, counts) instead "
                 "of streaming text");
  parser.AddFlag("stats", &stats, "print the finish reason and token counts to stderr");
  parser.AddOptionalUint("stream_interval", &stream_interval,
                         "tokens per streamed message after the first (default 1)");
  AddConnectionFlags(parser, &conn_options);
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;

  std::string prompt;
  if (!prompt_args.empty() && prompt_args[0] != "-") {
    prompt = prompt_args[0];
  } else if (!prompt_args.empty() || !isatty(STDIN_FILENO)) {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }

  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Create(conn_options);
  if (!conn.ok()) return Fail(conn.status());

  const bool owned = session_id.empty();
  if (owned) {
    absl::StatusOr<brt::v1::Session> s = CreateSession(**conn, label);
    if (!s.ok()) return Fail(s.status());
    session_id = s->id();
  }

  brt::v1::GenerateRequest req;
  req.set_session_id(session_id);
  req.set_prompt(prompt);
  if (max_tokens) req.set_max_tokens(static_cast<uint32_t>(*max_tokens));
  if (stream_interval) req.set_stream_interval(static_cast<uint32_t>(*stream_interval));
  brt::v1::SamplingParams* sp = req.mutable_sampling();
  if (temperature) sp->set_temperature(static_cast<float>(*temperature));
  if (top_k) sp->set_top_k(static_cast<uint32_t>(*top_k));
  if (top_p) sp->set_top_p(static_cast<float>(*top_p));
  if (min_p) sp->set_min_p(static_cast<float>(*min_p));
  if (repetition_penalty) sp->set_repetition_penalty(static_cast<float>(*repetition_penalty));
  if (repetition_window) sp->set_repetition_window(static_cast<uint32_t>(*repetition_window));
  if (seed) sp->set_seed(*seed);
  for (const std::string& s : stops) sp->add_stop(s);

  std::unique_ptr<grpc::ClientContext> ctx = (*conn)->NewContext(/*streaming=*/true, session_id);
  Interrupts::CancelScope cancel_on_interrupt(ctx.get());
  std::unique_ptr<grpc::ClientReader<brt::v1::GenerateResponse>> stream =
      (*conn)->brt().Generate(ctx.get(), req);
  brt::v1::GenerateResponse resp, last;
  std::string text;
  nlohmann::json tokens = nlohmann::json::array();
  auto add_token = [&tokens](uint32_t id, float logprob, uint64_t position, const std::string& bytes) {
    tokens.push_back({{"token_id", id},
                      {"logprob", logprob},
                      {"position", position},
                      {"piece", ToValidUtf8(bytes)}});
  };
  while (stream->Read(&resp)) {
    text += resp.text();
    // --stream_interval > 1: a message's tokens are in `tokens` (the last message's too).
    for (const brt::v1::StreamedToken& t : resp.tokens()) {
      add_token(t.token_id(), t.logprob(), t.position(), t.token_bytes());
    }
    if (resp.finish_reason() != brt::v1::FINISH_REASON_UNSPECIFIED) {
      last = resp;
    } else if (resp.tokens().empty()) {
      add_token(resp.token_id(), resp.logprob(), resp.position(), resp.token_bytes());
    }
    if (!json && !resp.text().empty()) {
      std::fwrite(resp.text().data(), 1, resp.text().size(), stdout);
      std::fflush(stdout);
    }
  }
  absl::Status status = (*conn)->Check(stream->Finish(), "Generate");
  if (!json && isatty(STDOUT_FILENO) && !text.empty() && text.back() != '\n') std::printf("\n");
  if (owned && !keep) {
    absl::Status deleted = DeleteSession(**conn, session_id);
    if (status.ok()) status = deleted;
  }
  if (!status.ok()) return Fail(status);
  if (owned && keep) std::fprintf(stderr, "brt: session %s kept\n", session_id.c_str());
  if (stats) {
    std::fprintf(stderr,
                 "brt: finish_reason=%s prompt_tokens=%u generated_tokens=%u position=%llu\n",
                 FinishReasonName(last.finish_reason()).c_str(), last.prompt_tokens(),
                 last.generated_tokens(), static_cast<unsigned long long>(last.session_position()));
  }
  if (json) {
    PrintJson({{"session_id", session_id},
               {"text", text},
               {"tokens", tokens},
               {"finish_reason", FinishReasonName(last.finish_reason())},
               {"prompt_tokens", last.prompt_tokens()},
               {"generated_tokens", last.generated_tokens()},
               {"session_position", last.session_position()}});
  }
  return 0;
}

}  // namespace brt::client
