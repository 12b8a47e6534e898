// The checks of what Python passes in: a call's own arguments, each refused
// with a TypeError or ValueError naming the operation, tensor and argument
// (pybind11's own refusal lists every signature and names none).
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rdmaps/config.h"

namespace rdmaps::python {

/// The configuration these flags (and RDMAPS_* variables) give; an unknown flag is refused.
Config parse_flags(const std::vector<std::string>& flags);
/// `seconds` as a bound on waits, or an error naming `who`.
std::chrono::milliseconds checked_timeout(const char* who, double seconds);
/// The tensor name of `op`, which must be a str.
std::string name_arg(const pybind11::handle& name, const char* op);
/// `value` as a buffer, or a TypeError that says what to pass instead.
pybind11::buffer buffer_arg(const pybind11::handle& value, const char* op, const std::string& name);
/// A float32 C-contiguous view of `buffer`: its address and float count.
std::pair<float*, size_t> float_view(const pybind11::buffer& buffer, bool writable, const char* op,
                                     const std::string& name);
/// A buffer export of `buffer`, held while rdmaps may read or write its memory.
pybind11::object pinned(const pybind11::buffer& buffer);
/// `nbytes` as a float count, refused where it is not whole float32s.
size_t floats_of_bytes(uint64_t nbytes, const char* op, const std::string& name);

}  // namespace rdmaps::python
