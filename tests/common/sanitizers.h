// Whether this test binary runs under a sanitizer: AddressSanitizer
// (scripts/test.sh builds the transport and server tests a second time with
// it) or ThreadSanitizer (by hand: -Db_sanitize=thread), both several times
// slower than a plain build.
#pragma once

namespace rdmaps::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace rdmaps::test
