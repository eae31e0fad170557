// Names for the server's own threads (the core's executor, deliverer and housekeeper, the model runner's
// workers), so that top -H, perf and /proc show which is which.
//
// Thread safety: each function acts on the calling thread only.
#ifndef BRT_SERVER_THREAD_SETUP_H_
#define BRT_SERVER_THREAD_SETUP_H_

#include <string>

namespace brt {

// The calling thread's name (at most 15 bytes are kept). Linux only; elsewhere nothing.
void NameThisThread(const std::string& name);

}  // namespace brt

#endif  // BRT_SERVER_THREAD_SETUP_H_
