//! Demo backend `server3` on port 8083; all the behaviour lives in the servers library.

fn main() {
    servers::main_for("server3", 8083)
}
