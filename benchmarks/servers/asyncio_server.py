"""The increment protocol on stdlib asyncio (or uvloop), for comparison.

A reference server written the way a careful asyncio programmer would:
``asyncio.Protocol`` callbacks (not streams, which cost more per message),
the same pure parser incproto uses (so the comparison is of the I/O layer,
not the parsing), flow control by pausing reading while the transport's
write buffer is above its high-water mark, and half-close kept so that
owed bytes are delivered.

    python benchmarks/servers/asyncio_server.py PORT [--uvloop] [--backlog N]

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from incproto.parser import IncrementParser


class Increment(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = IncrementParser()
        self.transport.write(b"*")

    def data_received(self, data: bytes) -> None:
        reply = self.parser.feed(data)
        if reply:
            self.transport.write(reply)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> Optional[bool]:
        self.transport.close()  # after the buffered replies are written
        return True


async def serve(port: int, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Increment, "127.0.0.1", port, backlog=backlog, reuse_address=True
    )
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    try:
        asyncio.run(serve(args.port, args.backlog))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
