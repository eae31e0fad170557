// brt-server: serves a Block-Recurrent Transformer export over gRPC (brt.v1.Brt, see proto/).
// Wiring only: flags -> Tokenizer -> ModelRunner (its flags: runner_flags.cc) -> Engine -> gRPC server.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "brt/v1/brt.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "server/auth/authenticator.h"
#include "server/core/engine.h"
#include "server/grpc/brt_service.h"
#include "server/grpc/server_credentials.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/model/model_runner.h"
#include "server/persistence/snapshot_store.h"
#include "server/runner_flags.h"
#include "server/startup.h"
#include "server/tokenizer/tokenizer.h"

ABSL_FLAG(
    std::string, model_dir, "",
    "Directory with brt.pt and tokenizer.model. Default: model/artifacts relative to the current "
    "directory, else ../../model/artifacts relative to the executable");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "Address to listen on (host:port)");
ABSL_FLAG(std::string, tokenizer_shim, "",
          "Path of libbrt_spm_shim.so. Default: ../lib/libbrt_spm_shim.so next to the executable");
ABSL_FLAG(bool, reflection, true, "Enable gRPC server reflection");
ABSL_FLAG(uint32_t, max_sessions, 1024, "Maximum sessions held at once");
ABSL_FLAG(uint32_t, max_queue, 256, "Maximum active Score/Generate calls (UNAVAILABLE beyond)");
ABSL_FLAG(uint32_t, max_batch_size, 8, "Maximum sessions per batched block-scoring call (score_slots)");
ABSL_FLAG(uint32_t, max_decode_batch, 64, "Maximum sessions per batched decode step (decode_slots)");
ABSL_FLAG(uint64_t, checkpoint_recycle_mb, 128,
          "Host memory (MiB) of dropped checkpoints kept for new ones, which then copy a session's memory "
          "into pages the process already touched (3.4 ms into new memory vs ~0.15 ms on the dev VM, for "
          "the shipped model's 1.2 MB); 0 = none");
ABSL_FLAG(uint64_t, checkpoint_prefill_mb, 64,
          "Of --checkpoint_recycle_mb, host memory (MiB) for checkpoints touched at startup, so that new "
          "sessions' first checkpoints copy into touched pages too (on the dev VM 32 sessions' first "
          "checkpoints otherwise added ~8 ms to each of ~10 decode steps); 0 = none");
ABSL_FLAG(uint32_t, max_block_ends_per_step, 8,
          "Decode rows per step whose token completes a block, and so also runs the state update (several "
          "tokens' work); more wait a step or a few, once, so that sessions that started together do not "
          "all stall on the same step. 0 = no limit");
ABSL_FLAG(uint32_t, decode_rows_per_block_end, 16,
          "And at most one such row per this many decode rows in the step (at least one): a state update "
          "costs ~5 rows' decode, so 16 keeps a step with updates within ~1.3x of one without at any batch "
          "size (the inter-token p99 near the p50); a held row waits at most ~16 steps, once. 0 = no "
          "share limit");
ABSL_FLAG(uint32_t, chunked_prefill_tokens, 0,
          "Chunked prefill: tokens of prompts (and of Score calls' tails) fed in a step that also decodes "
          "for other sessions, in all (at least 2). A prompt that arrives while sessions generate is fed "
          "over a few steps, so their inter-token gaps grow by a bounded amount instead of by one long "
          "prefill call; an idle server prefills at full speed. 0 = no limit");
ABSL_FLAG(uint32_t, max_blocks_per_call, 2,
          "Blocks per session in one score_blocks call when the batch is full; a call runs at most "
          "max_batch_size * max_blocks_per_call blocks");
ABSL_FLAG(bool, mixed_batches, true,
          "Run a step's decode rows and span rows (prompts, text that does not fill a block) in one model "
          "call, so their matrix products read the weights once (exports with mixed_slots)");
ABSL_FLAG(bool, feed_spans, true,
          "Feed up to a block's worth of tokens that stay inside one block (a prompt, the end of a Score "
          "call) in one batched call instead of token by token (exports with span_slots)");
ABSL_FLAG(uint64_t, max_chunk_bytes, 1 << 20, "Maximum bytes per Score chunk and Generate prompt");
ABSL_FLAG(uint64_t, max_line_bytes, uint64_t{1} << 20,
          "Maximum bytes of a Score call's text that may wait for a newline before it can be tokenized "
          "(RESOURCE_EXHAUSTED beyond: clients must send newlines at least this often)");
