// Whether this test binary runs under AddressSanitizer (scripts/test.sh builds
// the transport and server tests a second time with it).
#pragma once

namespace rdmaps::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace rdmaps::test
