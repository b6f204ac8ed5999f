use ferrite_gguf::{GgmlType, GgufFile};
fn main() {
    let f = GgufFile::open("/work/shared/reference/tiny/tiny-llama-f32.gguf").unwrap();
    let imat = std::env::args().nth(1).is_some();
    for ty in ["Q2_K","Q3_K","Q4_K","Q5_K","Q6_K","IQ4_NL","IQ4_XS","Q8_K"] {
        let ty = GgmlType::from_name(ty).unwrap();
        for t in f.tensors() {
            if t.dims.len() != 2 { continue; }
            let x: Vec<f32> = f.tensor_data(t).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let mut q = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
            let t0 = std::time::Instant::now();
            let qw: Vec<f32> = (0..t.dims[0]).map(|i| if i % 7 == 0 { 10.0 } else { 1.0 }).collect();
            ferrite_quant::quantize::quantize(ty, &x, if imat { Some(&qw) } else { None }, &mut q).unwrap();
            if t.name == "output.weight" { eprintln!("{ty} {:?}", t0.elapsed()); }
            std::fs::write(format!("/tmp/qdev/{}.{}.bin", ty, t.name), &q).unwrap();
        }
    }
}
