//! `analysis`: the assignment's experiments (being written).

fn main() {
    eprintln!("analysis: not written yet");
    std::process::exit(2);
}
