#!/usr/bin/python3
"""Prints the first of N consecutive TCP ports free on 127.0.0.1 (default 1).

Chosen below the kernel's ephemeral range: a port that bind(0) returned free
may be taken by an outgoing connection before the test listens on it (seen:
mpirun-metrics failed once with "port in use" on the port after the one found).
    free_ports.py [N]
"""
import random
import socket
import sys


def first_free(n=1):
    """The first of n consecutive ports free on 127.0.0.1 now, or None."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
    # Ports the kernel never hands out on its own: below the range, else above it.
    first, last = (10000, low - n) if low - n > 10000 else (high + 1, 65536 - n)
    for _ in range(1000):
        base = random.randrange(first, last)
        held = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    return None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    base = first_free(n)
    if base is None:
        print(f"free_ports.py: no {n} consecutive free ports outside the kernel's ephemeral range", file=sys.stderr)
        return 1
    print(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
