//! The `spike-bootstrap` one-shot.

fn main() {
    eprintln!("spike-bootstrap: not yet implemented");
    std::process::exit(1);
}
