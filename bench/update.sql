-- update.sql: the "write-latency" workload of bench/run.sh (pgbench -c 1 -M simple -f, with
-- -s set to the bench's scale so that :scale matches pgbench -i): one single-row UPDATE per
-- transaction, outside any explicit transaction. Through an audited sluice each UPDATE is a
-- write, so it is parked until the writer has committed its audit event (the durability
-- contract of docs/audit.md); run with one client, the average latency shows what that wait
-- costs per write.
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
