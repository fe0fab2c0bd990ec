#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every server->client chunk.

  python3 bench/delay_proxy.py LISTEN_PORT UPSTREAM_PORT [DELAY_MS] [MAX_SECONDS]

Client->server bytes go through at once; each chunk the server sends is
held DELAY_MS (default 10) from the moment it arrived, then passed on, in
order. That is a pure latency line, not a bandwidth limit: chunks in
flight together each wait DELAY_MS from their own arrival. So a client
that waits for every reply pays DELAY_MS per reply, and a client that
pipelines pays it once per group of replies: elapsed / DELAY_MS is the
number of round trips.

Prints "listening on 127.0.0.1:PORT" once the socket is ready (PORT 0
picks a free one). Exits by itself after MAX_SECONDS (default 600), on
SIGTERM, or on SIGINT. Both sides use TCP_NODELAY, so the proxy adds no
Nagle delay of its own.
"""
import heapq
import selectors
import signal
import socket
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    listen_port, up_port = int(sys.argv[1]), int(sys.argv[2])
    delay = (float(sys.argv[3]) if len(sys.argv) > 3 else 10.0) / 1000.0
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    stop_at = time.monotonic() + max_seconds

    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen_port))
    ls.listen(1024)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, ("listen", None))
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)

    # Per connection: [client, server, pending client->server bytes,
    # pending server->client bytes (released), closed flags].
    due = []  # heap of (time, seq, conn, data)
    seq = 0

    class Conn:
        __slots__ = ("c", "s", "to_s", "to_c", "c_eof", "s_eof", "dead", "inflight")

    def nodelay(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def update(conn):
        # Interest: read both sides while their output is not backed up;
        # write when something is waiting.
        for sock, out, eof in ((conn.c, conn.to_c, conn.c_eof), (conn.s, conn.to_s, conn.s_eof)):
            if sock is None:
                continue
            ev = 0
            if not eof:
                ev |= selectors.EVENT_READ
            if out:
                ev |= selectors.EVENT_WRITE
            key = sel.get_key(sock) if sock in sel.get_map() else None
            if ev == 0:
                if key:
                    sel.unregister(sock)
            elif key is None:
                sel.register(sock, ev, ("conn", conn))
            elif key.events != ev:
                sel.modify(sock, ev, ("conn", conn))

    def close(conn):
        if conn.dead:
            return
        conn.dead = True
        for sock in (conn.c, conn.s):
            if sock is not None:
                if sock in sel.get_map():
                    sel.unregister(sock)
                sock.close()

    def maybe_finish(conn):
        # Both directions drained and both peers done: close.
        if conn.c_eof and conn.s_eof and not conn.to_c and not conn.to_s and conn.inflight == 0:
            close(conn)
        elif conn.s_eof and not conn.to_c and conn.inflight == 0:
            # The server hung up and everything it said has been delivered.
            close(conn)
        elif conn.c_eof and not conn.to_s:
            try:
                conn.s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    while running[0] and time.monotonic() < stop_at:
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, conn, data = heapq.heappop(due)
            conn.inflight -= 1
            if conn.dead:
                continue
            if data is None:
                conn.s_eof = True
            else:
                conn.to_c += data
            update(conn)
            maybe_finish(conn)
        timeout = max(0.0, due[0][0] - now) if due else 0.5
        for key, ev in sel.select(timeout):
            kind, conn = key.data
            if kind == "listen":
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                nodelay(c)
                s = socket.create_connection(("127.0.0.1", up_port))
                nodelay(s)
                c.setblocking(False)
                s.setblocking(False)
                conn = Conn()
                conn.c, conn.s, conn.to_s, conn.to_c = c, s, b"", b""
                conn.c_eof = conn.s_eof = conn.dead = False
                conn.inflight = 0
                update(conn)
                continue
            if conn.dead:
                continue
            sock = key.fileobj
            try:
                if ev & selectors.EVENT_READ:
                    data = sock.recv(262144)
                    if sock is conn.c:
                        if data:
                            conn.to_s += data
                        else:
                            conn.c_eof = True
                    else:
                        # Server bytes (or its EOF) wait their delay.
                        seq += 1
                        conn.inflight += 1
                        heapq.heappush(due, (time.monotonic() + delay, seq, conn, data or None))
                        if not data:
                            conn.s_eof = True  # stop reading; delivered later
                if ev & selectors.EVENT_WRITE:
                    if sock is conn.c and conn.to_c:
                        n = sock.send(conn.to_c)
                        conn.to_c = conn.to_c[n:]
                    elif sock is conn.s and conn.to_s:
                        n = sock.send(conn.to_s)
                        conn.to_s = conn.to_s[n:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                close(conn)
                continue
            update(conn)
            maybe_finish(conn)
    sel.close()
    ls.close()


if __name__ == "__main__":
    main()
