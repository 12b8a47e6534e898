// The checks of what Python passes in (args.h).
#include "python/ext/args.h"

#include <bit>
#include <cstring>

#include "rdmaps/error.h"

namespace py = pybind11;

namespace rdmaps::python {

Config parse_flags(const std::vector<std::string>& flags) {
  Config config;
  std::vector<std::string> rest;
  parse_config(config, flags, &rest);
  if (!rest.empty()) throw Error(Errc::kInvalidArgument, "unknown configuration option '" + rest[0] + "'");
  return config;
}

namespace {

// Whether a buffer format is float32 in this machine's byte order, in any
// of struct's spellings: numpy and array.array give 'f', ctypes '<f' (it
// names the byte order even where it is the machine's).
bool native_float(const std::string& format) {
  if (format == "f") return true;
  constexpr char own = std::endian::native == std::endian::little ? '<' : '>';
  return format.size() == 2 && format[1] == 'f' && (format[0] == '@' || format[0] == '=' || format[0] == own);
}

}  // namespace

// `seconds` as a bound on waits, or an error naming `who`: a cast of inf, nan
// or 1e30 to milliseconds is undefined (it gave "within -9223 s").
std::chrono::milliseconds checked_timeout(const char* who, double seconds) {
  if (!(seconds >= 0.001 && seconds <= 1e9))
    throw Error(Errc::kInvalidArgument, std::string(who) + ": timeout=" + std::to_string(seconds) +
                                            " is not a number of seconds from 0.001 (a millisecond) to 1e9");
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// The arguments of push/pull/init/declare, taken as objects and checked here:
// pybind11's own refusal lists every signature and names no argument.
std::string name_arg(const py::handle& name, const char* op) {
  if (!py::isinstance<py::str>(name))
    throw py::type_error(std::string(op) + ": name=" + py::repr(name).cast<std::string>() + " is not a str");
  return name.cast<std::string>();
}
py::buffer buffer_arg(const py::handle& value, const char* op, const std::string& name) {
  if (py::isinstance<py::buffer>(value)) return py::reinterpret_borrow<py::buffer>(value);
  const auto type = py::type::of(value);
  const std::string module = py::str(type.attr("__module__")), what = py::str(type.attr("__name__"));
  throw py::type_error(
      std::string(op) + "('" + name + "'): a " + what +
      " is not a float32 buffer (a numpy array, array.array('f'), ...)" +
      (module.rfind("torch", 0) == 0 ? "; a torch tensor: pass tensor.numpy(), or train with rdmaps.torch" : ""));
}

// A float32 C-contiguous view of `buffer`, or a TypeError/ValueError naming
// the operation and tensor.
std::pair<float*, size_t> float_view(const py::buffer& buffer, bool writable, const char* op, const std::string& name) {
  const std::string where = std::string(op) + "('" + name + "')";
  py::buffer_info info;
  try {
    info = buffer.request(writable);
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_BufferError) && !e.matches(PyExc_ValueError)) throw;
    throw py::value_error(where + ": " + (writable ? "the output buffer must be writable: " : "") + e.what());
  }
  // "Xf" that is not native is float32 in the other byte order ('>', '!' or '<').
  if (info.format.size() == 2 && info.format[1] == 'f' && std::strchr("<>!=", info.format[0]) &&
      !native_float(info.format))
    throw py::type_error(where + ": needs float32 data in this machine's byte order (" +
                         (std::endian::native == std::endian::little ? "little" : "big") +
                         "-endian), got buffer format '" + info.format + "'; convert it first");
  if (!native_float(info.format) || info.itemsize != sizeof(float))
    throw py::type_error(where + ": needs float32 data, got buffer format '" + info.format + "' of " +
                         std::to_string(info.itemsize) + "-byte items");
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] > 1 && info.strides[d] != expected)
      throw py::value_error(where + ": needs contiguous (C-order) data; make a contiguous copy first");
    expected *= info.shape[d];
  }
  return {static_cast<float*>(info.ptr), static_cast<size_t>(info.size)};
}

// A buffer export of `buffer`, held while rdmaps may read or write its
// memory: array.array, bytearray and numpy refuse to resize or free memory
// with one outstanding (BufferError), where a reference to the object alone
// let them move it under a registration or an operation.
py::object pinned(const py::buffer& buffer) {
  PyObject* view = PyMemoryView_FromObject(buffer.ptr());
  if (view == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(view);
}

size_t floats_of_bytes(uint64_t nbytes, const char* op, const std::string& name) {
  if (nbytes % sizeof(float) != 0)
    throw Error(Errc::kInvalidArgument,
                std::string(op) + "('" + name + "'): " + std::to_string(nbytes) + " bytes is not whole float32s");
  return nbytes / sizeof(float);
}

}  // namespace rdmaps::python