ABSL_FLAG(uint64_t, max_reply_bytes, uint64_t{1} << 20,
          "Maximum serialized size of one ScoreResponse: scores merged while a write is pending start a "
          "new message beyond it. Keep it well under clients' receive limit (gRPC default 4 MiB)");
ABSL_FLAG(uint64_t, max_pending_reply_bytes, uint64_t{16} << 20,
          "Score replies queued for a slow reader above which the server stops reading that call's "
          "input until the client catches up (bounds memory per call; slows only that call)");
ABSL_FLAG(uint32_t, max_tokens_cap, 4096, "Maximum GenerateRequest.max_tokens");
ABSL_FLAG(uint32_t, default_max_tokens, 128, "max_tokens when a GenerateRequest leaves it unset");
ABSL_FLAG(uint32_t, max_top_k, 20, "Maximum ScoreRequest.top_k");
ABSL_FLAG(uint32_t, repetition_window, 64,
          "Default number of recent tokens the repetition penalty sees");
ABSL_FLAG(uint32_t, max_message_bytes, 8 << 20, "Maximum gRPC message size, bytes");
ABSL_FLAG(uint32_t, grpc_memory_quota_mb, 1024,
          "gRPC's resource quota: memory its transports may hold for buffers and calls (MiB). Under "
          "pressure gRPC shrinks read buffers and refuses new streams instead of growing without bound");
ABSL_FLAG(uint32_t, grpc_max_streams_per_connection, 256,
          "Most concurrent calls on one client connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)");
ABSL_FLAG(std::string, snapshot_store, "file://brt-snapshots",
          "Where session snapshots live: file:///abs/dir or a path (relative to the current directory), "
          "or redis://[:password@]host[:port][/db][?prefix=P] to share sessions between replicas. "
          "Empty = no store (SaveSession can still return bytes)");
ABSL_FLAG(std::string, snapshot_hmac_key_file, "",
          "File holding a secret key (>= 16 bytes; trailing newline ignored). When set, snapshots are "
          "signed with HMAC-SHA256 and unsigned or wrongly signed ones are refused");
ABSL_FLAG(int64_t, session_idle_ttl_s, 0,
          "Snapshot to the store and free a session idle this many seconds (its next use restores it); "
          "0 = never");
ABSL_FLAG(uint64_t, session_memory_budget_bytes, 0,
          "Keep the loaded sessions' memory under this many bytes by snapshotting and freeing the least "
          "recently used idle ones (their next use restores them); 0 = no budget");
ABSL_FLAG(uint32_t, autosave_every_blocks, 0,
          "Snapshot a session to the store every N blocks (N*W tokens) it advances, so a crash loses at "
          "most N blocks of it; 0 = off");
ABSL_FLAG(std::string, metrics_address, brt::metrics::kDefaultMetricsAddress,
          "Address (host:port) of the Prometheus /metrics endpoint; loopback by default, port 0 "
          "picks a free one. Empty = metrics off (nothing is recorded)");

ABSL_FLAG(uint32_t, checkpoints_per_session, 4,
          "Checkpoints kept per session in host memory (about --max_sessions x this x 0.85 MB at most) "
          "for RewindSession and ForkSession at a position; 0 = off");
ABSL_FLAG(uint32_t, checkpoint_interval_blocks, 2,
          "Blocks between a session's checkpoints: the rewind horizon is about checkpoints_per_session x "
          "this blocks, and a rewind re-reads at most about this many blocks");
ABSL_FLAG(uint32_t, max_calls_per_peer, 64,
          "Concurrent Score/Generate calls one client address may have (RESOURCE_EXHAUSTED beyond), so "
          "that one client cannot fill --max_queue; 0 = no limit");
ABSL_FLAG(uint32_t, blocking_threads, 8,
          "Threads that run calls which may wait on the snapshot store or the executor (save, restore, "
          "fork, rewind, delete, and any call on a session not loaded yet), so gRPC's own threads never do");
ABSL_FLAG(uint32_t, blocking_queue, 256,
          "Such calls that may wait for a blocking thread; beyond, UNAVAILABLE at once");
