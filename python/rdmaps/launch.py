"""Starts N local processes of a script with torchrun's variables (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), for one
machine and for systems where torchrun itself does not run (Debian 12's torch
1.13 torchrun fails on Python 3.11 in elastic's to_map).

    python3 -m rdmaps.launch --nproc 3 train.py --epochs 2
    python3 -m rdmaps.launch --nproc 3 -m mypackage.train --epochs 2
    python3 -m rdmaps.launch --nproc 3 --no-python rdmaps-train --epochs 2

Output lines carry a "[rank] " prefix. When a process fails (exits non-zero
or is killed by a signal) the launcher says which rank and how on stderr,
stops the others, and exits with that failure's status: the rank's exit
status, or 128+N for signal N. With several failures the first to exit counts.
A program that cannot be started (not found, not executable, a script whose
#! interpreter is missing) is named with the reason; the ranks already
started are stopped, and the launcher exits with 127 (not found) or 126 (not
executable). Ctrl-C (SIGINT), SIGTERM, SIGHUP and SIGQUIT to the launcher reach every
process it started and the processes they started (each rank runs in a session
of its own), as that signal, as torchrun passes them on; what has not ended 10 s
later is killed (at once when asked again), and the launcher exits 128+N (130
for Ctrl-C, 143 for SIGTERM). SIGUSR1 and SIGUSR2 are passed on and the job goes
on (Slurm's --signal=USR1@T); Ctrl-Z (SIGTSTP) stops the ranks with the
launcher, and SIGCONT continues them. A rank's stdout and stderr stay apart,
each line prefixed; a line ends at a newline or at a carriage return (a
progress bar's redraw).

torchrun's spellings --nproc-per-node/--nproc_per_node, --master_port, and, for
one machine, --standalone, --nnodes 1, --node-rank 0 and --master-addr
localhost are taken.

As torchrun does, several processes get OMP_NUM_THREADS=1 unless it is set
(a thread pool per process oversubscribed the cores), and Python's output is
unbuffered where it is prefixed (PYTHONUNBUFFERED=1 unless set): a rank's
lines came in 8 KiB blocks, and those of a rank stopped were lost.

The processes do not inherit the variables by which an outer launcher
(mpirun, srun, torchrun) placed the launcher itself: PMIX_RANK,
PMIX_NAMESPACE, OMPI_COMM_WORLD_*, PMI_RANK, PMI_SIZE, SLURM_PROCID,
SLURM_NTASKS, SLURM_STEP_NUM_TASKS, SLURM_STEP_ID, RDMAPS_RANK, RDMAPS_WORLD_SIZE and
TORCHELASTIC_USE_AGENT_STORE. RANK and WORLD_SIZE describe them. Nor do
RDMAPS_MASTER_ADDR and RDMAPS_MASTER_PORT: the launch has a rendezvous of its
own at MASTER_ADDR and MASTER_PORT, and a fresh RDMAPS_JOB_ID that keeps
another job's ranks out of it.
"""

import argparse
import contextlib
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A line ends at "\n", or at "\r" where a progress bar redraws it: each gets the
# rank's prefix as it is complete, never two ranks' pieces on one line. The
# ends are found in each read alone (a pattern tried at every byte of the
# unfinished line took 33 s for one line of 100 kB), and an unfinished line
# past _LONGEST goes out as it is.
_END = re.compile(rb"\r\n|\r|\n")
_LONGEST = 65536


def _binary(out):
    """`out`'s bytes (sys.stdout.buffer), or a writer that decodes into a text stream that has none."""
    if hasattr(out, "buffer"):
        return out.buffer

    class Text:
        def write(self, data):
            out.write(data.decode(errors="replace"))

        def flush(self):
            out.flush()

    return Text()


