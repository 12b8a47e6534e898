#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rdmaps {

/// Bytes of the UTF-8 character at `i` (RFC 3629: no overlong forms, no
/// surrogates, nothing past U+10FFFF), or 0 where none starts there.
inline size_t utf8_char_length(std::string_view text, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned b = at(i);
  size_t n = 0;
  unsigned low = 0x80, high = 0xbf;  // the second byte's range
  if (b < 0x80)
    n = 1;
  else if (b >= 0xc2 && b <= 0xdf)
    n = 2;
  else if (b >= 0xe0 && b <= 0xef)
    n = 3, low = b == 0xe0 ? 0xa0 : 0x80, high = b == 0xed ? 0x9f : 0xbf;
  else if (b >= 0xf0 && b <= 0xf4)
    n = 4, low = b == 0xf0 ? 0x90 : 0x80, high = b == 0xf4 ? 0x8f : 0xbf;
  if (n == 0 || i + n > text.size()) return 0;
  if (n > 1 && (at(i + 1) < low || at(i + 1) > high)) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((at(i + k) >> 6) != 0x2) return 0;
  return n;
}

/// `text` as one line shown as it is: control characters (C0, DEL, C1, and
/// U+2028/U+2029, where Python's splitlines() breaks) and bytes that are not
/// UTF-8 become '?'. A peer's newline or escape forged a line, or a screen,
/// of its own; a NUL cut the line short.
inline std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_char_length(text, i);
    const auto b = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
    const bool as_is = (n == 1 && b(0) >= 0x20 && b(0) != 0x7f) || (n == 2 && !(b(0) == 0xc2 && b(1) <= 0x9f)) ||
                       (n == 3 && !(b(0) == 0xe2 && b(1) == 0x80 && (b(2) == 0xa8 || b(2) == 0xa9))) || n == 4;
    if (as_is)
      out.append(text, i, n);
    else
      out += '?';
    i += n ? n : 1;
  }
  return out;
}

/// Where `text` stops being UTF-8, or npos.
inline size_t utf8_error_at(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_char_length(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace rdmaps
