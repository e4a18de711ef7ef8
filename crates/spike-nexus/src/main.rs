//! The `spike-nexus` binary.

fn main() {
    eprintln!("spike-nexus: not yet implemented");
    std::process::exit(1);
}
