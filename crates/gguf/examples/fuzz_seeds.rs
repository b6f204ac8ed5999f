//! Writes small valid GGUF files, made with this crate's writer, into a folder: the seed corpus
//! of the fuzz target in `fuzz/` (`cargo run -p ferrite-gguf --example fuzz_seeds -- DIR`).

use ferrite_gguf::{writer, Array, GgmlType, Metadata, TensorSpec, Value};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/parse".into());
    std::fs::create_dir_all(&dir)?;
    let save = |name: &str, m: &Metadata, t: &[(TensorSpec, &[u8])]| -> std::io::Result<()> {
        std::fs::write(format!("{dir}/{name}.gguf"), writer::to_vec(m, t)?)
    };

    save("empty", &Metadata::new(), &[])?;

    let mut all = Metadata::new();
    let values = [
        Value::U8(1),
        Value::I8(-2),
        Value::U16(3),
        Value::I16(-4),
        Value::U32(5),
        Value::I32(-6),
        Value::U64(7),
        Value::I64(-8),
        Value::F32(0.5),
        Value::F64(-0.25),
        Value::Bool(true),
        Value::String("héllo".into()),
        Value::Array(Array::String(["a", "", "ç"].iter().collect())),
        Value::Array(Array::F32(vec![1.0, -1.0])),
        Value::Array(Array::Bool(vec![true, false])),
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::Array(vec![Array::U8(vec![3])]),
        ])),
    ];
    for (i, v) in values.into_iter().enumerate() {
        all.insert(format!("k.{i}"), v).unwrap();
    }
    save("all_value_types", &all, &[])?;

    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String("llama".into()))
        .unwrap();
    m.insert("general.alignment", Value::U32(64)).unwrap();
    let f32s = vec![7u8; 4 * 6];
    let q4 = vec![9u8; 18 * 2];
    let q8 = vec![1u8; 34];
    let q4k = vec![2u8; 144];
    save(
        "tensors",
        &m,
        &[
            (TensorSpec::new("a", &[3, 2], GgmlType::F32), &f32s),
            (TensorSpec::new("b.weight", &[32, 2], GgmlType::Q4_0), &q4),
            (TensorSpec::new("c", &[32, 1, 1, 1], GgmlType::Q8_0), &q8),
            (TensorSpec::new("d", &[256], GgmlType::Q4_K), &q4k),
        ],
    )?;

    let mut tok = Metadata::new();
    tok.insert(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(["<s>", "x"].iter().collect())),
    )
    .unwrap();
    tok.insert(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0, -1.0])),
    )
    .unwrap();
    tok.insert(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![3, 1])),
    )
    .unwrap();
    tok.insert("split.count", Value::U16(1)).unwrap();
    save(
        "tokenizer",
        &tok,
        &[(TensorSpec::new("t", &[2], GgmlType::F16), &[0u8; 4])],
    )?;
    Ok(())
}
