// rdmaps.Error and its kinds, and how a C++ rdmaps::Error is raised as one.
#pragma once

#include <pybind11/pybind11.h>

namespace rdmaps::python {

/// Makes rdmaps.Error, InvalidArgument, Timeout, PeerGone and RefusedForNow
/// (each also a subclass of the builtin it resembles), adds them to `m`, and
/// registers the translation of rdmaps::Error into them (its `code` attribute
/// is the Errc's name).
void add_error_classes(pybind11::module_& m);

}  // namespace rdmaps::python
