"""The increment protocol in the series' thread-pool design, for comparison.

The main thread accepts; each connection is handed to a fixed pool of
threads, and a thread serves its connection with blocking calls until the
client is done.  The pool bounds the threads, so at most ``--threads``
clients are served at once and the rest wait for a free thread (which is
why this design cannot hold 10,000 connections at once: the burst mode
does not apply to it).  It uses the same pure parser as incproto.

    python benchmarks/servers/threadpool_server.py PORT [--threads 64]

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from incproto.parser import IncrementParser


def serve_connection(connection: socket.socket) -> None:
    with connection:
        parser = IncrementParser()
        try:
            connection.sendall(b"*")
            while True:
                data = connection.recv(65536)
                if not data:
                    return  # the client is done; replies were sent as we went
                reply = parser.feed(data)
                if reply:
                    connection.sendall(reply)
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=args.backlog)
    address = listener.getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    with ThreadPoolExecutor(args.threads) as pool:
        try:
            while True:
                connection, _ = listener.accept()
                pool.submit(serve_connection, connection)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
