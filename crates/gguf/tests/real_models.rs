//! Both real models, read by ferrite and compared with the reference reader: the JSON dumps in
//! `tests/data/` were made by `scripts/gguf_dump.py` with the `gguf` Python package. Every key,
//! its type and value (long arrays: length, first/last 5 elements and a sha256 of all of them),
//! every tensor's name, type, shape, offsets, size and a sha256 of its data must match exactly.

use std::path::Path;

use ferrite_gguf::{writer, Array, GgmlType, GgufFile, OpenOptions, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

const SUMMARY_OVER: usize = 64;
const HEAD: usize = 5;

fn float(x: f64) -> Json {
    if x.is_nan() {
        json!("nan")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(x)
    }
}

fn scalar(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(_) => panic!("nested arrays are not in the reference dumps"),
    }
}

fn entry(key: &str, v: &Value) -> Json {
    let Value::Array(a) = v else {
        return json!({"key": key, "type": v.value_type().name(), "value": scalar(v)});
    };
    let mut enc = Vec::new();
    writer::write_array_elements(&mut enc, a).unwrap();
    let elems = |r: std::ops::Range<usize>| -> Vec<Json> {
        r.map(|i| scalar(&a.get(i).unwrap())).collect()
    };
    let mut e = json!({
        "key": key, "type": "array", "element_type": a.element_type().name(), "len": a.len(),
        "sha256": hex(&Sha256::digest(&enc)),
    });
    if a.len() <= SUMMARY_OVER {
        e["value"] = elems(0..a.len()).into();
    } else {
        e["head"] = elems(0..HEAD).into();
        e["tail"] = elems(a.len() - HEAD..a.len()).into();
    }
    e
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(path: &Path, dump: &str, opts: OpenOptions) -> GgufFile {
    let reference: Json = serde_json::from_str(dump).unwrap();
    let f = GgufFile::open_with(path, opts).unwrap();
    assert_eq!(f.file_size(), reference["file_size"]);
    assert_eq!(f.version(), reference["version"]);
    assert_eq!(f.alignment(), reference["alignment"]);
    assert_eq!(f.header().data_offset, reference["data_offset"]);

    let want = reference["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), want.len());
    for ((k, v), w) in f.metadata().iter().zip(want) {
        assert_eq!(&entry(k, v), w, "metadata key {k}");
    }

    let want = reference["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), want.len());
    for (t, w) in f.tensors().iter().zip(want) {
        let got = json!({
            "name": t.name, "type": t.ty.name(), "shape": t.dims, "n_elements": t.n_elements,
            "n_bytes": t.n_bytes, "offset": t.offset, "file_offset": t.file_offset,
            "sha256": hex(&Sha256::digest(f.tensor_data(t))),
        });
        assert_eq!(&got, w, "tensor {}", t.name);
    }
    f
}

fn count(f: &GgufFile, ty: GgmlType) -> usize {
    f.tensors().iter().filter(|t| t.ty == ty).count()
}

#[test]
fn smollm2_matches_the_python_reader() {
    let path = ferrite_testdata::smollm2();
    let dump = include_str!("data/smollm2.json");
    for mmap in [true, false] {
        let f = check(&path, dump, OpenOptions { mmap });
        assert_eq!(f.is_mapped(), mmap);
        assert_eq!(f.tensors().len(), 272);
        assert_eq!(f.metadata().len(), 33);
        assert_eq!(count(&f, GgmlType::Q4_1), 210);
        assert_eq!(count(&f, GgmlType::F32), 61);
        assert_eq!(count(&f, GgmlType::Q8_0), 1);
        let m = f.metadata();
        assert_eq!(m.architecture(), Some("llama"));
        assert_eq!(m.get_u64("llama.block_count").unwrap(), Some(30));
        let tokens = m.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
        assert_eq!(tokens.len(), 49152);
        assert_eq!(&tokens[0], "<|endoftext|>");
        let Some(Value::Array(Array::I32(tt))) = m.get("tokenizer.ggml.token_type") else {
            panic!("token_type")
        };
        assert_eq!(tt.len(), 49152);
    }
}

#[test]
fn gemma3_matches_the_python_reader() {
    let path = ferrite_testdata::gemma3();
    let f = check(
        &path,
        include_str!("data/gemma3.json"),
        OpenOptions::default(),
    );
    assert_eq!(f.tensors().len(), 236);
    let mut types: Vec<GgmlType> = f.tensors().iter().map(|t| t.ty).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        [
            GgmlType::F32,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K
        ]
    );
    let m = f.metadata();
    assert_eq!(m.architecture(), Some("gemma3"));
    assert_eq!(
        m.get_str_array("tokenizer.ggml.tokens")
            .unwrap()
            .unwrap()
            .len(),
        262144
    );
}