ABSL_FLAG(double, idle_timeout_s, 30,
          "A Score stream that sends no text for this long while the server waits for it ends with "
          "DEADLINE_EXCEEDED (its queue slot is freed; what was read stays in the session); 0 = never");
ABSL_FLAG(int, shutdown_timeout_s, 60,
          "On SIGTERM/SIGINT, exit with status 3 if draining and saving sessions take longer than this; a "
          "second signal exits at once (status 2), keeping what was saved so far");
ABSL_FLAG(std::string, api_keys_file, "",
          "API keys: one 'TENANT SHA256_HEX_OF_KEY [max_sessions=N] [max_calls=N]' per line; clients "
          "send 'authorization: Bearer KEY' (gRPC metadata or HTTP header). Re-read on SIGHUP. Every "
          "session and snapshot then belongs to the tenant whose key created it");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM certificate chain: serve gRPC over TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: require client certificates signed by it (mutual TLS); a certificate's "
          "common name is the tenant when the call sends no API key");
ABSL_FLAG(bool, allow_unauthenticated, false,
          "Allow --listen/--http_listen on a non-loopback address without --api_keys_file or "
          "--tls_client_ca_file (anyone who reaches the port can use every session)");
ABSL_FLAG(uint32_t, tenant_max_sessions, 0,
          "Sessions each tenant may hold loaded at once, unless its keys-file line says max_sessions; "
          "0 = no quota");
ABSL_FLAG(uint32_t, tenant_max_calls, 0,
          "Score/Generate calls each tenant may run at once, unless its keys-file line says "
          "max_calls; 0 = no quota");
ABSL_FLAG(std::string, replica_id, "",
          "This process's name in session leases when replicas share a Redis snapshot store; empty = "
          "HOSTNAME-PID-RANDOM. Must differ between replicas");
ABSL_FLAG(double, session_lease_s, 10,
          "With a Redis snapshot store: each loaded session holds a lease in the store for this long, "
          "renewed every third of it, so a session is live on one replica at a time; a crashed "
          "replica's sessions can be taken over this long after it stopped. 0 = no leases");
ABSL_FLAG(std::string, http_listen, "",
          "Address (host:port) of the OpenAI-compatible HTTP API and web page (README: HTTP API); "
          "port 0 picks a free one. Empty = off. It has no authentication: keep it on loopback");
ABSL_FLAG(int, http_threads, 16,
          "HTTP handler threads: requests served at once (each streaming response holds one)");
ABSL_FLAG(uint64_t, http_max_body_bytes, uint64_t{8} << 20,
          "Largest HTTP request body, bytes (413 beyond)");
ABSL_FLAG(uint32_t, http_max_prompts, 32, "Most prompts in one /v1/completions request");
ABSL_FLAG(uint32_t, http_stream_interval, 1,
          "Generated tokens per server-sent event after the first, for /v1/completions streams that do not "
          "set stream_interval (vLLM's --stream-interval): fewer events cost the server less per token");
ABSL_FLAG(int, http_timeout_s, 60,
          "HTTP read and write timeout, seconds: a client that stops sending or reading is cut off");
ABSL_FLAG(uint64_t, http_prefix_cache_bytes, uint64_t{256} << 20,
          "Host memory for prompt prefixes (a checkpoint and the prompt's scores) that later "
          "/v1/completions requests starting with the same tokens reuse instead of reading again; "
          "0 = off. Needs --checkpoints_per_session > 0");
ABSL_FLAG(int64_t, http_request_timeout_s, 0,
          "Deadline of one /v1/completions request, seconds, snapshot-store reads included (a stored "
          "session_id); 0 = none (the store's own timeouts then bound those reads)");

