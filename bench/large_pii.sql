-- large_pii.sql: the "large-pii" workload of bench/run.sh (pgbench -f): the whole table pii,
-- 100,000 rows of id, email, SSN, card number (Luhn-valid), 80-byte note (10% of notes hold an
-- email, 10% a phone number), made by bench/pii.py; about 15 MB of values per transaction.
-- Through sluice as identity `bench` every email, SSN, card and note PII is masked; as
-- `bench-raw` (masking.unmask) the same rows pass through untouched.
SELECT * FROM pii;
