// Session ids: "s_" + 32 hex digits of 128 bits from the OS CSPRNG (/dev/urandom via
// std::random_device on Linux/glibc). Never derived from a counter or the clock, so ids cannot be
// guessed.
#ifndef BRT_SERVER_CORE_SESSION_ID_H_
#define BRT_SERVER_CORE_SESSION_ID_H_

#include <string>

namespace brt {

std::string NewSessionId();
// True if id has the shape of a session id (used to reject garbage early).
bool LooksLikeSessionId(const std::string& id);

}  // namespace brt

#endif  // BRT_SERVER_CORE_SESSION_ID_H_
