//! Fuzz target: arbitrary bytes as a GGUF file. Parsing must return `Ok` or `Err`, never panic,
//! hang or over-allocate. When it parses, every tensor's data slice is read, and the file is
//! written back with the writer and parsed again: the second write must be byte-identical to
//! the first (what the reader accepts, the writer reproduces).
#![no_main]

use ferrite_gguf::{writer, GgufFile, TensorSpec};
use libfuzzer_sys::fuzz_target;

fn rewrite(f: &GgufFile) -> Vec<u8> {
    let tensors: Vec<(TensorSpec, &[u8])> = f
        .tensors()
        .iter()
        .map(|t| (TensorSpec::new(t.name.clone(), &t.dims, t.ty), f.tensor_data(t)))
        .collect();
    writer::to_vec(f.metadata(), &tensors).expect("a parsed file can be written back")
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut sum = 0u64;
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes);
        sum = sum.wrapping_add(d.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    std::hint::black_box(sum);
    for (k, v) in f.metadata().iter() {
        std::hint::black_box(format!("{k} {} {v}", v.type_description()));
    }
    let once = rewrite(&f);
    let again = GgufFile::from_bytes(once.clone()).expect("the writer's output parses");
    assert_eq!(rewrite(&again), once, "write → parse → write is not stable");
});
