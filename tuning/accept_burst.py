#!/usr/bin/env python3
"""Connect burst against a listener that is slow to accept: how long do clients wait?

Usage: accept_burst.py CLIENTS PAUSE_SECONDS

The listener asks for a 65535-entry backlog (the kernel caps it at net.core.somaxconn) and
accepts nothing for PAUSE_SECONDS, like a broker core that is busy or still starting. CLIENTS
non-blocking connects start at once. A client whose SYN (or handshake ACK) finds the queue
full is dropped and retransmits after 1 s, then 2 s more, ...; this prints how many clients
completed their handshake within 100 ms of their own connect(), how many needed a
retransmission (1 s or more), and the slowest connect time. Run it in a private
network namespace (tuning/measure-netns.sh does) so that the host's settings are untouched.
"""

import selectors
import socket
import sys
import time


def main():
    clients, pause_s = int(sys.argv[1]), float(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(65535)
    address = listener.getsockname()

    selector = selectors.DefaultSelector()
    start = time.monotonic()
    for _ in range(clients):
        client = socket.socket()
        client.setblocking(False)
        began = time.monotonic()
        client.connect_ex(address)
        selector.register(client, selectors.EVENT_WRITE, began)
    done = {}
    accepted = []
    deadline = start + pause_s + 10
    while len(done) < clients and time.monotonic() < deadline:
        if time.monotonic() - start >= pause_s:
            # The listener wakes up and drains its queue, as the broker would.
            listener.setblocking(False)
            try:
                while True:
                    accepted.append(listener.accept()[0])
            except BlockingIOError:
                pass
        for key, _ in selector.select(timeout=0.01):
            client = key.fileobj
            if client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done[client] = time.monotonic() - key.data
            selector.unregister(client)
    fast = sum(1 for t in done.values() if t < 0.1)
    retried = sum(1 for t in done.values() if t >= 0.9)
    slowest = max(done.values()) if done else float("nan")
    print(f"{fast}/{clients} connected within 100 ms, {retried} waited >= 1 s "
          f"(retransmitted), {clients - len(done)} never connected, "
          f"slowest {slowest * 1000:.0f} ms")


if __name__ == "__main__":
    main()
