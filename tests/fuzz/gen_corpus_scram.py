#!/usr/bin/env python3
"""gen_corpus_scram.py: writes the seed corpus of the SCRAM fuzz target into
tests/fuzz/corpus/fuzz_scram/ (committed). Input layout of fuzz_scram.c: one delimiter byte,
then piece A, the delimiter, piece B. For the server side A is a client-first and B a
client-final; for the client side A is a server-first and B a server-final. The RFC 7677
exchange is used as is; the other exchanges are computed here (PBKDF2, HMAC-SHA-256 from
hashlib) with the fixed verifier ("pencil", RFC salt) and nonces the target uses, so their
proofs and signatures verify. Verifier and base64 seeds exercise the whole-input parsers.
Deterministic: rerun after changing it and commit the result. Standard library only."""
import base64
import hashlib
import hmac
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_scram")

PASSWORD = b"pencil"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_NONCE = b"rOprNGfwEbeRWgbNEkqO"        # the target's client nonce (RFC 7677)
SERVER_NONCE = b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"  # the target's server nonce (RFC 7677)

# RFC 7677 section 3, verbatim.
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# Verifiers copied out of a PostgreSQL 15 pg_authid (as in tests/unit/test_scram.c).
PG_VERIFIERS = [
    b"SCRAM-SHA-256$4096:5fwBl+pWSuA/0GTNamHukg==$cHO98MO72EvvFI8RrVJuBlmfNeEoeeJBzel3kCP9TIA=:"
    b"Y4uTXZ7m1/d2u57QQLcEZ69RioZ5FIJji/1AlyFvFMM=",
    b"SCRAM-SHA-256$4096:+S5b6tqeg95EwP2Zp8WcCQ==$ZOYcIK7ERzFn4+vNV9gqavkWoH49qqB2qro88LKYCWE=:"
    b"L2+pk/3TUThVp/c4Zun+P1lFrQOWLg2F5853QMAnjdE=",
]


def b64(b):
    return base64.b64encode(b)


def h(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = h(salted, b"Client Key")
    return client_key, hashlib.sha256(client_key).digest(), h(salted, b"Server Key")


def exchange(first, server_first, final_no_proof, password=PASSWORD, salt=SALT, iterations=4096):
    """client-final with its proof, and the server-final, for one exchange."""
    bare = first[first.index(b",", first.index(b",") + 1) + 1:]
    auth = bare + b"," + server_first + b"," + final_no_proof
    client_key, stored, server_key = keys(password, salt, iterations)
    proof = bytes(a ^ b for a, b in zip(client_key, h(stored, auth)))
    return final_no_proof + b",p=" + b64(proof), b"v=" + b64(h(server_key, auth))


def server_first_for(cnonce, salt=SALT, iterations=4096):
    return b"r=" + cnonce + SERVER_NONCE + b",s=" + b64(salt) + b",i=" + str(iterations).encode()


def server_seed(first, cb=b"biws", ext=b""):
    """A client-first and a client-final the target's server accepts."""
    cnonce = first.split(b"r=", 1)[1].split(b",", 1)[0]
    sf = server_first_for(cnonce)
    final, _ = exchange(first, sf, b"c=" + cb + b",r=" + cnonce + SERVER_NONCE + ext)
    return b"\n" + first + b"\n" + final


def client_seed(salt, iterations, server_nonce=b"3rfcNHYJY1ZVvWVs7j", ext=b""):
    """A server-first and a server-final the target's client accepts."""
    first = b"n,,n=user,r=" + CLIENT_NONCE
    sf = b"r=" + CLIENT_NONCE + server_nonce + b",s=" + b64(salt) + b",i=" + str(iterations).encode() + ext
    _, sfin = exchange(first, sf, b"c=biws,r=" + CLIENT_NONCE + server_nonce, salt=salt,
                       iterations=iterations)
    return b"\n" + sf + b"\n" + sfin


def check_rfc():
    final, sfin = exchange(RFC_CLIENT_FIRST, RFC_SERVER_FIRST,
                           b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert final == RFC_CLIENT_FINAL and sfin == RFC_SERVER_FINAL, "RFC 7677 vector mismatch"


SEEDS = {
    # server side, RFC 7677 verbatim, with '\n' and NUL as the delimiter
    "server_rfc": b"\n" + RFC_CLIENT_FIRST + b"\n" + RFC_CLIENT_FINAL,
    "server_rfc_nul": b"\0" + RFC_CLIENT_FIRST + b"\0" + RFC_CLIENT_FINAL,
    # server side: what libpq sends (empty n=), the "y,," flag, extensions on both messages
    "server_libpq": server_seed(b"n,,n=,r=Fr5mZ1e8jD0Xq+2aL7wT4Ycs"),
    "server_y_flag": server_seed(b"y,,n=,r=JkQx9v7Yb2Lw0pTz", cb=b"eSws"),
    "server_extensions": server_seed(b"n,,n=user,r=abcDEF123,x=ext"),
    "server_final_ext": server_seed(b"n,,n=alice,r=abcDEF123", ext=b",x=ext"),
    # the RFC proof with non-zero unused bits in its last base64 character: same bytes, accepted
    "server_noncanonical_proof": b"\0" + RFC_CLIENT_FIRST + b"\0" + RFC_CLIENT_FINAL[:-2] + b"S=",
    "server_wrong_proof": b"\n" + RFC_CLIENT_FIRST + b"\n" + RFC_CLIENT_FINAL[:-5] + b"AAAA=",
    "server_channel_binding": b"\np=tls-server-end-point,,n=,r=abc\nc=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abc,p=AAAA",
    # an accepted -PLUS exchange: the first message's length is 1 mod 3, so the target offers
    # binding with its data (0x5c 0x11 0xce, then zeros) and takes -PLUS as chosen
    "server_plus_accepted": server_seed(
        b"p=tls-server-end-point,,n=,r=Pq7XwZ2m",
        cb=b64(b"p=tls-server-end-point,," + bytes([0x5c, 0x11, 0xce]) + bytes(29))),
    # client side: RFC 7677 verbatim, a cheap exchange (i=1), a 64-byte salt, an error
    "client_rfc": b"\n" + RFC_SERVER_FIRST + b"\n" + RFC_SERVER_FINAL,
    "client_iter1": client_seed(b"saltsaltsaltsalt", 1),
    "client_salt64": client_seed(bytes(range(64)), 2, ext=b",x=ext"),
    "client_error": b"\n" + RFC_SERVER_FIRST + b"\ne=invalid-proof",
    "client_mandatory_ext": b"\nm=ext,r=rOprNGfwEbeRWgbNEkqOxyz,s=QQ==,i=1\nv=",
    # whole-input parsers
    "verifier_pg1": PG_VERIFIERS[0],
    "verifier_pg2": PG_VERIFIERS[1],
    "verifier_rfc": b"SCRAM-SHA-256$4096:" + b64(SALT) + b"$" + b64(keys(PASSWORD, SALT, 4096)[1])
    + b":" + b64(keys(PASSWORD, SALT, 4096)[2]),
    "b64_pad2": b"QQ==",
    "b64_pad1": b"QUI=",
    "b64_salt": b"W22ZaJ0SNY7soEsUEjb6gQ==",
}


def main():
    check_rfc()
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
