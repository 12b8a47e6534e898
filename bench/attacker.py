"""Connections without the shared secret, as an attacker on the same host
opens them (docs/security.md): HELD silent and HELD/2 half-open connections
(half a bootstrap opening), kept open, plus a stream of garbage connections
(the old transport's hello with a malformed UCX address, a 2 GiB announced
length, random bytes), each closed once the server answered or hung up,
until killed. Prints how many it made.

    python3 bench/attacker.py HOST:PORT [HELD]
    python3 bench/attacker.py decoy [HELD]   the same attack on a listener that
        accepts, reads and closes (a forked child): what the attack costs this
        host's cores without any rdmaps in the way
"""

import os
import random
import select
import signal
import socket
import struct
import sys

MAGIC = 0x52444D54  # the bootstrap's "RDMT"


def decoy():
    """Listens on a free port in a forked child that accepts, reads and closes; returns "host:port"."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    child = os.fork()
    if child:
        listener.close()
        return f"127.0.0.1:{port}", child
    conns = []
    while True:
        ready, _, _ = select.select([listener] + conns, [], [])
        for s in ready:
            if s is listener:
                conns.append(listener.accept()[0])
            elif not s.recv(65536):
                conns.remove(s)
                s.close()


def main():
    decoy_pid = None
    if sys.argv[1] == "decoy":
        sys.argv[1], decoy_pid = decoy()
    host, port = sys.argv[1].rsplit(":", 1)
    held_count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    address = (host, int(port))
    held = [socket.create_connection(address) for _ in range(held_count)]
    for _ in range(held_count // 2):
        s = socket.create_connection(address)
        s.sendall(struct.pack("<III", 44, MAGIC, 2) + b"\0" * 6)  # 10 of the opening's 44 bytes
        held.append(s)
    made = [0]

    def report(*_):
        print(f"attacker: {len(held)} held, {made[0]} garbage connections", file=sys.stderr, flush=True)
        if decoy_pid:
            os.kill(decoy_pid, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    rng = random.Random(1)
    while True:
        try:
            with socket.create_connection(address, timeout=5) as s:
                kind = made[0] % 3
                if kind == 0:
                    s.sendall(struct.pack("<III", 17, MAGIC, 1) + os.urandom(9))
                elif kind == 1:
                    s.sendall(struct.pack("<I", 0x7FFFFFFF))
                else:
                    s.sendall(os.urandom(rng.randint(1, 200)))
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
        except OSError:
            pass
        made[0] += 1


if __name__ == "__main__":
    main()
