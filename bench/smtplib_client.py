#!/usr/bin/env python3
"""Benchmark driver for Python's smtplib (the reference client).

  python3 bench/smtplib_client.py loop|oneshot COUNT SIZE PORT
  python3 bench/smtplib_client.py tls COUNT SIZE PORT CAFILE
  python3 bench/smtplib_client.py file PATH PORT

loop     one smtplib.SMTP(), COUNT x sendmail(), quit()
oneshot  a new smtplib.SMTP() + sendmail() + quit() for every message
tls      oneshot over STARTTLS, the certificate verified against CAFILE
         for 127.0.0.1 with one SSLContext made once and reused (as a
         careful user would: it loads the trust store once)
file     one message read from PATH (smtplib needs the whole message in
         memory: it has no streaming interface) and sent with sendmail()

sendmail() raises unless the server accepted the message (2xx to the end
of data) and returns the refused recipients: both count as failures.
Prints "RESULT client=smtplib mode=MODE ok=N fail=N elapsed=SECONDS"
(connect to quit, message construction not timed) and exits 1 on any
failure.
"""
import smtplib
import ssl
import sys
import time

FROM, TO = "a@x.test", ["b@y.test"]
HOST = "127.0.0.1"

# The same message as bench/lua_smtp_client.lua builds.
BASE = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
        "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis "
        "nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ")


def make_message(size):
    head = "From: bench <a@x.test>\r\nTo: <b@y.test>\r\nSubject: bench\r\n\r\n"
    parts, n, i = [head], len(head), 0
    twice = BASE + BASE
    while n < size:
        off = (i * 7) % len(BASE)
        want = max(1, min(70, size - n - 2))
        line = twice[off:off + want] + "\r\n"
        parts.append(line)
        n += len(line)
        i += 1
    return "".join(parts).encode("ascii")


def usage():
    sys.stderr.write("usage: smtplib_client.py loop|oneshot COUNT SIZE PORT\n"
                     "       smtplib_client.py file PATH PORT\n")
    sys.exit(2)


def main():
    if len(sys.argv) < 4:
        usage()
    mode = sys.argv[1]
    ok = fail = shown = 0

    def failed(i, err):
        nonlocal fail, shown
        fail += 1
        if shown < 5:
            shown += 1
            sys.stderr.write("smtplib: message %s failed: %r\n" % (i, err))

    if mode == "file":
        path, port = sys.argv[2], int(sys.argv[3])
        count = 1
        t0 = time.perf_counter()
        try:
            with open(path, "rb") as f:
                msg = f.read()
            with smtplib.SMTP(HOST, port) as s:
                refused = s.sendmail(FROM, TO, msg)
                if refused:
                    failed(1, refused)
                else:
                    ok += 1
        except Exception as e:  # noqa: BLE001 - any failure is reported
            failed(1, e)
        t1 = time.perf_counter()
    else:
        if len(sys.argv) < 5:
            usage()
        count, size, port = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        msg = make_message(size)
        if mode == "loop":
            t0 = time.perf_counter()
            try:
                s = smtplib.SMTP(HOST, port)
                for i in range(count):
                    try:
                        refused = s.sendmail(FROM, TO, msg)
                        if refused:
                            failed(i + 1, refused)
                        else:
                            ok += 1
                    except smtplib.SMTPResponseException as e:
                        failed(i + 1, e)
                s.quit()
            except Exception as e:  # noqa: BLE001
                failed("session", e)
            t1 = time.perf_counter()
        elif mode == "oneshot":
            t0 = time.perf_counter()
            for i in range(count):
                try:
                    with smtplib.SMTP(HOST, port) as s:
                        refused = s.sendmail(FROM, TO, msg)
                    if refused:
                        failed(i + 1, refused)
                    else:
                        ok += 1
                except Exception as e:  # noqa: BLE001
                    failed(i + 1, e)
            t1 = time.perf_counter()
        elif mode == "tls":
            if len(sys.argv) < 6:
                usage()
            ctx = ssl.create_default_context(cafile=sys.argv[5])
            t0 = time.perf_counter()
            for i in range(count):
                try:
                    with smtplib.SMTP(HOST, port) as s:
                        s.starttls(context=ctx)
                        refused = s.sendmail(FROM, TO, msg)
                    if refused:
                        failed(i + 1, refused)
                    else:
                        ok += 1
                except Exception as e:  # noqa: BLE001
                    failed(i + 1, e)
            t1 = time.perf_counter()
        else:
            usage()
    print("RESULT client=smtplib mode=%s ok=%d fail=%d elapsed=%.6f" % (mode, ok, fail, t1 - t0))
    sys.exit(0 if fail == 0 and ok == count else 1)


if __name__ == "__main__":
    main()
