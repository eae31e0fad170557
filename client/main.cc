// brt: the command-line client of brt-server. Dispatches to one subcommand (client/commands/).
#include <grpc/support/log.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "client/commands/commands.h"
#include "client/rpc/interrupt.h"

namespace {

constexpr char kHelp[] =
    "Usage: brt COMMAND [options] [args]\n"
    "\n"
    "The command-line client of brt-server (Block-Recurrent Transformer language models).\n"
    "\n"
    "Commands:\n"
    "  generate [PROMPT]          stream a completion (prompt from the argument or stdin)\n"
    "  score FILE...              score books: tokens, NLL, perplexity, bits per token and byte\n"
    "  compare FILE               state carried vs. reset every N blocks, and the tokens that "
    "gain\n"
    "  plot INPUT...              PNGs: cumulative cross-entropy, per-token difference\n"
    "  sessions list|info|create|delete\n"
    "                             the server's sessions\n"
    "  save SESSION_ID            snapshot a session (server store and/or --out=FILE)\n"
    "  restore KEY | --from=FILE  load a saved session\n"
    "  fork SESSION_ID            copy a session into a new one (--position: as it was then)\n"
    "  rewind SESSION_ID POSITION go back to an earlier position, exactly\n"
    "  snapshots list|delete      the server's snapshot store\n"
    "  health                     is the server serving; its model and limits\n"
    "\n"
    "Options common to commands that talk to the server (before or after COMMAND):\n"
    "  --server=HOST:PORT         server address (env BRT_SERVER; default 127.0.0.1:50051)\n"
    "  --api_key=KEY              sent as 'authorization: Bearer KEY' (env BRT_API_KEY);\n"
    "                             it names the tenant on a server with --api_keys_file\n"
    "  --tls, --tls_root_cert=PEM TLS, with the system's or this root certificate\n"
    "  --tls_cert=PEM --tls_key=PEM  this client's certificate (mutual TLS; env BRT_TLS_CERT,\n"
    "                             BRT_TLS_KEY)\n"
    "  --timeout=SECONDS          deadline per call\n"
    "\n"
    "Errors print 'brt: CODE: message' (CODE a gRPC status code) and exit 1; usage errors exit 2.\n"

    "`brt COMMAND --help` describes each command.\n";

// gRPC's own log lines (e.g. a failed TLS handshake) would repeat, less clearly, the error the tool
// prints; they are dropped unless the user asks for them with GRPC_VERBOSITY or GRPC_TRACE.
void DropGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  brt::client::Interrupts::Install();  // first: before gRPC starts threads
  if (std::getenv("GRPC_VERBOSITY") == nullptr && std::getenv("GRPC_TRACE") == nullptr) {
    gpr_set_log_function(DropGrpcLog);
  }
  std::vector<std::string> leading, rest;
  std::string command;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (command.empty() && a.rfind("--", 0) == 0 && a != "--help") {
      leading.push_back(a);
      // "--server HOST" form: the value travels with its option.
      if (a.find('=') == std::string::npos && a != "--tls" && i + 1 < argc)
        leading.push_back(argv[++i]);
    } else if (command.empty() && a != "--help" && a != "-h") {
      command = a;
    } else if (command.empty()) {
      std::fputs(kHelp, stdout);
      return 0;
    } else {
      rest.push_back(a);
    }
  }
  if (command.empty()) {
    std::fputs(kHelp, stderr);
    return 2;
  }
  if (command == "help") {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::vector<std::string> args = leading;
  args.insert(args.end(), rest.begin(), rest.end());
  using namespace brt::client;
  if (command == "generate") return RunGenerate(args);
  if (command == "score") return RunScore(args);
  if (command == "compare") return RunCompare(args);
  if (command == "plot") return RunPlot(args);
  if (command == "sessions") return RunSessions(args);
  if (command == "health") return RunHealth(args);
  if (command == "save") return RunSave(args);
  if (command == "restore") return RunRestore(args);
  if (command == "fork") return RunFork(args);
  if (command == "rewind") return RunRewind(args);
  if (command == "snapshots") return RunSnapshots(args);
  std::fprintf(stderr, "brt: unknown command '%s' (see brt --help)\n", command.c_str());
  return 2;
}
