#!/usr/bin/python3
"""pii.py: the PII-heavy table of bench/run.sh's masking benchmark, and the check that sluice
really masked it.

  pii.py gen [ROWS]          print ROWS (100000) rows for COPY pii FROM STDIN (tab separated):
                             id, email, ssn, card (Luhn-valid, 16 digits in groups of 4), note
                             (exactly 80 bytes; every 10th note holds an email, every 10th
                             other one a phone number, the rest no PII)
  pii.py verify RAW MASKED   RAW and MASKED are `psql -AtF'<TAB>'` outputs of
                             `SELECT * FROM pii ORDER BY id`, direct and through sluice as a
                             masked identity. Checks row by row that every email, SSN and card
                             differs from the raw value and shows no more than its last 4
                             digits, and that no PII placed in a note appears raw. Prints one
                             line of counts; exit status 1 when anything leaked.

The data is made from a fixed seed, so every run measures the same bytes.
"""
import random
import sys

FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter"]
LAST = ["smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "anderson", "thomas",
        "moore", "martin", "lee", "perez", "white", "harris", "clark", "lewis", "young"]
DOMAINS = ["example.com", "corp.example.org", "mail.example.net", "shop.example.io"]
WORDS = ["customer", "asked", "about", "order", "delivery", "refund", "pending", "review",
         "shipped", "invoice", "ticket", "support", "status", "follow", "up", "next", "week",
         "returned", "item", "quantity", "total", "payment", "address", "changed"]


def luhn_digit(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # these get doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(rng):
    prefix = rng.choice(["4", "51", "52", "53", "54", "55"])
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(15 - len(prefix)))
    num = body + luhn_digit(body)
    return " ".join(num[i:i + 4] for i in range(0, 16, 4))


def ssn(rng):
    area = rng.randrange(1, 666)
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def email(rng, i):
    return f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}@{rng.choice(DOMAINS)}"


def phone(rng):
    return (f"({rng.randrange(2, 10)}{rng.randrange(100):02d}) "
            f"{rng.randrange(2, 10)}{rng.randrange(100):02d}-{rng.randrange(10000):04d}")


def note(rng, i):
    """An 80-byte note and the PII placed in it (or None)."""
    pii = None
    if i % 10 == 3:
        pii = f"{rng.choice(FIRST)}{i}@{rng.choice(DOMAINS)}"
    elif i % 10 == 7:
        pii = phone(rng)
    head = f"contact {pii} " if pii else ""
    words = []
    while len(head) + len(" ".join(words)) < 80:
        words.append(rng.choice(WORDS))
    return (head + " ".join(words))[:80], pii


def rows(n):
    rng = random.Random(4242)
    for i in range(1, n + 1):
        nt, pii = note(rng, i)
        yield i, email(rng, i), ssn(rng), card(rng), nt, pii


def gen(n):
    out = sys.stdout
    for i, em, sn, cd, nt, _ in rows(n):
        out.write(f"{i}\t{em}\t{sn}\t{cd}\t{nt}\n")


def digits(s):
    return "".join(c for c in s if c.isdigit())


def verify(raw_path, masked_path):
    with open(raw_path) as f:
        raw = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    with open(masked_path) as f:
        masked = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    bad = {"email": 0, "ssn": 0, "card": 0, "note": 0, "shape": 0}
    notes_pii = 0
    n = min(len(raw), len(masked))
    if len(raw) != len(masked):
        bad["shape"] += abs(len(raw) - len(masked))
    example = None
    # The PII placed in notes, regenerated from the same seed, by id.
    placed = {r[0]: r[5] for r in rows(len(raw)) if r[5]}
    for k in range(n):
        r, m = raw[k], masked[k]
        if len(r) != 5 or len(m) != 5 or r[0] != m[0]:
            bad["shape"] += 1
            continue
        _, em, sn, cd, nt = r
        _, mem, msn, mcd, mnt = m
        if mem == em or "@" in mem and mem.split("@")[0] == em.split("@")[0]:
            bad["email"] += 1
        if msn == sn or len(digits(msn)) > 4:
            bad["ssn"] += 1
        if mcd == cd or len(digits(mcd)) > 4:
            bad["card"] += 1
        pii = placed.get(int(r[0]))
        if pii:
            notes_pii += 1
            if pii in mnt:
                bad["note"] += 1
        if example is None:
            example = "\t".join(m)
    leaked = sum(bad.values())
    print(f"{n} rows compared, {notes_pii} notes with PII; unmasked: email {bad['email']}, "
          f"ssn {bad['ssn']}, card {bad['card']}, note {bad['note']}, row mismatches "
          f"{bad['shape']}; first masked row: {example}")
    return 1 if leaked or n == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "gen":
        gen(int(sys.argv[2]) if len(sys.argv) > 2 else 100000)
    elif len(sys.argv) == 4 and sys.argv[1] == "verify":
        sys.exit(verify(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
