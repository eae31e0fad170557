// The `brt` subcommands. Each takes its arguments (after the subcommand name) and returns the
// process exit status: 0 success, 1 an error (printed to stderr as "brt: CODE: message"), 2 a usage
// error, 130 interrupted (Ctrl-C cancels the calls in flight; sessions the command created are
// deleted).
#ifndef BRT_CLIENT_COMMANDS_COMMANDS_H_
#define BRT_CLIENT_COMMANDS_COMMANDS_H_

#include <string>
#include <vector>

namespace brt::client {

using Args = std::vector<std::string>;

int RunGenerate(const Args& args);
int RunScore(const Args& args);
int RunCompare(const Args& args);
int RunPlot(const Args& args);
int RunSessions(const Args& args);
int RunHealth(const Args& args);
int RunSave(const Args& args);
int RunRestore(const Args& args);
int RunFork(const Args& args);
int RunRewind(const Args& args);
int RunSnapshots(const Args& args);

}  // namespace brt::client

#endif  // BRT_CLIENT_COMMANDS_COMMANDS_H_
