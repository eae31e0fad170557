#include "client/rpc/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace brt::client {
namespace {

std::atomic<bool> g_requested{false};

absl::Mutex& Mu() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

// Contexts of the calls in flight that an interrupt cancels.
std::set<grpc::ClientContext*>& Active() ABSL_EXCLUSIVE_LOCKS_REQUIRED(Mu()) {
  static auto* active = new std::set<grpc::ClientContext*>();
  return *active;
}

void Watch(sigset_t set) {
  while (true) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    // A second signal, or one while no call is in flight (nothing to clean up; the main thread may
    // be blocked reading stdin): leave now, as an unhandled signal would.
    absl::MutexLock lock(&Mu());
    if (g_requested.exchange(true) || Active().empty()) _exit(128 + sig);
    for (grpc::ClientContext* ctx : Active()) ctx->TryCancel();
  }
}

}  // namespace

void Interrupts::Install() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(Watch, set).detach();
}

bool Interrupts::Requested() { return g_requested.load(); }

Interrupts::CancelScope::CancelScope(grpc::ClientContext* ctx) : ctx_(ctx) {
  absl::MutexLock lock(&Mu());
  Active().insert(ctx_);
  if (g_requested.load()) ctx_->TryCancel();
}

Interrupts::CancelScope::~CancelScope() {
  absl::MutexLock lock(&Mu());
  Active().erase(ctx_);
}

}  // namespace brt::client
