"""Connections without the shared secret, as an attacker on the same host
opens them (docs/security.md): HELD silent and HELD/2 half-open connections
(half a bootstrap opening), kept open, plus a stream of garbage connections
(the old transport's hello with a malformed UCX address, a 2 GiB announced
length, random bytes), each closed once the server answered or hung up,
until killed. Prints how many it made.

    python3 bench/attacker.py HOST:PORT [HELD]
"""

import os
import random
import signal
import socket
import struct
import sys

MAGIC = 0x52444D54  # the bootstrap's "RDMT"


def main():
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
