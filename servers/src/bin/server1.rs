//! Demo backend `server1` on port 8081; all the behaviour lives in the servers library.

fn main() {
    servers::main_for("server1", 8081)
}