#ifndef BRT_GIT_COMMIT
#define BRT_GIT_COMMIT "unknown"
#endif

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "brt-server: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // A crash (SIGSEGV, SIGABRT, ...) prints the failing thread's stack to stderr before the process dies,
  // so a log says where it was. SIGTERM/SIGINT are blocked below and taken by sigwait, never by this.
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler(absl::FailureSignalHandlerOptions());
  // glibc serves large blocks with mmap and returns them on free, so the model's per-step temporaries
  // (megabytes at batch 8-64) were page-faulted afresh on every step: measured 5-7x slower steps. Keep
  // such blocks in the heap instead (the heap then stays at its peak, which the pools bound anyway).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // glibc gives threads their own heaps (up to 8 per core), each keeping its own peak: with dozens of
  // gRPC and HTTP threads, a whole-book request repeated on different threads raised the resident size
  // again and again (measured: +30 MB per request until every heap had seen it). BRT_MALLOC_ARENA_MAX=4
  // (an environment variable: it must be set before any thread starts) keeps memory flat, at a cost:
  // 8 concurrent scoring sessions ran 11% slower (6,142 vs 6,914 tokens/s). Default: glibc's.
  if (const char* env = std::getenv("BRT_MALLOC_ARENA_MAX"); env != nullptr && std::atoi(env) > 0) {
    mallopt(M_ARENA_MAX, std::atoi(env));
  }
  absl::SetProgramUsageMessage(
      "Serves a Block-Recurrent Transformer over gRPC (brt.v1.Brt).\n"
      "Usage: brt-server [--model_dir=DIR] [--listen=HOST:PORT] [--device=cpu|cuda:N] ...");
  absl::FlagsUsageConfig usage;
  // --help lists the flags defined in this file (absl's default looks for brt-server.cc).
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc") || absl::EndsWith(path, "server/runner_flags.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // --help and --helpfull print to stdout and exit 0, as command-line tools conventionally do (absl
  // exits 1).
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull" || arg == "-helpfull") {
      const bool full = absl::EndsWith(arg, "full");
      absl::flags_internal::SetProgramInvocationName(argv[0]);
      absl::flags_internal::FlagsHelp(std::cout, full ? "" : "server/main.cc",
                                      absl::flags_internal::HelpFormat::kHumanReadable,
                                      absl::ProgramUsageMessage());
      if (!full) {
        absl::flags_internal::FlagsHelp(std::cout, "server/runner_flags.cc",
                                        absl::flags_internal::HelpFormat::kHumanReadable, "");
      }
      return 0;
    }
  }
  absl::ParseCommandLine(argc, argv);
  // Links grpc.health.v1's descriptors, so that server reflection can describe the health service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();

  // Block termination signals in every thread; a dedicated thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // SIGHUP re-reads the API keys (a thread of its own waits for it).
  sigset_t hangup;
  sigemptyset(&hangup);
  sigaddset(&hangup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hangup, nullptr);

  std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (model_dir.empty()) model_dir = brt::startup::DefaultModelDir();
  std::string shim = absl::GetFlag(FLAGS_tokenizer_shim);
  if (shim.empty()) shim = brt::startup::ExecutableDir() + "/../lib/libbrt_spm_shim.so";

  auto tokenizer = brt::Tokenizer::Create(model_dir + "/tokenizer.model", shim);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::shared_ptr<const brt::Tokenizer> tok = *std::move(tokenizer);

  auto runner_options = brt::startup::RunnerOptionsFromFlags(model_dir + "/brt.pt", tok->sha256(),
                                                             absl::GetFlag(FLAGS_max_sessions));
  if (!runner_options.ok()) return Fail(runner_options.status());
  auto runner = brt::ModelRunner::Create(*runner_options);
  if (!runner.ok()) return Fail(runner.status());
  brt::startup::LogRunnerFallbacks(**runner);
  const std::string runner_description = brt::startup::DescribeRunner(**runner);

  brt::EngineOptions options;
  options.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.max_decode_batch = absl::GetFlag(FLAGS_max_decode_batch);
  options.max_blocks_per_call = absl::GetFlag(FLAGS_max_blocks_per_call);
  options.max_block_ends_per_step = absl::GetFlag(FLAGS_max_block_ends_per_step);
  options.decode_rows_per_block_end = absl::GetFlag(FLAGS_decode_rows_per_block_end);
  options.chunked_prefill_tokens = absl::GetFlag(FLAGS_chunked_prefill_tokens);
  options.checkpoint_recycle_bytes = absl::GetFlag(FLAGS_checkpoint_recycle_mb) << 20;
  options.checkpoint_prefill_bytes = absl::GetFlag(FLAGS_checkpoint_prefill_mb) << 20;
  options.feed_spans = absl::GetFlag(FLAGS_feed_spans);
  options.mixed_batches = absl::GetFlag(FLAGS_mixed_batches);
  options.max_chunk_bytes = absl::GetFlag(FLAGS_max_chunk_bytes);
  options.max_line_bytes = absl::GetFlag(FLAGS_max_line_bytes);
  if (options.max_line_bytes == 0) {
    return Fail(absl::InvalidArgumentError("--max_line_bytes must be > 0 (default 1048576)"));
  }
  if (absl::GetFlag(FLAGS_grpc_memory_quota_mb) < 16) {
    return Fail(absl::InvalidArgumentError("--grpc_memory_quota_mb must be >= 16 (default 1024)"));
  }
  if (absl::GetFlag(FLAGS_grpc_max_streams_per_connection) == 0) {
    return Fail(absl::InvalidArgumentError(
        "--grpc_max_streams_per_connection must be > 0 (default 256)"));
  }
  options.max_tokens_cap = absl::GetFlag(FLAGS_max_tokens_cap);
  options.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  options.max_top_k = absl::GetFlag(FLAGS_max_top_k);
  options.idle_call_timeout_ms = static_cast<int64_t>(absl::GetFlag(FLAGS_idle_timeout_s) * 1000);
  options.default_sampling.repetition_window = absl::GetFlag(FLAGS_repetition_window);
  const brt::ModelMetadata meta = (*runner)->metadata();

  // Session persistence: created before the engine, destroyed after it.
  std::unique_ptr<brt::persistence::SnapshotStore> store;
  const std::string store_uri = absl::GetFlag(FLAGS_snapshot_store);
  if (!store_uri.empty()) {
    auto created = brt::startup::OpenSnapshotStore(store_uri);
    if (!created.ok()) return Fail(created.status());
    store = *std::move(created);
    options.snapshot_store = store.get();
  }
  if (const std::string key_file = absl::GetFlag(FLAGS_snapshot_hmac_key_file); !key_file.empty()) {
    auto key = brt::startup::ReadHmacKey(key_file);
    if (!key.ok()) return Fail(key.status());
    options.snapshot_hmac_key = *std::move(key);
  }
  options.session_idle_ttl_ms = absl::GetFlag(FLAGS_session_idle_ttl_s) * 1000;
  options.session_memory_budget_bytes = absl::GetFlag(FLAGS_session_memory_budget_bytes);
  options.autosave_every_blocks = absl::GetFlag(FLAGS_autosave_every_blocks);
  if (const double lease_s = absl::GetFlag(FLAGS_session_lease_s); lease_s > 0) {
    options.lease_ttl_ms = static_cast<int64_t>(lease_s * 1000);
    options.replica_id = absl::GetFlag(FLAGS_replica_id);
    if (options.replica_id.empty()) options.replica_id = brt::startup::DefaultReplicaId();
  } else if (lease_s < 0) {
    return Fail(absl::InvalidArgumentError("--session_lease_s must be >= 0 (default 10; 0 = off)"));
  }
  options.checkpoints_per_session = absl::GetFlag(FLAGS_checkpoints_per_session);
  options.checkpoint_interval_blocks = absl::GetFlag(FLAGS_checkpoint_interval_blocks);
  if (options.checkpoint_interval_blocks == 0) {
    return Fail(absl::InvalidArgumentError("--checkpoint_interval_blocks must be >= 1 (default 2)"));
  }
  if (store == nullptr && (options.session_idle_ttl_ms > 0 || options.session_memory_budget_bytes > 0 ||
                           options.autosave_every_blocks > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--session_idle_ttl_s, --session_memory_budget_bytes and --autosave_every_blocks need "
        "--snapshot_store"));
  }

  // Metrics: created before the engine and destroyed after it (the engine and service record into
  // them); the exposer serves the registry and the process collector on its own threads.
  constexpr char kVersion[] = "0.1.0";
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
  std::unique_ptr<brt::metrics::Metrics> metrics;
  std::unique_ptr<brt::metrics::MetricsExposer> exposer;
  if (!metrics_address.empty()) {
    auto started = brt::startup::StartMetrics(metrics_address, meta, kVersion, BRT_GIT_COMMIT);
    if (!started.ok()) return Fail(started.status());
    metrics = std::move(started->metrics);
    exposer = std::move(started->exposer);
    options.metrics = metrics.get();
  }

  auto engine = brt::Engine::Create(options, *std::move(runner), tok);
  if (!engine.ok()) return Fail(engine.status());

  brt::BrtServiceOptions service_options;
  service_options.max_reply_bytes = absl::GetFlag(FLAGS_max_reply_bytes);
  service_options.max_pending_reply_bytes = absl::GetFlag(FLAGS_max_pending_reply_bytes);
  service_options.max_calls_per_peer = absl::GetFlag(FLAGS_max_calls_per_peer);
  service_options.blocking_threads = static_cast<int>(absl::GetFlag(FLAGS_blocking_threads));
  service_options.blocking_queue = absl::GetFlag(FLAGS_blocking_queue);
  if (service_options.blocking_threads < 1 || service_options.blocking_threads > 1024 ||
      service_options.blocking_queue == 0) {
    return Fail(absl::InvalidArgumentError(
        "--blocking_threads must be in [1, 1024] (default 8) and --blocking_queue > 0 (default 256)"));
  }
  const uint64_t max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (service_options.max_reply_bytes < 1024 || service_options.max_reply_bytes > max_message_bytes) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--max_reply_bytes must be in [1024, --max_message_bytes=", max_message_bytes, "], got ",
        service_options.max_reply_bytes)));
  }
  if (service_options.max_pending_reply_bytes == 0) {
    return Fail(absl::InvalidArgumentError("--max_pending_reply_bytes must be > 0 (default 16777216)"));
  }
  // Authentication and tenants (server/auth), TLS, and the refusal to serve a non-loopback address
  // to anyone.
  brt::TlsFiles tls{absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
                    absl::GetFlag(FLAGS_tls_client_ca_file)};
  auto credentials = brt::MakeServerCredentials(tls);
  if (!credentials.ok()) return Fail(credentials.status());
  brt::auth::AuthOptions auth_options;
  auth_options.api_keys_file = absl::GetFlag(FLAGS_api_keys_file);
  auth_options.mtls = !tls.client_ca_file.empty();
  auth_options.default_max_sessions = absl::GetFlag(FLAGS_tenant_max_sessions);
  auth_options.default_max_calls = absl::GetFlag(FLAGS_tenant_max_calls);
  auto authenticator = brt::auth::Authenticator::Create(auth_options);
  if (!authenticator.ok()) return Fail(authenticator.status());
  const std::string listen = absl::GetFlag(FLAGS_listen);
  if (!(*authenticator)->required() && !absl::GetFlag(FLAGS_allow_unauthenticated)) {
    for (const std::string& address : {listen, absl::GetFlag(FLAGS_http_listen)}) {
      if (address.empty() || brt::IsLoopbackListen(address)) continue;
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          address, " is not a loopback address and the server has no --api_keys_file or "
          "--tls_client_ca_file, so anyone who reaches it could read and change every session. "
          "Configure API keys or mutual TLS, listen on 127.0.0.1, or pass --allow_unauthenticated")));
    }
  }
  brt::startup::StartKeyReloader(&hangup, authenticator->get());

  brt::BrtService service(engine->get(), kVersion, metrics.get(), service_options,
                          authenticator->get());
  grpc::EnableDefaultHealthCheckService(true);
  if (absl::GetFlag(FLAGS_reflection)) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *credentials, &port);
  // No SO_REUSEPORT: a second server on a busy port must fail to start, not split its clients.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  grpc::ResourceQuota quota("brt-server");
  quota.Resize(size_t{absl::GetFlag(FLAGS_grpc_memory_quota_mb)} << 20);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(absl::GetFlag(FLAGS_grpc_max_streams_per_connection)));
  const int max_message = static_cast<int>(absl::GetFlag(FLAGS_max_message_bytes));
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat(
        "cannot listen on ", listen, ": the address is in use (another brt-server?) or not a local "
        "HOST:PORT; stop the other process or choose another --listen")));
  }
  std::fprintf(stderr,
               "brt-server: model %s (W=%d, S=%d, L=%d, vocab %d, %s/%s%s, %llu state bytes/session) from %s\n",
               meta.name.c_str(), meta.window, meta.n_state, meta.n_layers, meta.vocab_size,
               meta.device.c_str(), meta.dtype.c_str(), runner_description.c_str(),
               static_cast<unsigned long long>(meta.state_bytes), model_dir.c_str());
  std::string host = listen.substr(0, listen.rfind(':'));
  std::fprintf(stderr, "brt-server: listening on %s:%d (%s%s)\n", host.c_str(), port,
               tls.cert_file.empty() ? "plaintext" : (tls.client_ca_file.empty() ? "TLS" : "mutual TLS"),
               auth_options.api_keys_file.empty() ? "" : ", API keys");
  if (store != nullptr) {
    std::fprintf(stderr, "brt-server: snapshot store %s%s%s%s\n", store->Describe().c_str(),
                 options.snapshot_hmac_key ? " (signed)" : "",
                 store->has_leases() && !options.replica_id.empty() ? ", session leases as replica " : "",
                 store->has_leases() ? options.replica_id.c_str() : "");
  }
  std::unique_ptr<brt::http::HttpServer> http;
  if (const std::string http_listen = absl::GetFlag(FLAGS_http_listen); !http_listen.empty()) {
    brt::http::HttpServerOptions http_options;
    http_options.listen = http_listen;
    http_options.threads = absl::GetFlag(FLAGS_http_threads);
    http_options.max_body_bytes = absl::GetFlag(FLAGS_http_max_body_bytes);
    http_options.max_prompts = absl::GetFlag(FLAGS_http_max_prompts);
    http_options.stream_interval = absl::GetFlag(FLAGS_http_stream_interval);  // 0 acts as 1
    http_options.read_timeout_s = absl::GetFlag(FLAGS_http_timeout_s);
    http_options.write_timeout_s = absl::GetFlag(FLAGS_http_timeout_s);
    http_options.request_timeout_s = absl::GetFlag(FLAGS_http_request_timeout_s);
    http_options.prefix_cache_bytes = absl::GetFlag(FLAGS_http_prefix_cache_bytes);
    http_options.auth = authenticator->get();
    auto started = brt::http::HttpServer::Start(engine->get(), http_options);
    if (!started.ok()) {
      server->Shutdown();
      return Fail(started.status());
    }
    http = *std::move(started);
    std::string http_host = http_listen.substr(0, http_listen.rfind(':'));
    std::fprintf(stderr, "brt-server: HTTP API on http://%s:%d/ (OpenAI-compatible /v1)\n",
                 http_host.c_str(), http->port());
  }
  if (exposer != nullptr) {
    std::string metrics_host = metrics_address.substr(0, metrics_address.rfind(':'));
    std::fprintf(stderr, "brt-server: metrics on http://%s:%d/metrics\n", metrics_host.c_str(),
                 exposer->port());
  }
  std::fflush(stderr);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "brt-server: signal %d, shutting down\n", sig);
    // A second signal, or a shutdown that takes too long, ends the process at once. Snapshots already
    // written are complete (stores write atomically); the sessions not yet saved are lost.
    std::thread([&signals] {
      int again = 0;
      sigwait(&signals, &again);
      std::fprintf(stderr, "brt-server: second signal %d, exiting now\n", again);
      std::fflush(stderr);
      _exit(2);
    }).detach();
    const int limit_s = absl::GetFlag(FLAGS_shutdown_timeout_s);
    if (limit_s > 0) {
      std::thread([limit_s] {
        std::this_thread::sleep_for(std::chrono::seconds(limit_s));
        std::fprintf(stderr, "brt-server: shutdown took over %d s (--shutdown_timeout_s), exiting now\n",
                     limit_s);
        std::fflush(stderr);
        _exit(3);
      }).detach();
    }
    // Graceful: stop taking work, end active calls at a token/block boundary, snapshot every session.
    server->GetHealthCheckService()->SetServingStatus(false);
    if (http != nullptr) http->SetDraining();
    (*engine)->Drain();
    if (store != nullptr) {
      auto saved = (*engine)->SaveAllSessions();
      if (saved.ok()) {
        std::fprintf(stderr, "brt-server: saved %zu sessions to %s\n", *saved,
                     store->Describe().c_str());
      } else {
        std::fprintf(stderr, "brt-server: saving sessions failed: %s\n",
                     saved.status().ToString().c_str());
      }
    }
    // The exposer takes ~2 s to stop once it has served a scrape: stop it while gRPC drains.
    std::thread stop_exposer([&] { exposer.reset(); });
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (http != nullptr) http->Stop();
    stop_exposer.join();
  });
  server->Wait();
  waiter.join();
  service.WaitForBlockingWork();  // calls the pool took before the shutdown still use the engine
  engine->reset();  // after the server and the pool: nothing can reach the engine any more
  return 0;
}
