//! The `spike` CLI.

fn main() {
    eprintln!("spike: not yet implemented");
    std::process::exit(1);
}
