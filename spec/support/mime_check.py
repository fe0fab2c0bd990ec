#!/usr/bin/env python3
"""Parses a message file with Python's email package (policy.default), an
independent MIME implementation, and prints what it found as JSON:

  {
    "defects": [...],                 # message-level defects, as text
    "structure": "multipart/mixed(text/plain,application/pdf)",
    "headers": [["Subject", "decoded value"], ...],   # top-level, in order
    "addresses": {"to": {"mailboxes": [[name, addr], ...],
                         "groups": [[name or null, count], ...]}, ...},
    "lines": {"max": N, "max_header": N, "bare_cr_or_lf": N},
    "parts": [                        # every part, depth first
      {"path": "1.2", "content_type": "text/html", "params": {...},
       "cte": "base64", "disposition": "inline", "filename": "...",
       "content_id": "<...>", "defects": [...],
       "length": N, "sha256": "...", "hex": "..."}   # hex when N <= 4096
    ]
  }

Usage: mime_check.py MESSAGE_FILE...  (one JSON report a line, in order)
"""
import hashlib
import json
import sys
from email import policy
from email.parser import BytesParser

HEX_LIMIT = 4096
ADDRESS_HEADERS = ("from", "sender", "to", "cc", "bcc", "reply-to")


def defects_of(part):
    """The part's own defects and those of each of its headers."""
    found = [type(d).__name__ + ": " + str(d) for d in part.defects]
    for name, value in part.items():
        for d in getattr(value, "defects", ()):
            found.append(name + ": " + type(d).__name__ + ": " + str(d))
    return found


def structure(part):
    if part.is_multipart():
        inner = ",".join(structure(p) for p in part.get_payload())
        return part.get_content_type() + "(" + inner + ")"
    return part.get_content_type()


def addresses(msg):
    out = {}
    for name in ADDRESS_HEADERS:
        header = msg[name]
        if header is None:
            continue
        out[name] = {
            "mailboxes": [[a.display_name, a.addr_spec] for a in header.addresses],
            "groups": [[g.display_name, len(g.addresses)] for g in header.groups],
        }
    return out


def line_facts(raw):
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = raw.split(b"\r\n")
    # A CR or LF that is not part of a CRLF pair.
    bare = raw.replace(b"\r\n", b"").count(b"\r") + raw.replace(b"\r\n", b"").count(b"\n")
    return {
        "max": max(len(line) for line in lines),
        "max_header": max(len(line) for line in head.split(b"\r\n")),
        "bare_cr_or_lf": bare,
    }


def leaf(part, path):
    data = part.get_payload(decode=True) or b""
    info = {
        "path": path,
        "content_type": part.get_content_type(),
        "params": dict((k, str(v)) for k, v in part["content-type"].params.items())
        if part["content-type"] is not None else {},
        "cte": part.get("content-transfer-encoding"),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
        "content_id": part.get("content-id"),
        "defects": defects_of(part),
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if len(data) <= HEX_LIMIT:
        info["hex"] = data.hex()
    return info


def walk(part, path, out):
    if part.is_multipart():
        out.append({"path": path, "content_type": part.get_content_type(),
                    "defects": defects_of(part),
                    "params": dict((k, str(v)) for k, v in part["content-type"].params.items())})
        for i, child in enumerate(part.get_payload(), 1):
            walk(child, (path + "." if path else "") + str(i), out)
    else:
        out.append(leaf(part, path))


def report_of(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    parts = []
    walk(msg, "", parts)
    return {
        "defects": defects_of(msg),
        "structure": structure(msg),
        "headers": [[k, str(v)] for k, v in msg.items()],
        "addresses": addresses(msg),
        "lines": line_facts(raw),
        "parts": parts,
    }


def main():
    # Several files in one run: starting Python costs more than parsing.
    for path in sys.argv[1:]:
        json.dump(report_of(path), sys.stdout)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
