//! Times opening (parsing the header of) GGUF files, three times each:
//! `cargo run --release -p ferrite-gguf --example open_time -- MODEL...`
fn main() {
    for p in std::env::args().skip(1) {
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let f = ferrite_gguf::GgufFile::open(&p).expect("open");
            let open = t.elapsed();
            let t = std::time::Instant::now();
            drop(f);
            println!("{p}: open {:?}, drop {:?}", open, t.elapsed());
        }
    }
}
