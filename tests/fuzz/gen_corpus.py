#!/usr/bin/env python3
"""gen_corpus.py: writes the seed corpus of the wire-codec fuzz target into
tests/fuzz/corpus/fuzz_msg/ (binary files, committed). Real startup packets as psql,
libpq, JDBC and node-postgres send them, SSL/GSS/Cancel requests, and typed message
streams in both directions. Deterministic: rerun after changing it and commit the result.
Standard library only; run with any python3."""
import os
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_msg")


def u32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def startup(params, version=196608):
    body = u32(version) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
    return u32(len(body) + 4) + body


def msg(t, body=b""):
    return t.encode() + u32(len(body) + 4) + body


def cstr(s):
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"


def error(t, fields):
    return msg(t, b"".join(k.encode() + cstr(v) for k, v in fields) + b"\0")


PSQL = [("user", "alice@corp.com"), ("database", "shop"), ("options", "-c search_path=app"),
        ("application_name", "psql"), ("client_encoding", "UTF8")]
JDBC = [("user", "etl"), ("database", "shop"), ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
        ("TimeZone", "UTC"), ("extra_float_digits", "2")]
NODE = [("user", "copilot"), ("database", "shop"), ("application_name", "node-postgres")]

SERVER_HELLO = (msg("R", u32(0))
                + msg("S", cstr("server_version") + cstr("15.4 (Debian 15.4-1)"))
                + msg("S", cstr("client_encoding") + cstr("UTF8"))
                + msg("S", cstr("integer_datetimes") + cstr("on"))
                + msg("K", u32(123456) + u32(0x12345678))
                + msg("Z", b"I"))

SCRAM_FIRST = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
SCRAM_FINAL = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

SEEDS = {
    "startup_psql": startup(PSQL),
    "startup_jdbc": startup(JDBC),
    "startup_node": startup(NODE),
    "startup_v32": startup([("user", "bob"), ("_pq_.test", "x")], version=0x00030002),
    "startup_v2": u32(296) + u32(0x00020000) + b"shop".ljust(64, b"\0") + b"bob".ljust(32, b"\0")
    + b"\0" * 192,
    "ssl_request": u32(8) + u32(80877103),
    "gssenc_request": u32(8) + u32(80877104),
    "cancel_request": u32(16) + u32(80877102) + u32(123456) + u32(0xDEADBEEF),
    # client: startup, SCRAM exchange, a query, terminate
    "client_scram": startup(PSQL)
    + msg("p", cstr("SCRAM-SHA-256") + u32(len(SCRAM_FIRST)) + SCRAM_FIRST)
    + msg("p", SCRAM_FINAL) + msg("Q", cstr("SELECT 1")) + msg("X"),
    "client_password": startup(NODE) + msg("p", cstr("s3cret-token")) + msg("Q", cstr("BEGIN")),
    "client_sasl_no_data": msg("p", cstr("SCRAM-SHA-256") + u32(0xFFFFFFFF)),
    # client: extended protocol
    "client_extended": msg("P", cstr("") + cstr("SELECT $1::int") + struct.pack(">H", 1) + u32(23))
    + msg("B", cstr("") + cstr("") + struct.pack(">HHH", 0, 1, 0) + u32(1) + b"7" + struct.pack(">H", 0))
    + msg("D", b"P" + cstr("")) + msg("E", cstr("") + u32(0)) + msg("S"),
    # server: trust login, parameters, key, ready
    "server_hello": SERVER_HELLO,
    "server_md5": msg("R", u32(5) + b"\x01\x02\x03\x04"),
    "server_scram": msg("R", u32(10) + cstr("SCRAM-SHA-256") + b"\0")
    + msg("R", u32(11) + b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    + msg("R", u32(12) + b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") + SERVER_HELLO,
    "server_error": error("E", [("S", "ERROR"), ("V", "ERROR"), ("C", "42P01"),
                                ("M", 'relation "nope" does not exist'), ("P", "15"),
                                ("F", "parse_relation.c"), ("L", "1392"), ("R", "parserOpenTable")])
    + msg("Z", b"E"),
    "server_fatal": error("E", [("S", "FATAL"), ("V", "FATAL"), ("C", "28P01"),
                                ("M", 'password authentication failed for user "bob"')]),
    "server_notice": error("N", [("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"),
                                 ("M", "sluice: approval required (request 42); waiting up to 10m"),
                                 ("D", "some detail"), ("H", "a hint")]),
    "server_rows": msg("T", struct.pack(">H", 1) + cstr("email") + u32(16384) + struct.pack(">H", 2)
                       + u32(25) + struct.pack(">hih", -1, -1, 0))
    + msg("D", struct.pack(">H", 1) + u32(17) + b"alice@example.com")
    + msg("C", cstr("SELECT 1")) + msg("Z", b"T"),
    "server_negotiate": msg("v", u32(0) + u32(1) + cstr("_pq_.test")),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
