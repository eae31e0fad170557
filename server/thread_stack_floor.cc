// A floor under pthread_attr_setstacksize for the whole brt-server process.
//
// Why: civetweb (the HTTP server under prometheus-cpp's Exposer; Debian builds it with
// USE_STACK_SIZE=102400) creates its threads with a fixed 100 KiB stack. glibc places a thread's
// static TLS at the top of its stack and fails pthread_create with EINVAL when the stack is smaller
// than the static TLS block. brt-server links LibTorch, OpenBLAS (60 KiB of TLS) and glog, ~106 KiB
// of static TLS in all, so without this the /metrics exposer cannot start a single thread
// ("null context when constructing CivetServer").
//
// How: this definition in the executable interposes on libc's for every shared library's call
// (exported with --export-dynamic-symbol, see CMakeLists.txt). Requests below kMinStackBytes are
// raised to it; larger ones pass through unchanged. Raising a stack size only reserves more
// virtual memory for the few threads that ask for small stacks.
#include <dlfcn.h>
#include <pthread.h>

#include <cstddef>

namespace {
constexpr size_t kMinStackBytes = size_t{1} << 20;
using SetStackSizeFn = int (*)(pthread_attr_t*, size_t);
}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  static const SetStackSizeFn real =
      reinterpret_cast<SetStackSizeFn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real(attr, size < kMinStackBytes ? kMinStackBytes : size);
}
