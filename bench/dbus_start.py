#!/usr/bin/env python3
"""Sends N `Start(s)` calls, each with a profile name of SIZE bytes, to igotchuu on the bus at
$DBUS_SYSTEM_BUS_ADDRESS (unix:path=… only), over one connection, and waits for every answer.
gdbus cannot send such names: one argv string is at most 128 KiB. Raw D-Bus, standard library
only. Usage: dbus_start.py N SIZE"""
import os
import socket
import struct
import sys


def pad(buf, n):
    return buf + b"\0" * ((-len(buf)) % n)


def call(serial, dest, path, iface, member, sig="", body=b""):
    msg = b"l" + bytes([1, 0, 1]) + struct.pack("<II", len(body), serial) + b"\0\0\0\0"
    for code, typ, val in [(1, "o", path), (2, "s", iface), (3, "s", member), (6, "s", dest)] + (
        [(8, "g", sig)] if sig else []
    ):
        msg = pad(msg, 8) + bytes([code, 1]) + typ.encode() + b"\0"
        v = val.encode()
        if typ == "g":
            msg += bytes([len(v)]) + v + b"\0"
        else:
            msg = pad(msg, 4) + struct.pack("<I", len(v)) + v + b"\0"
    msg = msg[:12] + struct.pack("<I", len(msg) - 16) + msg[16:]
    return pad(msg, 8) + body


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise SystemExit("the bus closed the connection")
        buf += chunk
    return buf


def main():
    n, size = int(sys.argv[1]), int(sys.argv[2])
    addr = os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr.split("path=", 1)[1].split(",")[0])
    s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    if not read_exact(s, 3) == b"OK ":
        raise SystemExit("authentication refused")
    while not s.recv(1) == b"\n":
        pass
    s.sendall(b"BEGIN\r\n")
    s.sendall(call(1, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello"))
    name = ("p" * size).encode()
    body = struct.pack("<I", len(name)) + name + b"\0"
    for i in range(n):
        s.sendall(call(2 + i, "com.nyantec.IGotChuu", "/com/nyantec/igotchuu",
                       "com.nyantec.igotchuu1", "Start", "s", body))
    answers = 0
    errors = {}
    while answers < n + 1:
        head = read_exact(s, 16)
        body_len, _, fields_len = struct.unpack("<III", head[4:16])
        rest = read_exact(s, fields_len + ((-fields_len) % 8) + body_len)
        if head[1] in (2, 3):
            answers += 1
        if head[1] == 3:
            # The error name is a header field (code 4); show which errors came back.
            f = rest[:fields_len]
            at = f.find(b"com.nyantec") if b"com.nyantec" in f else f.find(b"org.freedesktop")
            name_ = f[at:f.index(b"\0", at)].decode() if at >= 0 else "?"
            errors[name_] = errors.get(name_, 0) + 1
    print(f"{n} Start calls with {size}-byte names answered: {errors}")


main()
