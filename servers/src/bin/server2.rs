//! Demo backend `server2` on port 8082; all the behaviour lives in the servers library.

fn main() {
    servers::main_for("server2", 8082)
}