def _relay(rank, stream, out):
    """Copies a rank's `stream` to `out` (binary), each line after "[rank] "."""
    prefix = f"[{rank}] ".encode()
    writing, pending, last = True, b"", b"\n"

    def piece(text):
        nonlocal last
        # A bare "\r" (a redraw about to start) and the "\n" of a "\r\n" split between reads start no line.
        starts = last in (b"\r", b"\n") and text[:1] != b"\r" and not (last == b"\r" and text[:1] == b"\n")
        last = text[-1:]
        return prefix + text if starts else text

    while True:
        data = stream.read1(65536)
        if not writing:  # drained: a rank blocked on a full pipe would hang the job
            if not data:
                return
            continue
        pieces, at = [], 0
        for m in _END.finditer(data):
            pieces.append(piece(pending + data[at:m.end()]))
            pending, at = b"", m.end()
        pending += data[at:]
        if pending and (not data or len(pending) > _LONGEST):  # a last line without its end gets one
            pieces.append(piece(pending + (b"\n" if not data else b"")))
            pending = b""
        try:
            if pieces:
                out.write(b"".join(pieces))
                out.flush()
        except (OSError, ValueError):  # the launcher's output closed (| head)
            writing = False
        if not data:
            return


class _Terminated(Exception):
    """The launcher got a signal that ends the job (SIGTERM: a job scheduler's stop, a kill)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


# As torchrun: each is passed on to every rank (and what it started), which the launcher then stops, and it
# exits 128+N. SIGINT (Ctrl-C) is Python's KeyboardInterrupt: the same, 130.
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Passed on, and the job goes on: Slurm's `--signal=USR1@120` (checkpoint before the time limit) reaches
# the launcher, which srun started, not the ranks in sessions of their own.
FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


MAX_LOCAL_PROCESSES = 256  # as rdmaps-train's local runs: more is a cluster's job

# Variables by which an outer launcher (mpirun, srun, torchrun) describes the
# launcher itself. Passed on, they would tell every process the same rank, or
# that a PMIx server knows it (src/launch/placement.h reads them before, or as
# well as, RANK): the processes get RANK and WORLD_SIZE instead.
OUTER_RANK_VARIABLES = ("RDMAPS_RANK", "RDMAPS_WORLD_SIZE", "PMIX_RANK", "PMIX_NAMESPACE", "PMI_RANK", "PMI_SIZE",
                        "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID",
                        "TORCHELASTIC_USE_AGENT_STORE")
OUTER_RANK_PREFIXES = ("OMPI_COMM_WORLD_",)  # RANK, SIZE, LOCAL_RANK, LOCAL_SIZE, NODE_RANK
# An outer job's rendezvous, which src/launch/placement.h prefers to MASTER_*:
# this launch has its own (MASTER_ADDR, MASTER_PORT and a fresh RDMAPS_JOB_ID).
OUTER_RENDEZVOUS_VARIABLES = ("RDMAPS_MASTER_ADDR", "RDMAPS_MASTER_PORT")


def _say(message):
    sys.stdout.flush()
    print(f"rdmaps.launch: {message}", file=sys.stderr, flush=True)


def _how(returncode):
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {-returncode}{name}"
    return f"exited with status {returncode}"


def launch(nproc, command, master_port=None, env=None, prefix=True):
    """Runs `command` (a list) nproc times; returns the exit status: 0, the first failure's (its status, or
    128+N for signal N), 126/127 when the command cannot be started, 128+N after a stopping signal N (130 SIGINT,
    143 SIGTERM, 129 SIGHUP, 131 SIGQUIT)."""
    if nproc < 1:
        raise ValueError("--nproc must be at least 1")
    base = {k: v for k, v in (os.environ if env is None else env).items()
            if k not in OUTER_RANK_VARIABLES + OUTER_RENDEZVOUS_VARIABLES and not k.startswith(OUTER_RANK_PREFIXES)}
    # Passed on (a launch of workers for servers elsewhere), but said: one left in the shell from a
    # cluster job sent a local launch's workers to that job's servers without a word.
    if base.get("RDMAPS_SERVERS"):
        _say(f"note: RDMAPS_SERVERS={base['RDMAPS_SERVERS']} is passed on: the processes take their servers "
             "from it, not from this launch's rendezvous (unset it for a launch of its own)")
    # The launch id keeps another job's ranks out of this one's rendezvous (and these out of theirs).
    base.update(WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(master_port or free_port()), RDMAPS_JOB_ID=f"rdmaps.launch:{secrets.token_hex(8)}")
    # Set but empty is unset here: every rank refuses an empty RDMAPS_* variable.
    for name in ("RDMAPS_SECRET", "RDMAPS_SECRET_FILE"):
        if base.get(name) == "":
            del base[name]
    if nproc > 1 and "OMP_NUM_THREADS" not in base:
        base["OMP_NUM_THREADS"] = "1"
    if prefix:
        base.setdefault("PYTHONUNBUFFERED", "1")
    if not base.get("RDMAPS_SECRET") and not base.get("RDMAPS_SECRET_FILE"):
        # Every connection of the job proves this secret (docs/security.md); it lives only in their environment.
        base["RDMAPS_SECRET"] = secrets.token_hex(32)
    # A SIGTERM, SIGHUP or SIGQUIT would end this process and leave the others running: pass it on (only
    # the main thread may set a handler; elsewhere the caller decides); the ranks, in sessions of their
    # own, get neither the terminal's hang-up nor its Ctrl-Z (SIGTSTP) otherwise.
    # One the caller ignores stays ignored: under nohup a hang-up stopped every rank at logout.
    procs = []
    handlers = dict.fromkeys(STOPPING_SIGNALS, _raise_terminated)
    handlers.update(dict.fromkeys(FORWARDED_SIGNALS + (signal.SIGCONT,), lambda signum, frame: _forward(procs, signum)))
    handlers[signal.SIGTSTP] = lambda signum, frame: _suspend(procs)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()
                    if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        return _run(nproc, command, base, prefix, procs)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _forward(procs, sig):
    for p in procs:
        _signal(p, sig)


def _suspend(procs):
    """Ctrl-Z (SIGTSTP) reaches the launcher's group only: the ranks, in sessions of their own, trained on
    while it stood stopped. They stop with it (SIGSTOP: a session of its own is an orphaned group, whose
    SIGTSTP the kernel drops); SIGCONT (fg, bg) continues them (_forward)."""
    _forward(procs, signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGSTOP)


def _signal(p, sig):
    """To the rank and what it started (its session's group), its leader gone or not: a shell that died on
    SIGTERM left a child that ignores it running. A group keeps its id while any member lives."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(p):
    """Something of the rank's session still runs: the rank, or what it started. Those of its processes that
    became this process's (it is a container's PID 1, or a subreaper) are reaped first: as zombies they kept
    the group alive, and every stop waited its 10 s."""
    try:
        while os.waitpid(-p.pid, os.WNOHANG)[0] != 0:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(p.pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop(procs, sig):
    """Sends `sig` to the processes still running and what they started; kills what is not gone within 10 s
    (a shell that ended at once on SIGTERM left its child no time to save a checkpoint). A second stopping
    signal meanwhile kills them at once (it escaped here, and left them running)."""
    while True:
        try:
            for p in procs:
                _signal(p, sig)
            deadline = time.monotonic() + 10
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while time.monotonic() < deadline and any(_group_alive(p) for p in procs):
                time.sleep(0.05)
            for p in procs:  # what outlived the 10 s
                _signal(p, signal.SIGKILL)
            for p in procs:
                p.wait()
            return
        except (KeyboardInterrupt, _Terminated):
            sig = signal.SIGKILL


_setpriv = None  # probed once: its path, or "" where it cannot set the parent-death signal


def _pdeathsig_setpriv():
    """util-linux's setpriv where it takes --pdeathsig (2.33 on; RHEL 8's 2.32 has setpriv without it, and
    every rank run through it failed), else ""."""
    global _setpriv
    if _setpriv is None:
        _setpriv = ""
        path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        if path:
            # posix_spawn, not subprocess: the probe is no rank (nor one of a test's mocked Popens).
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                pid = os.posix_spawn(path, [path, "--pdeathsig", "TERM", "--", sys.executable, "-c", ""], os.environ,
                                     file_actions=[(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)])
                _setpriv = path if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else ""
            except OSError:
                pass
            finally:
                os.close(devnull)
    return _setpriv


def _ending_with_launcher(command, env):
    """`command` run so that it gets SIGTERM when the launcher dies, SIGKILL included (Linux: util-linux's
    setpriv --pdeathsig, which then execs it): the ranks, in sessions of their own, trained on after a
    launcher killed by a CI timeout or the OOM killer. As it was where setpriv cannot do that, or where the
    command is not found (Popen then says so, as before)."""
    setpriv = _pdeathsig_setpriv()
    if not setpriv or shutil.which(command[0], path=env.get("PATH", os.defpath)) is None:
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def _exec_problem(command, env):
    """Why `command` cannot be executed though PATH finds it, as (status, reason), else None. setpriv execs
    it, and a script whose interpreter is missing was then blamed on rank 0 (exit 127, the others' lines
    lost) instead of named as a program that cannot start."""
    path = shutil.which(command[0], path=env.get("PATH", os.defpath))
    if path is None:
        return None  # Popen says why
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None  # executable, not readable (mode 0711): exec decides
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        return 126, "its #! line names no interpreter"
    interpreter = os.fsdecode(words[0])
    if not os.path.exists(interpreter):
        return 127, f"bad interpreter {interpreter}: No such file or directory"
    if not os.access(interpreter, os.X_OK) or os.path.isdir(interpreter):
        return 126, f"bad interpreter {interpreter}: Permission denied"
    return None


def _start(argv, program, env, prefix):
    """Popen of `argv` (`program`, as _ending_with_launcher wraps it), or the exit status and the reason it
    could not start."""
    try:
        # A session of its own: stopping a rank reaches what it started (a shell's children), and Ctrl-C
        # at a terminal reaches it once, through the launcher.
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if prefix else None,
                                stderr=subprocess.PIPE if prefix else None, start_new_session=True), None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in an argument
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, FileNotFoundError) and os.sep not in program:
            reason += " (searched PATH)"
        return None, (127 if isinstance(e, FileNotFoundError) else 126, f"cannot start {program}: {reason}")


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and the other signals the launcher handles wait until the block ends: raised between Popen and the
    list of ranks, they left that rank running after the launcher had stopped (or suspended) the others."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT,) + STOPPING_SIGNALS + FORWARDED_SIGNALS +
                (signal.SIGTSTP, signal.SIGCONT)}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: a handler not set from Python
    for s in previous:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        # Now, to the handler it was meant for; the first to raise ends the loop,
        # so a SIGTERM, SIGHUP or SIGQUIT goes before a Ctrl-C (it stops the ranks alike, exits 128+N).
        for s in sorted(dict.fromkeys(held), key=lambda s: s == signal.SIGINT):
            signal.raise_signal(s)


