// Ctrl-C handling for the tool: SIGINT/SIGTERM cancel the streaming RPCs in flight instead of
// killing the process, so a command can still delete the sessions it created and exit cleanly
// (status 130). A signal while no such call is in flight, or a second signal, exits at once.
//
// Install() blocks the signals in the calling thread, so it must run first in main(), before any
// thread (gRPC's included) exists: threads inherit the mask, and a watcher thread takes the signals
// with sigwait(). Thread-safe: CancelScope may be used from any thread.
#ifndef BRT_CLIENT_RPC_INTERRUPT_H_
#define BRT_CLIENT_RPC_INTERRUPT_H_

#include <grpcpp/client_context.h>

namespace brt::client {

class Interrupts {
 public:
  // REQUIRES: called once, from main(), before other threads start.
  static void Install();
  // True once SIGINT or SIGTERM arrived.
  static bool Requested();

  // While alive, an interrupt cancels `ctx` (at once if one already arrived).
  class CancelScope {
   public:
    explicit CancelScope(grpc::ClientContext* ctx);
    ~CancelScope();
    CancelScope(const CancelScope&) = delete;
    CancelScope& operator=(const CancelScope&) = delete;

   private:
    grpc::ClientContext* ctx_;
  };
};

}  // namespace brt::client

#endif  // BRT_CLIENT_RPC_INTERRUPT_H_
