// SluiceJdbc.java: the PostgreSQL JDBC driver through sluice, run by
// tests/integration/test_jdbc.py. Arguments: JDBC URL, user, password. Exercises plain and
// prepared statements (past prepareThreshold, so the driver switches to named server-side
// statements), a batch insert, a transaction rollback, an error inside a transaction, and
// the backend pid. Prints "OK"; any failure throws (non-zero exit).
import java.sql.*;
import java.util.Properties;

public class SluiceJdbc {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        p.setProperty("prepareThreshold", "3");
        try (Connection c = DriverManager.getConnection(args[0], p)) {
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM customers")) {
                rs.next();
                check(rs.getInt(1) == 50, "customer count");
            }
            // prepared statement used beyond prepareThreshold
            try (PreparedStatement ps = c.prepareStatement("SELECT name, email FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 12; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "row " + i);
                        check(rs.getString(1).equals("customer " + i), "name " + i);
                        check(rs.getString(2).equals("user" + i + "@example.com"), "email " + i);
                    }
                }
                check(((org.postgresql.PGStatement) ps).isUseServerPrepare(), "server prepare in use");
            }
            // batch insert in a transaction
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE jdbc_batch (id int, v text, n numeric)");
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?, ?)")) {
                for (int i = 0; i < 1000; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "value " + i);
                    ps.setBigDecimal(3, new java.math.BigDecimal(i).movePointLeft(2));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 1000, "batch count");
            }
            c.commit();
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch VALUES (?, 'rolled back', 0)")) {
                ps.setInt(1, -1);
                ps.executeUpdate();
            }
            c.rollback();
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*), sum(id), sum(n) FROM jdbc_batch")) {
                rs.next();
                check(rs.getInt(1) == 1000, "batch rows");
                check(rs.getLong(2) == 499500L, "batch sum");
                check(rs.getBigDecimal(3).compareTo(new java.math.BigDecimal("4995.00")) == 0, "numeric sum");
            }
            c.commit();
            // an error inside a transaction: 25P02 until rollback
            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("SELECT 1/0");
                    check(false, "expected division by zero");
                } catch (SQLException e) {
                    check("22012".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                try {
                    s.executeQuery("SELECT 1");
                    check(false, "expected 25P02");
                } catch (SQLException e) {
                    check("25P02".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                c.rollback();
                try (ResultSet rs = s.executeQuery("SELECT pg_backend_pid()")) {
                    rs.next();
                    int pid = rs.getInt(1);
                    check(pid == ((org.postgresql.PGConnection) c).getBackendPID(), "backend pid");
                }
            }
            c.commit();
        }
        System.out.println("OK");
    }
}