def _watch(proc, rank, exits):
    """Puts `rank` on `exits` when `proc` ends (so `exits` holds the ranks in the
    order they ended, not in rank order), leaving it for the main thread to reap."""
    if hasattr(os, "waitid"):
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # already reaped
            pass
    else:  # macOS before Python 3.13: Popen's lock lets two threads wait
        proc.wait()
    exits.put(rank)


def _run(nproc, command, base, prefix, procs):
    # Every rank runs the same program, found on the same PATH: looked at once.
    problem = _exec_problem(command, base) if _pdeathsig_setpriv() else None
    if problem:
        _say(f"cannot start {command[0]}: {problem[1]}")
        return problem[0]
    argv = _ending_with_launcher(command, base)
    relays = []
    exits = queue.Queue()
    status = 0
    try:
        for rank in range(nproc):
            e = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
            with _signals_held():
                p, failure = _start(argv, command[0], e, prefix)
                if p is not None:
                    procs.append(p)
                    threading.Thread(target=_watch, args=(p, rank, exits), daemon=True).start()
                    if prefix:  # stdout to stdout, stderr to stderr, as torchrun keeps them
                        ts = [threading.Thread(target=_relay, args=(rank, stream, _binary(out)), daemon=True)
                              for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))]
                        for t in ts:
                            t.start()
                        relays.append(ts)
            if p is None:
                status, message = failure
                _say(f"rank {rank}: {message}; stopping the others" if procs else message)
                break
        else:
            running = nproc
            while running:
                try:
                    rank = exits.get(timeout=1)
                except queue.Empty:
                    continue
                running -= 1
                code = procs[rank].wait()
                if code != 0:
                    status = code
                    if prefix:  # its last lines before the verdict
                        for t in relays[rank]:
                            t.join(timeout=1)
                    _say(f"rank {rank} {_how(code)}" + ("; stopping the others" if running else ""))
                    break
        _stop(procs, signal.SIGTERM)
    except (KeyboardInterrupt, _Terminated) as e:
        sig = signal.SIGINT if isinstance(e, KeyboardInterrupt) else e.signum
        status = 128 + sig
        _stop(procs, sig)
    except BaseException:
        _stop(procs, signal.SIGKILL)
        raise
    for t in (t for ts in relays for t in ts):
        t.join(timeout=5)
    if status < 0:  # killed by a signal
        status = 128 - status
    return status


