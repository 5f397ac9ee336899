// SluiceDump.java: run one query through the PostgreSQL JDBC driver and print its rows, for
// tests/integration/test_masking.py. Arguments: JDBC URL, user, password, SQL, and an
// optional integer parameter (then the query is a PreparedStatement run past
// prepareThreshold, so the driver uses named server-side statements). With SLUICE_FETCH_SIZE
// set, a plain query runs in a transaction with that fetch size: the driver then fetches the
// rows in parts, one Execute and Sync per part. Each row is one line of tab-separated columns,
// each column either \N (SQL NULL) or the hex of its UTF-8 text.
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.Properties;

public class SluiceDump {
    static String hex(String s) {
        StringBuilder b = new StringBuilder();
        for (byte x : s.getBytes(StandardCharsets.UTF_8)) b.append(String.format("%02x", x & 0xff));
        return b.toString();
    }

    static void print(ResultSet rs) throws SQLException {
        int n = rs.getMetaData().getColumnCount();
        StringBuilder out = new StringBuilder();
        while (rs.next()) {
            for (int i = 1; i <= n; i++) {
                if (i > 1) out.append('\t');
                String v = rs.getString(i);
                out.append(v == null ? "\\N" : hex(v));
            }
            out.append('\n');
        }
        System.out.print(out);
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        p.setProperty("prepareThreshold", "2");
        try (Connection c = DriverManager.getConnection(args[0], p)) {
            if (args.length > 4) {
                try (PreparedStatement ps = c.prepareStatement(args[3])) {
                    // run it a few times so the last run uses a named server-side statement
                    for (int k = 0; k < 3; k++) {
                        ps.setInt(1, Integer.parseInt(args[4]));
                        try (ResultSet rs = ps.executeQuery()) {
                            if (k == 2) print(rs);
                        }
                    }
                }
            } else {
                String fetch = System.getenv("SLUICE_FETCH_SIZE");
                if (fetch != null) c.setAutoCommit(false);
                try (Statement s = c.createStatement()) {
                    if (fetch != null) s.setFetchSize(Integer.parseInt(fetch));
                    try (ResultSet rs = s.executeQuery(args[3])) {
                        print(rs);
                    }
                }
                if (fetch != null) c.commit();
            }
        }
    }
}
