"""Waiting for a forked child in the tests that check what a child may do with its parent's worker."""

import os
import signal
import time


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