def _whole_number(text):
    """Digits only: argparse's int took '+2', ' 2' and '1_0' (10 processes), which the ranks refuse."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number (digits only)")
    return int(text)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m rdmaps.launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    # torchrun's spellings too: this launcher stands in for it where it does not run.
    ap.add_argument("--nproc", "-n", "--nproc-per-node", "--nproc_per_node", dest="nproc", type=_whole_number,
                    required=True, help="processes to start")
    ap.add_argument("--master-port", "--master_port", dest="master_port", type=_whole_number, default=None,
                    help="rendezvous port (default: a free one)")
    ap.add_argument("--master-addr", "--master_addr", dest="master_addr", default=None,
                    help="as torchrun's: this machine only (localhost, 127.0.0.1)")
    ap.add_argument("--nnodes", default=None, help="as torchrun's: 1 only")
    ap.add_argument("--node-rank", "--node_rank", dest="node_rank", default=None, help="as torchrun's: 0 only")
    ap.add_argument("--standalone", action="store_true", help="as torchrun's (always so here)")
    ap.add_argument("--no-prefix", action="store_true", help="leave the processes' output as it is")
    ap.add_argument("--no-python", action="store_true",
                    help="run the program itself (rdmaps-train, rdmaps-server), not a Python script")
    ap.add_argument("-m", "--module", action="store_true",
                    help="SCRIPT is a module, run as python3 -m runs it (as torchrun's -m)")
    ap.add_argument("script", help="a Python script, a module with -m, or with --no-python a program")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if not 1 <= a.nproc <= MAX_LOCAL_PROCESSES:
        ap.error(f"--nproc {a.nproc}: start 1 to {MAX_LOCAL_PROCESSES} processes on this machine")
    if a.master_port is not None and not 1 <= a.master_port <= 65535:
        ap.error(f"--master-port {a.master_port}: not a port (1 to 65535)")
    one_machine = "this launcher starts processes on this machine only (for several: mpirun, srun, or torchrun " \
                  "where it runs; docs/cluster.md)"
    if a.nnodes is not None and a.nnodes not in ("1", "1:1"):
        ap.error(f"--nnodes {a.nnodes}: {one_machine}")
    if a.node_rank is not None and a.node_rank != "0":
        ap.error(f"--node-rank {a.node_rank}: {one_machine}")
    if a.master_addr is not None and a.master_addr not in ("localhost", "127.0.0.1", "::1"):
        ap.error(f"--master-addr {a.master_addr}: {one_machine}, whose rendezvous is at 127.0.0.1")
    if a.module and a.no_python:
        ap.error("-m runs a Python module; --no-python runs a program: give one of them")
    if a.no_python:
        command = [a.script] + a.args
    elif a.module:
        command = [sys.executable, "-m", a.script] + a.args
    else:
        # python runs a directory or zip with a __main__.py too
        if not os.path.exists(a.script):
            ap.error(f"no such script: {a.script}")
        command = [sys.executable, a.script] + a.args
    return launch(a.nproc, command, a.master_port, prefix=not a.no_prefix)


if __name__ == "__main__":
    sys.exit(main())
