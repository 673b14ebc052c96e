//! Rebuild the relay when the web client changes: its files are embedded in the binary.
fn main() {
    println!("cargo:rerun-if-changed=../web-client/app");
}
