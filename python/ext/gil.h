// Waiting without the GIL, safely at interpreter exit, and answering Ctrl-C.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <exception>
#include <thread>

#ifdef __GLIBCXX__
#include <cxxabi.h>
#endif

namespace rdmaps::python {

inline bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// Runs `f` with the GIL released and takes the GIL back in plain code, never
// in a destructor (pybind11's gil_scoped_release). CPython ends a thread
// other than the finalizing one that asks for the GIL while the interpreter
// finalizes (a daemon thread still in a call at exit) with pthread_exit,
// which unwinds its stack: out of that noexcept destructor the process
// aborted ("terminate called without an active exception"), and the unwind
// would drop the Python objects our frames hold without the GIL. So such a
// thread sleeps until the process ends instead, as CPython 3.14 does with
// its own (pybind11's advice, disarm() after _Py_IsFinalizing(), leaves a
// race with finalization starting after that check). An exception of `f`
// is raised once the GIL is back.
template <typename F>
void without_gil(F&& f) {
  PyThreadState* state = PyEval_SaveThread();
  std::exception_ptr error;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
#ifdef __GLIBCXX__
  try {
    PyEval_RestoreThread(state);
  } catch (abi::__forced_unwind&) {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));  // leaving this handler but by a rethrow aborts
  }
#else
  PyEval_RestoreThread(state);
#endif
  if (error) std::rethrow_exception(error);
}

// How often a wait looks for a pending signal: Ctrl-C answers within this.
inline constexpr std::chrono::milliseconds kSignalCheck{50};

}  // namespace rdmaps::python
