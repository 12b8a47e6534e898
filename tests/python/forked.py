"""Forked children in the tests: waiting for one that may hang, and running a
job's process as a fork of the test runner instead of a fresh interpreter.

A fresh interpreter imports torch again: 2.4 CPU-seconds each, and the torch
tests start about fifty processes (session 50: most of python-torch's CPU
time, on a CI machine whose limit is its two cores). A fork of a runner that
has imported torch and rdmaps, and started no thread, is that interpreter
with those imports done: the child gets its own environment, argv, output
files, warning filters and exit handlers, as `python SCRIPT` would."""

import atexit
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings

# The interpreter's own filters, before unittest's runner turns warnings on.
_START_FILTERS = list(warnings.filters)


def wait_or_kill(pid, seconds):
    """The child's exit code, or None after killing it when it is still running after `seconds` (it hung)."""
    for _ in range(int(seconds / 0.05)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _threads_started():
    return len(os.listdir("/proc/self/task")) > 1


class Child:
    """`python SCRIPT ARGS...` (argv) or `python -c CODE ARGS...` (code=CODE, argv=ARGS) with `env` as its
    whole environment, in a fork of this process. Output goes to files, so no pipe fills while the test
    waits for a sibling. Falls back to a fresh interpreter where forking is unsafe (threads running)."""

    def __init__(self, argv, env, code=None, merge_output=True):
        self._out = tempfile.TemporaryFile()
        self._err = self._out if merge_output else tempfile.TemporaryFile()
        self.returncode = None
        if _threads_started():  # a thread holding a lock at the fork would hold it in the child forever
            command = [sys.executable] + (["-c", code] if code is not None else []) + list(argv)
            self._popen = subprocess.Popen(command, env=env, stdout=self._out, stderr=self._err)
            self.pid = self._popen.pid
            return
        self._popen = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(argv, env, code, self._out.fileno(), self._err.fileno())
        self.pid = pid

    def wait(self, timeout):
        """The exit code (-N: killed by signal N); raises subprocess.TimeoutExpired after killing the child."""
        if self._popen is not None:
            try:
                self.returncode = self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
            return self.returncode
        for _ in range(int(timeout / 0.02) + 1):
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
                return self.returncode
            time.sleep(0.02)
        self.kill()
        raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)

    def poll(self):
        """The exit code if the child ended (-N: killed by signal N), else None; never waits."""
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self):
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self._popen is not None:
            self.returncode = self._popen.wait()
        else:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def close(self):
        """Kills the child if it still runs and drops its output files."""
        self.kill()
        self._out.close()
        self._err.close()

    @staticmethod
    def _read(f):
        f.seek(0)
        return f.read().decode(errors="replace")

    def output(self):
        return self._read(self._out)

    def error_output(self):
        return self._read(self._err)


def _run_child(argv, env, code, out_fd, err_fd):
    """The child's whole life: never returns."""
    status = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.environ.clear()
        os.environ.update(env)
        warnings.filters[:] = _START_FILTERS
        atexit._clear()  # the runner's handlers are not the child's
        status = _run_main(argv, code)
        for t in threading.enumerate():  # the interpreter waits for these before its exit handlers
            if t is not threading.main_thread() and not t.daemon:
                t.join()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - whatever it was, the child exits, it never returns to unittest
        traceback.print_exc()
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _run_main(argv, code):
    """Runs the script as __main__; its exit status as the interpreter would give it."""
    try:
        if code is not None:
            sys.argv = ["-c"] + list(argv)
            sys.path[0] = ""  # as python -c: the working folder first
            exec(compile(code, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as python SCRIPT: the script's folder first
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
        traceback.print_exc()
        return 1
    return 0
