//! The `spike-keeper` binary.

fn main() {
    eprintln!("spike-keeper: not yet implemented");
    std::process::exit(1);
}
