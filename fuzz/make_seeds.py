#!/usr/bin/env python3
"""Writes the hand-made seed corpus under fuzz/corpus/<target>/.

Each seed is small and shaped like real traffic (the layouts are described
at the top of each fuzz/fuzz_*.c). Run from anywhere; existing seeds with
the same names are overwritten, others (e.g. crash reproducers added by
hand) are left alone.
"""
import base64
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- server transcripts -----------------------------------------------------

GREETING = "220 mx.example.org ESMTP Postfix\r\n"
EHLO = ("250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        "250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n")
EHLO_SMALL_SIZE = "250-mx.example.org\r\n250-SIZE 100\r\n250 CHUNKING\r\n"
OK_MAIL = "250 2.1.0 Ok\r\n"
OK_RCPT = "250 2.1.5 Ok\r\n"
GO = "354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = "250 2.0.0 Ok: queued as 4Y2J7k0Zq1z9\r\n"
BDAT_OK = "250 2.0.0 Ok: 18 bytes\r\n"
BYE = "221 2.0.0 Bye\r\n"

SESSION = (GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED +
           OK_MAIL + OK_RCPT + OK_RCPT + BDAT_OK + QUEUED + BYE)


def engine(name, flags, transcript, transport=0, sizes=(0, 0, 0, 0), more=0):
    put("fuzz_engine", name, bytes([flags, transport]) + bytes(sizes) + bytes([more]) +
        transcript.encode("latin-1"))


def seeds_engine():
    engine("session_plain", 0x00, SESSION)
    engine("session_pipelined", 0x01, SESSION)
    engine("session_chained", 0x09, SESSION)
    engine("session_bytewise", 0x01, SESSION, transport=1, sizes=(1, 3, 7, 0))
    engine("session_eager", 0x01, SESSION, transport=0x85, sizes=(5, 40, 255, 0))
    engine("session_small_limits", 0x10, SESSION)
    # Two DATA transactions (transport byte bit 6), chained with PIPELINING.
    two = (GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED + OK_MAIL + OK_RCPT +
           OK_RCPT + GO + QUEUED + BYE)
    engine("two_data", 0x00, two, transport=0x40)
    engine("two_data_chained", 0x09, two, transport=0x40)
    # BDAT first, chained (the next one starts with RSET), and a third one.
    bdat_txn = OK_MAIL + OK_RCPT + OK_RCPT + BDAT_OK + QUEUED
    engine("bdat_first_chained", 0x09, GREETING + EHLO + "250 2.0.0 Ok\r\n" + bdat_txn +
           "250 2.0.0 Ok\r\n" + bdat_txn + BYE, more=0x01)
    engine("three_chained", 0x09, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED +
           bdat_txn + "250 2.0.0 Ok\r\n" + OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED + BYE,
           more=0x02)
    engine("three_chained_fail", 0x09, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO +
           QUEUED + OK_MAIL + "550 5.7.1 no\r\n" + "554 5.5.1 no\r\n" * 4 +
           "250 2.0.0 Ok\r\n" + bdat_txn + BYE, more=0x06)
    engine("two_data_chained_lmtp", 0x0b, "220 lmtp LMTP\r\n250-lmtp\r\n250 PIPELINING\r\n" +
           OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED + QUEUED + OK_MAIL + OK_RCPT +
           "550 5.1.1 no\r\n" + GO + QUEUED + BYE, transport=0x40)
    # smtp-sink answers EHLO with an empty "250 " line at the end.
    engine("smtp_sink", 0x01, GREETING + "250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
           "250-CHUNKING\r\n250 \r\n" + "250 \r\n" * 4 + "354 \r\n250 \r\n" + "250 \r\n" * 5 +
           "221 \r\n")
    # HELO fallback after 502 to EHLO.
    engine("helo_fallback", 0x00, GREETING + "502 5.5.2 Error: command not recognized\r\n"
           "250 mx.example.org\r\n" + OK_MAIL + OK_RCPT + OK_RCPT + GO + QUEUED + BYE)
    # Refusals: 4xx/5xx at every step.
    engine("greeting_554", 0x00, "554 5.7.1 No SMTP service here\r\n")
    engine("greeting_421", 0x00, "421 4.3.2 Service not available, closing channel\r\n")
    engine("mail_550", 0x01, GREETING + EHLO + "550 5.7.1 Sender rejected\r\n" +
           "554 5.5.1 Error: no valid recipients\r\n" * 2 + "503 5.5.1 Error: need RCPT\r\n" +
           "250 2.0.0 Ok\r\n" + BYE)
    engine("rcpt_mixed", 0x00, GREETING + EHLO + OK_MAIL + "550 5.1.1 <one@example.net>: "
           "Recipient address rejected: User unknown\r\n" + OK_RCPT + GO +
           "452 4.3.1 Insufficient system storage\r\n" + BYE)
    engine("rcpt_all_refused", 0x00, GREETING + EHLO + OK_MAIL + "550 5.1.1 no\r\n" +
           "450 4.2.0 greylisted\r\n" + "250 2.0.0 Ok\r\n" + OK_MAIL + OK_RCPT + OK_RCPT +
           BDAT_OK + QUEUED + BYE)
    engine("data_421", 0x00, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO +
           "421 4.4.2 mx.example.org Error: timeout exceeded\r\n")
    engine("mid_421", 0x01, GREETING + EHLO + OK_MAIL + "421 4.7.0 Too many errors\r\n")
    engine("data_554", 0x00, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT +
           "554 5.5.1 Error: no valid recipients\r\n" + "250 2.0.0 Ok\r\n" + BYE)
    engine("size_exceeded", 0x00, GREETING + EHLO_SMALL_SIZE + BYE)
    # Injection attempts: replies sent ahead of the commands.
    engine("ahead_354_250", 0x00, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT +
           "354 go ahead\r\n250 2.0.0 fake queued\r\n" + QUEUED + BYE, sizes=(0, 0, 0, 0))
    # "354" and a "250" in one read, before the end of data was sent: the
    # 4th and 8th feeds are 14 bytes, one line each otherwise.
    inj = (GREETING + "250-mx.example.org\r\n250-PIPELINING\r\n250 CHUNKING\r\n" +
           "250 ok\r\n" * 3 + "354 \r\n250 ok\r\n" + QUEUED + BYE)
    engine("inject_354_250", 0x00, inj, sizes=(0, 0, 0, 14))
    engine("inject_354_250_chained", 0x09, inj, sizes=(0, 0, 0, 14))
    engine("ahead_all_at_once", 0x01, SESSION, sizes=(255, 255, 255, 255))
    engine("chained_ahead", 0x09, GREETING + EHLO + OK_MAIL + OK_RCPT + OK_RCPT + GO +
           QUEUED + OK_MAIL + OK_RCPT + OK_RCPT + BDAT_OK + QUEUED + BYE,
           sizes=(0, 0, 0, 40))
    # Malformed replies.
    engine("bad_code", 0x00, GREETING + "25O-oops\r\n")
    engine("code_mismatch", 0x00, GREETING + "250-a\r\n251 b\r\n")
    engine("bare_lf", 0x00, GREETING.replace("\r\n", "\n") + EHLO.replace("\r\n", "\n") + BYE)
    engine("long_line", 0x10, GREETING + "250 " + "x" * 700 + "\r\n")
    # LMTP: one reply per accepted recipient after the end of data.
    engine("lmtp", 0x03, "220 lmtp.example.org LMTP\r\n250-lmtp.example.org\r\n"
           "250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n" + OK_MAIL + OK_RCPT +
           OK_RCPT + GO + "250 2.0.0 <one@example.net> delivered\r\n"
           "452 4.2.2 <two@example.net> mailbox full\r\n" + OK_MAIL + OK_RCPT + OK_RCPT +
           BDAT_OK + "250 2.0.0 ok\r\n250 2.0.0 ok\r\n" + BYE)
    # AUTH.
    engine("auth_plain", 0x05, GREETING + EHLO + "235 2.7.0 Authentication successful\r\n" +
           SESSION[len(GREETING) + len(EHLO):])
    engine("auth_plain_535", 0x04, GREETING + EHLO +
           "535 5.7.8 Error: authentication failed: authentication failure\r\n" +
           SESSION[len(GREETING) + len(EHLO):])
    engine("auth_login", 0x25, GREETING + EHLO + "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
           "235 2.7.0 Authentication successful\r\n" + SESSION[len(GREETING) + len(EHLO):])
    engine("auth_challenge_loop", 0x04, GREETING + EHLO + "334 \r\n" * 4 +
           "501 5.7.0 cancelled\r\n" + BYE)
    # STARTTLS, then a second EHLO.
    engine("starttls", 0x81, GREETING + EHLO + "220 2.0.0 Ready to start TLS\r\n" + EHLO +
           SESSION[len(GREETING) + len(EHLO):])
    engine("starttls_454", 0x80, GREETING + EHLO + "454 4.7.0 TLS not available\r\n" +
           SESSION[len(GREETING) + len(EHLO):])
    engine("noop_rset", 0x40, SESSION[:-len(BYE)] + "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n" + BYE)


# ---- replies ----------------------------------------------------------------

def seeds_reply():
    def reply(name, text, small=False, ml=0, mls=0):
        put("fuzz_reply", name, bytes([1 if small else 0, ml, mls]) + text.encode("latin-1"))
    reply("greeting", GREETING)
    reply("ehlo_multiline", EHLO)
    reply("smtp_sink_empty", "250-localhost\r\n250-PIPELINING\r\n250 \r\n")
    reply("code_only", "250\r\n354\n")
    reply("enhanced", "550 5.1.1 <x@y>: Recipient address rejected\r\n"
          "452-4.2.2 mailbox\r\n452 4.2.2 full\r\n")
    reply("bad_enhanced", "550 4.1.1 class mismatch\r\n250 2.1234.5 too long\r\n")
    reply("closing", "421 4.7.0 mx.example.org closing\r\n")
    reply("challenge", "334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n")
    reply("mismatch", "250-a\r\n251 b\r\n250 c\r\n")
    reply("garbage", "hello\r\n250 ok\r\n")
    reply("small_limits", "250-a\r\n250-b\r\n250-c\r\n250 d\r\n", True, 10, 2)
    reply("bare_lf", "250-x\n250 y\n")


# ---- framing ----------------------------------------------------------------

def seeds_frame():
    def frame(name, body, flags=0, ml=0, cuts=()):
        hdr = bytes([flags, ml, len(cuts)])
        for c in cuts:
            hdr += bytes([c >> 8, c & 255])
        put("fuzz_frame", name, hdr + body.encode("latin-1"))
    frame("dots", "Subject: x\r\n\r\n.\r\n..\r\n.x\r\nend\r\n.", cuts=(3, 13, 14))
    frame("bare_cr_lf", "a\rb\nc\r\n\r.\r\r\n.\n", cuts=(1, 2, 3, 4, 9))
    frame("split_crlf", "line\r\n.\r\nnext", cuts=(5, 6, 7))
    frame("bdat", "line\r\n.\r\nnext\r", flags=1, cuts=(4,))
    frame("long_line", "short\r\n" + "x" * 70 + "\r\n", flags=4, ml=63)
    frame("empty", "")
    frame("dot_only", ".")
    frame("smuggle", "a\n.\r\nMAIL FROM:<x>\r\n", cuts=(1, 2))
    # A limit under 64 with a whole 64-byte block after a short line: the
    # block fast path once measured only the block's first line.
    frame("regress_short_limit_block", "ab\r\n" + "x" * 80 + "\r\n", flags=4, ml=9)


# ---- codecs -----------------------------------------------------------------

def seeds_codec():
    def codec(name, data, b64line=0, col=9, limit=0, sizes=(0, 0, 0, 0)):
        put("fuzz_codec", name, bytes([b64line, col, limit]) + bytes(sizes) + b"\0" +
            (data.encode("utf-8") if isinstance(data, str) else data))
    codec("text", "Hello, world.\r\nSecond line with trailing space \r\n.dot\r\n")
    codec("utf8", "Grüße aus Köln — ¡olé! 日本語のテキスト", col=30, sizes=(3, 1, 7, 2))
    codec("binary", bytes(range(256)), b64line=1, limit=10, sizes=(1, 2, 3, 4))
    codec("qp_soft", "x" * 74 + "=" + "y" * 80 + "\t\n", sizes=(75, 1, 0, 2))
    codec("b64_text", base64.encodebytes(b"some base64 text\n" * 5).decode())
    codec("qp_text", "caf=C3=A9 =\r\nsoft break=20\r\n=XY invalid =\n")
    codec("long_word", "a" * 200, col=39)
    codec("cr_split", "a\r", sizes=(1, 1, 1, 1))


# ---- SASL -------------------------------------------------------------------

def seeds_sasl():
    def sasl(name, mech, flags, segments, limit=0):
        put("fuzz_sasl", name, bytes([mech, flags, limit]) + b"\n".join(
            s.encode("utf-8") if isinstance(s, str) else s for s in segments))
    mechs = "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN XOAUTH2"
    server_first = ("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    # RFC 7677 section 3, raw (encoded by the harness) and as base64.
    sasl("scram_rfc7677_raw", 3, 0x01 | 0x08, [mechs, server_first, server_final, "2.7.0 ok"])
    sasl("scram_rfc7677_b64", 3, 0x08, [mechs, base64.b64encode(server_first.encode()),
                                        base64.b64encode(server_final.encode()), ""])
    sasl("scram_final_in_235", 3, 0x09, [mechs, server_first,
                                         "2.7.0 " + base64.b64encode(server_final.encode()).decode()])
    sasl("scram_error", 3, 0x01, [mechs, server_first, "e=invalid-proof"])
    sasl("scram_empty_first", 3, 0x01, [mechs, "", server_first])
    sasl("scram_random", 4, 0x01, [mechs, "r=abc,s=c2FsdA==,i=1"])
    sasl("scram_custom_user", 3, 0x03, [mechs, "us=er,name\u00a0x", "pass\u200bword", server_first])
    # RFC 2195 CRAM-MD5 example challenge.
    sasl("cram_rfc2195", 2, 0x00, [mechs, "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"])
    sasl("login", 1, 0x00, [mechs, "VXNlcm5hbWU6", "UGFzc3dvcmQ6", "VXNlcm5hbWU6"])
    sasl("login_unknown", 1, 0x01, ["LOGIN", "who?", "what?", "again?"])
    sasl("plain_empty", 0, 0x00, ["PLAIN", ""])
    sasl("plain_small_limit", 0, 0x04, ["PLAIN", ""], limit=8)
    sasl("xoauth2_error", 5, 0x01, ["XOAUTH2", "",
                                    '{"status":"401","schemes":"bearer","scope":"https://mail"}'])
    sasl("not_base64", 2, 0x00, [mechs, "!!!not base64!!!"])


# ---- addresses (Lua fuzzer) ---------------------------------------------------

def seeds_address():
    lines = [
        "Ann Example <ann@example.com>",
        "bob@example.org (Bob Smith)",
        '"Smith, John" <john.smith@example.net>, mary@example.net',
        "Friends: a@x.example, \"B\" <b@y.example>;, c@z.example",
        "<@relay1.example,@relay2.example:user@host.example>",
        '"quoted local"@example.com',
        "user@[192.0.2.1]",
        "Grüße <gruss@example.de>",
        "=?UTF-8?Q?Caf=C3=A9?= <cafe@example.fr>",
        "Undisclosed recipients:;",
        "John Q. Public <jqp@example.com>",
        "(comment) \"a\\\"b\" (more) <x.y@example.com> (trailing)",
        "a@b, , ,c@d",
        "x" * 60 + " " + "y" * 40 + " <long.name@example.com>",
    ]
    for i, line in enumerate(lines):
        put("address", "seed%02d" % i, line.encode("utf-8"))


if __name__ == "__main__":
    seeds_engine()
    seeds_reply()
    seeds_frame()
    seeds_codec()
    seeds_sasl()
    seeds_address()
