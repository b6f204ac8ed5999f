//! Tokenizer throughput on Debian's GPL-3 text (`/usr/share/common-licenses/GPL-3`, or the
//! committed copy in `benches/data/GPL-3.txt` when the system one is absent), both real models.
//!
//! `FERRITE_MODELS=... cargo bench -p ferrite-engine --bench tokenize`; criterion reports
//! throughput in bytes/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrite_engine::tokenizer::Tokenizer;
use ferrite_gguf::GgufFile;

fn text() -> String {
    std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .unwrap_or_else(|_| include_str!("data/GPL-3.txt").to_string())
}

fn bench(c: &mut Criterion) {
    let text = text();
    let mut g = c.benchmark_group("tokenize_gpl3");
    g.throughput(Throughput::Bytes(text.len() as u64));
    for (name, path) in [
        ("smollm2", ferrite_testdata::smollm2()),
        ("gemma3", ferrite_testdata::gemma3()),
    ] {
        let f = GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_metadata(f.metadata()).unwrap();
        let n = tok.encode(&text, true, true).unwrap().len();
        eprintln!("{name}: {} bytes -> {n} tokens", text.len());
        g.bench_function(name, |b| b.iter(|| tok.encode(&text, true, true).unwrap()));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
