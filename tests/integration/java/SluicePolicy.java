// SluicePolicy.java: the PostgreSQL JDBC driver sees sluice's refusals as ordinary
// SQLExceptions with SQLSTATE 42501, for plain and prepared statements (also beyond
// prepareThreshold, i.e. server-side prepared) and inside a transaction; the connection stays
// usable. Run by tests/integration/test_policy.py. Prints "OK".
import java.sql.*;

public class SluicePolicy {

    interface Sql { void run() throws SQLException; }

    static void refused(String rule, Sql s) throws SQLException {
        try {
            s.run();
        } catch (SQLException e) {
            if (!"42501".equals(e.getSQLState()) || !e.getMessage().contains("blocked by rule \"" + rule + "\""))
                throw new AssertionError("wrong refusal: " + e.getSQLState() + " " + e.getMessage());
            return;
        }
        throw new AssertionError("not refused (rule " + rule + ")");
    }

    public static void main(String[] a) throws Exception {
        try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
            try (Statement st = c.createStatement()) {
                refused("drop", () -> st.execute("DROP TABLE orders"));
            }
            try (PreparedStatement ps = c.prepareStatement("DELETE FROM orders WHERE ?")) {
                for (int i = 0; i < 7; i++) { // past prepareThreshold (5): named server-side statements
                    ps.setBoolean(1, true);
                    refused("delete_without_where", ps::executeUpdate);
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM orders WHERE id > ?")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 0);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) <= 0) throw new AssertionError("no orders");
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("SELECT 1");
                refused("truncate", () -> st.execute("TRUNCATE orders"));
                try {
                    st.execute("SELECT 1");
                    throw new AssertionError("transaction not failed");
                } catch (SQLException e) {
                    if (!"25P02".equals(e.getSQLState())) throw e;
                }
                c.rollback();
                st.execute("SELECT 1");
            }
            c.commit();
        }
        System.out.println("OK");
    }
}
