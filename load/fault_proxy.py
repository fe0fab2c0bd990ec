#!/usr/bin/python3
"""A TCP proxy for the load test's fault runs (load/loadtest.lua).

    fault_proxy.py --listen PORT --target PORT --mode reset|stall
                   [--share 0.02] [--stall 8] [--seed N]

Prints "PORT <n>" once it listens (PORT 0: a free port), then forwards
every connection to 127.0.0.1:TARGET. Connections are pooled by the client
and carry many transactions; --share is the chance of each transaction to
be broken. For each connection the transaction to break (the k-th, counted
by the client's ends of data) is drawn when it opens, and the point in it:
  mail        its first command (MAIL FROM) never reaches the server: for a
              pooled connection, what a stale one looks like
  client      a random number (1..700) of its client octets went through
  server      a random number (1..300) of the server's octets after its start
  data_end    its end of data (DATA's "." or the payload of BDAT ... LAST)
              went to the server, but the server's reply to it does not go
              back: the server has the message, the client never learns it
mode reset: the client connection is reset (RST) at that point and the
server connection closed; mode stall: nothing more goes to the client for
--stall seconds (past the client's timeout), then both are closed.
On SIGTERM it prints one line per fault point, "FAULT <point> <count>",
and the number of connections, then exits.
"""
import argparse
import asyncio
import math
import random
import signal
import socket
import struct
import sys

POINTS = ("mail", "client", "server", "data_end")


class EndOfData:
    """Finds the ends of data in the client's stream (DATA ... "." and
    BDAT n LAST), fed in pieces; feed() returns how many ended in a piece
    and the offset just after the first one (or None)."""

    def __init__(self):
        self.line = b""
        self.in_data = False
        self.tail = b""
        self.bdat_left = 0
        self.bdat_last = False

    def feed(self, data):
        ends, first = 0, None
        i = 0
        while i < len(data):
            if self.bdat_left > 0:
                n = min(self.bdat_left, len(data) - i)
                self.bdat_left -= n
                i += n
                if self.bdat_left == 0 and self.bdat_last:
                    ends += 1
                    first = i if first is None else first
                continue
            if self.in_data:
                self.tail = (self.tail + data[i:i + 1])[-5:]
                i += 1
                if self.tail == b"\r\n.\r\n":
                    self.in_data = False
                    self.tail = b""
                    ends += 1
                    first = i if first is None else first
                continue
            c = data[i:i + 1]
            i += 1
            self.line += c
            if c == b"\n":
                cmd = self.line.strip().upper()
                self.line = b""
                if cmd == b"DATA":
                    self.in_data = True
                    self.tail = b"\r\n"
                elif cmd.startswith(b"BDAT "):
                    words = cmd.split()
                    try:
                        self.bdat_left = int(words[1])
                    except (IndexError, ValueError):
                        self.bdat_left = 0
                    self.bdat_last = len(words) > 2 and words[2] == b"LAST"
                    if self.bdat_left == 0 and self.bdat_last:
                        ends += 1
                        first = i if first is None else first
        return ends, first


class Proxy:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.counts = {p: 0 for p in POINTS}
        self.connections = 0

    def pick(self):
        """The transaction to break (1-based; geometric with p = share),
        the point in it, and the point's number of octets."""
        p = self.args.share
        if p <= 0:
            return 10 ** 9, None, 0
        u = 1.0 - self.rng.random()
        k = int(math.log(u) / math.log(1.0 - p)) + 1 if p < 1 else 1
        point = self.rng.choice(POINTS)
        arg = 0
        if point == "client":
            arg = self.rng.randint(1, 700)
        elif point == "server":
            arg = self.rng.randint(1, 300)
        return k, point, arg

    async def handle(self, creader, cwriter):
        self.connections += 1
        k, point, arg = self.pick()
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.args.target)
        except OSError:
            self.reset(cwriter)
            return
        # ends: the client's ends of data so far; in_k: transaction k has
        # begun (the client sent its MAIL); octets of each side since.
        st = {"broken": False, "ends": 0, "in_k": False, "cseen": 0, "sseen": 0,
              "armed": False}

        async def fault():
            if st["broken"]:
                return
            st["broken"] = True
            self.counts[point] += 1
            if self.args.mode == "stall":
                await asyncio.sleep(self.args.stall)
                self.close(cwriter)
            else:
                self.reset(cwriter)
            self.close(swriter)

        async def client_to_server():
            eod = EndOfData()
            try:
                while not st["broken"]:
                    data = await creader.read(65536)
                    if not data:
                        break
                    if (not st["in_k"] and st["ends"] == k - 1
                            and data[:5].upper() == b"MAIL "):
                        st["in_k"] = True
                        st["cseen"], st["sseen"] = 0, 0
                        if point == "mail":
                            await fault()
                            return
                    if st["in_k"] and point == "client" and st["cseen"] + len(data) >= arg:
                        swriter.write(data[:arg - st["cseen"]])
                        await swriter.drain()
                        await fault()
                        return
                    if st["in_k"]:
                        st["cseen"] += len(data)
                    n, _ = eod.feed(data)
                    if n:
                        st["ends"] += n
                        if st["in_k"] and point == "data_end":
                            st["armed"] = True
                    swriter.write(data)
                    await swriter.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            if not st["broken"]:
                self.close(swriter)

        async def server_to_client():
            try:
                while not st["broken"]:
                    data = await sreader.read(65536)
                    if not data:
                        break
                    if st["armed"]:
                        await fault()
                        return
                    if st["in_k"] and point == "server" and st["sseen"] + len(data) >= arg:
                        cwriter.write(data[:arg - st["sseen"]])
                        await cwriter.drain()
                        await fault()
                        return
                    if st["in_k"]:
                        st["sseen"] += len(data)
                    cwriter.write(data)
                    await cwriter.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            if not st["broken"]:
                self.close(cwriter)

        await asyncio.gather(client_to_server(), server_to_client())

    @staticmethod
    def close(writer):
        try:
            writer.close()
        except OSError:
            pass

    @staticmethod
    def reset(writer):
        sock = writer.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--mode", choices=("reset", "stall"), default="reset")
    ap.add_argument("--share", type=float, default=0.02)
    ap.add_argument("--stall", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    proxy = Proxy(args)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set_result, None)
    await done
    for p in POINTS:
        print("FAULT %s %d" % (p, proxy.counts[p]))
    print("CONNECTIONS %d" % proxy.connections, flush=True)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
