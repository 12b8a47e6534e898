// rdmaps.Error and its kinds (errors.h).
#include "python/ext/errors.h"

#include <cstring>
#include <exception>

#include "rdmaps/error.h"

namespace py = pybind11;

namespace rdmaps::python {
namespace {

// Python classes of our errors; set at import.
PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_timeout = nullptr;
PyObject* g_peer_gone = nullptr;
PyObject* g_refused_for_now = nullptr;

PyObject* python_class(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
    case Errc::kOutOfBounds:
      return g_invalid_argument;
    case Errc::kTimeout:
      return g_timeout;
    case Errc::kPeerGone:
    case Errc::kUnreachable:
      return g_peer_gone;
    case Errc::kRefusedForNow:
      return g_refused_for_now;
    default:
      return g_error;
  }
}

}  // namespace

void add_error_classes(py::module_& m) {
  g_error = PyErr_NewException("rdmaps.Error", PyExc_RuntimeError, nullptr);
  auto make = [&](const char* name, PyObject* builtin) {
    py::tuple bases = py::make_tuple(py::handle(g_error), py::handle(builtin));
    return PyErr_NewException(name, bases.ptr(), nullptr);
  };
  g_invalid_argument = make("rdmaps.InvalidArgument", PyExc_ValueError);
  g_timeout = make("rdmaps.Timeout", PyExc_TimeoutError);
  g_peer_gone = make("rdmaps.PeerGone", PyExc_ConnectionError);
  g_refused_for_now = make("rdmaps.RefusedForNow", PyExc_ConnectionRefusedError);
  m.attr("Error") = py::handle(g_error);
  m.attr("InvalidArgument") = py::handle(g_invalid_argument);
  m.attr("Timeout") = py::handle(g_timeout);
  m.attr("PeerGone") = py::handle(g_peer_gone);
  m.attr("RefusedForNow") = py::handle(g_refused_for_now);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      // Not strictly UTF-8: a message may quote bytes of a file name, a
      // variable or a peer, and a strict decode raised UnicodeDecodeError
      // in place of the error.
      const char* what = e.what();
      auto text = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace"));
      if (!text) return;  // out of memory: raised as such
      py::object error = py::reinterpret_borrow<py::object>(python_class(e.code()))(text);
      error.attr("code") = errc_name(e.code());
      PyErr_SetObject(python_class(e.code()), error.ptr());
    }
  });
}

}  // namespace rdmaps::python
