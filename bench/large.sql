-- large.sql: the "large result" workload of bench/run.sh (pgbench -f): 100,000 rows of about
-- 150 bytes that look like personal data (emails, SSNs, card numbers), about 15 MB per
-- transaction, to measure what result streaming (and later masking) costs.
SELECT md5(i::text)||'@example.com' AS email, lpad(i::text,9,'0') AS ssn, '4242 4242 4242 '||lpad((i%10000)::text,4,'0') AS card, 'note '||repeat('x',80) AS note FROM generate_series(1,100000) i;
