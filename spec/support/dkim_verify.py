#!/usr/bin/python3
# dkim_verify.py MESSAGE_FILE NAME=RECORD...: verifies every DKIM-Signature
# of the message with dkimpy (Debian's python3-dkim; python3-nacl for
# Ed25519), its DNS lookups answered from the NAME=RECORD arguments
# ("sel._domainkey.example.org=v=DKIM1; k=rsa; p=..."). Line ends are made
# CRLF first (a delivered copy may have LF). Prints one line per signature
# ("ok d= s= a=" or "FAIL ...") and exits 0 only when there is at least one
# signature and all verify.
import sys
import re
import dkim

msg = open(sys.argv[1], 'rb').read()
msg = re.sub(rb'\r?\n', b'\r\n', msg)
records = {}
for arg in sys.argv[2:]:
    name, rec = arg.split('=', 1)
    records[name.lower()] = rec.encode()


def dns(name, timeout=5):
    return records.get(name.decode().rstrip('.').lower(), b'')


d = dkim.DKIM(msg)
head = msg.split(b'\r\n\r\n', 1)[0]
count = len(re.findall(rb'(?im)^dkim-signature:', head))
good = count > 0
for i in range(count):
    ok = d.verify(idx=i, dnsfunc=dns)
    print(('ok' if ok else 'FAIL') + ' signature %d of %d' % (i + 1, count))
    good = good and ok
sys.exit(0 if good else 1)
