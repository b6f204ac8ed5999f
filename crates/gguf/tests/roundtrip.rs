//! Writer → reader round trips (proptest over random metadata and tensors) and split models.

use ferrite_gguf::types::TYPES;
use ferrite_gguf::{
    parse, writer, Array, GgmlType, GgufFile, Metadata, OpenOptions, TensorSpec, Value,
};
use proptest::prelude::*;

/// Floats without NaN, so that `PartialEq` can compare them (NaN is checked bit-exactly below).
fn f32s() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL
        | prop::num::f32::SUBNORMAL
        | prop::num::f32::ZERO
        | prop::num::f32::INFINITE
}

fn f64s() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
        | prop::num::f64::INFINITE
}

fn leaf_array() -> impl Strategy<Value = Array> {
    let n = 0..6usize;
    prop_oneof![
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), n.clone()).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), n.clone()).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), n.clone()).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), n.clone()).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), n.clone()).prop_map(Array::I32),
        prop::collection::vec(any::<u64>(), n.clone()).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), n.clone()).prop_map(Array::I64),
        prop::collection::vec(f32s(), n.clone()).prop_map(Array::F32),
        prop::collection::vec(f64s(), n.clone()).prop_map(Array::F64),
        prop::collection::vec(any::<bool>(), n.clone()).prop_map(Array::Bool),
        prop::collection::vec(any::<String>(), n).prop_map(|v| Array::String(v.into())),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    // Up to 3 levels of arrays of arrays (the reader accepts 8).
    leaf_array().prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        f32s().prop_map(Value::F32),
        f64s().prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        any::<String>().prop_map(Value::String),
        array().prop_map(Value::Array),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    let alignment = prop::option::of(prop::sample::select(vec![1u32, 8, 32, 64, 256]));
    // Keys get a prefix no known key has, so that no known key gets a random type.
    (
        prop::collection::vec(("\\PC{0,12}", value()), 0..12),
        alignment,
    )
        .prop_map(|(kvs, alignment)| {
            let mut m = Metadata::new();
            if let Some(a) = alignment {
                m.insert("general.alignment", Value::U32(a)).unwrap();
            }
            for (k, v) in kvs {
                let _ = m.insert(format!("x.{k}"), v); // duplicates dropped
            }
            m
        })
}

/// A tensor spec of a random type with a valid random shape, and random data for it.
fn tensor() -> impl Strategy<Value = (TensorSpec, Vec<u8>)> {
    (
        prop::sample::select(TYPES.iter().map(|t| t.ty).collect::<Vec<_>>()),
        1..4u64,
        prop::collection::vec(1..4u64, 0..4),
        "\\PC{0,10}",
        any::<u64>(),
    )
        .prop_map(|(ty, blocks, rest, name, seed)| {
            let mut dims = vec![blocks * ty.block_size()];
            dims.extend(rest);
            let spec = TensorSpec::new(name, &dims, ty);
            let n = spec.n_bytes().unwrap() as usize;
            // Cheap deterministic bytes (an LCG) rather than a huge proptest vector.
            let mut x = seed;
            let data = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            (spec, data)
        })
}

fn tensors() -> impl Strategy<Value = Vec<(TensorSpec, Vec<u8>)>> {
    prop::collection::vec(tensor(), 0..6).prop_map(|mut v| {
        // Names must be unique: make them so by index.
        for (i, (s, _)) in v.iter_mut().enumerate() {
            s.name = format!("{i}.{}", s.name);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_then_read_is_identity(m in metadata(), ts in tensors()) {
        let refs: Vec<(TensorSpec, &[u8])> =
            ts.iter().map(|(s, d)| (s.clone(), d.as_slice())).collect();
        let bytes = writer::to_vec(&m, &refs).unwrap();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        prop_assert_eq!(f.version(), 3);
        prop_assert_eq!(f.metadata(), &m);
        let align = m.get_u64("general.alignment").unwrap().unwrap_or(32);
        prop_assert_eq!(f.alignment(), align);
        prop_assert_eq!(f.tensors().len(), ts.len());
        for (t, (spec, data)) in f.tensors().iter().zip(&ts) {
            prop_assert_eq!(&t.name, &spec.name);
            prop_assert_eq!(&t.dims, &spec.dims);
            prop_assert_eq!(t.ty, spec.ty);
            prop_assert_eq!(t.offset % align, 0);
            prop_assert_eq!(t.n_elements, spec.dims.iter().product::<u64>());
            prop_assert_eq!(f.tensor_data(t), data.as_slice());
            prop_assert_eq!(f.tensor(&t.name).unwrap(), t);
        }
        // Writing what was read gives the same bytes.
        let again: Vec<(TensorSpec, &[u8])> = f
            .tensors()
            .iter()
            .map(|t| (TensorSpec::new(t.name.clone(), &t.dims, t.ty), f.tensor_data(t)))
            .collect();
        prop_assert_eq!(writer::to_vec(f.metadata(), &again).unwrap(), bytes);
    }
}

#[test]
fn nan_and_negative_zero_survive_bit_exactly() {
    let nan = f32::from_bits(0x7fc0_1234);
    let mut m = Metadata::new();
    m.insert("a", Value::F32(nan)).unwrap();
    m.insert("b", Value::Array(Array::F64(vec![f64::NAN, -0.0])))
        .unwrap();
    let h = parse(&writer::to_vec(&m, &[]).unwrap()).unwrap();
    match h.metadata.get("a") {
        Some(Value::F32(x)) => assert_eq!(x.to_bits(), nan.to_bits()),
        v => panic!("{v:?}"),
    }
    match h.metadata.get("b") {
        Some(Value::Array(Array::F64(v))) => {
            assert_eq!(v[0].to_bits(), f64::NAN.to_bits());
            assert_eq!(v[1].to_bits(), (-0.0f64).to_bits());
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn the_writer_refuses_what_the_reader_would() {
    let z = [0u8; 64];
    for spec in [
        TensorSpec::new("a", &[], GgmlType::F32),
        TensorSpec::new("a", &[1, 1, 1, 1, 1], GgmlType::F32),
        TensorSpec::new("a", &[0], GgmlType::F32),
        TensorSpec::new("a", &[33], GgmlType::Q4_0),
    ] {
        assert!(writer::to_vec(&Metadata::new(), &[(spec, &z[..])]).is_err());
    }
    let mut m = Metadata::new();
    m.insert("general.alignment", Value::U32(3)).unwrap();
    assert!(writer::to_vec(&m, &[]).is_err());
    // Duplicate tensor names, a known key with the wrong type.
    let a = TensorSpec::new("a", &[1], GgmlType::F32);
    let e = writer::to_vec(&Metadata::new(), &[(a.clone(), &z[..4]), (a, &z[..4])]).unwrap_err();
    assert!(e.to_string().contains("duplicate tensor name 'a'"), "{e}");
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::U8(1)).unwrap();
    assert!(writer::to_vec(&m, &[]).is_err());
    // Data of the wrong length.
    let spec = TensorSpec::new("a", &[4], GgmlType::F32);
    assert!(writer::to_vec(&Metadata::new(), &[(spec, &z[..15])]).is_err());
}

/// Writes `name-0000N-of-00003.gguf` for N = 1..=3 into `dir`, the tensors spread 2 + 0 + 3.
fn write_split(dir: &std::path::Path) -> Vec<(TensorSpec, Vec<u8>)> {
    let all: Vec<(TensorSpec, Vec<u8>)> = (0..5)
        .map(|i| {
            let spec = TensorSpec::new(format!("t{i}"), &[32, i + 1], GgmlType::Q8_0);
            let data = vec![i as u8 + 1; spec.n_bytes().unwrap() as usize];
            (spec, data)
        })
        .collect();
    let groups: [&[(TensorSpec, Vec<u8>)]; 3] = [&all[..2], &[], &all[2..]];
    for (no, group) in groups.iter().enumerate() {
        let mut m = Metadata::new();
        if no == 0 {
            m.insert("general.architecture", Value::String("llama".into()))
                .unwrap();
        }
        m.insert("split.no", Value::U16(no as u16)).unwrap();
        m.insert("split.count", Value::U16(3)).unwrap();
        m.insert("split.tensors.count", Value::I32(5)).unwrap();
        let refs: Vec<(TensorSpec, &[u8])> = group
            .iter()
            .map(|(s, d)| (s.clone(), d.as_slice()))
            .collect();
        let path = dir.join(format!("model-{:05}-of-00003.gguf", no + 1));
        std::fs::write(path, writer::to_vec(&m, &refs).unwrap()).unwrap();
    }
    all
}

#[test]
fn split_model_opens_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_split(dir.path());
    for mmap in [true, false] {
        let f = GgufFile::open_with(
            dir.path().join("model-00001-of-00003.gguf"),
            OpenOptions { mmap },
        )
        .unwrap();
        assert_eq!(f.is_mapped(), mmap);
        assert_eq!(f.paths().count(), 3);
        assert_eq!(f.metadata().architecture(), Some("llama"));
        assert_eq!(f.tensors().len(), 5);
        for (spec, data) in &all {
            let t = f.tensor(&spec.name).unwrap();
            assert_eq!(t.dims, spec.dims);
            assert_eq!(f.tensor_data(t), data.as_slice());
        }
        let parts: Vec<usize> = f.tensors().iter().map(|t| t.part).collect();
        assert_eq!(parts, [0, 0, 2, 2, 2]);
    }
}

#[test]
fn released_pages_read_back_the_same_bytes() {
    // Releasing is advice to drop resident pages of the mapping: any later read must fault
    // the file's bytes back in, whatever range was released (pieces, past the end, whole).
    let dir = tempfile::tempdir().unwrap();
    let all = write_split(dir.path());
    let f = GgufFile::open(dir.path().join("model-00001-of-00003.gguf")).unwrap();
    for (spec, data) in &all {
        let t = f.tensor(&spec.name).unwrap();
        let n = data.len();
        f.release_tensor_range(t, 0..n / 2);
        f.release_tensor_range(t, n / 2..n + 4096);
        f.release_tensor_range(t, n + 1..n + 2);
        assert!(
            !f.is_released(t),
            "a range does not mark the tensor released"
        );
        assert_eq!(f.tensor_data(t), data.as_slice(), "{}", spec.name);
        f.release_tensor_pages(t);
        assert!(f.is_released(t));
        assert_eq!(f.tensor_data(t), data.as_slice(), "{}", spec.name);
    }
}

#[test]
fn split_model_with_a_missing_part() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path());
    std::fs::remove_file(dir.path().join("model-00003-of-00003.gguf")).unwrap();
    let e = GgufFile::open(dir.path().join("model-00001-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("part 3 of 3 is missing"), "{e}");
    assert!(e.contains("model-00003-of-00003.gguf not found"), "{e}");
}

#[test]
fn opening_a_later_part_directly_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path());
    let e = GgufFile::open(dir.path().join("model-00002-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is part 2 of 3 of a split model"), "{e}");
    assert!(e.contains("open the first part"), "{e}");
    assert!(e.contains("model-00001-of-00003.gguf"), "{e}");
}

#[test]
fn split_parts_that_do_not_fit_together() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path());
    // Part 3 replaced by a copy of part 2 (split.no 1 where 2 is expected).
    std::fs::copy(
        dir.path().join("model-00002-of-00003.gguf"),
        dir.path().join("model-00003-of-00003.gguf"),
    )
    .unwrap();
    let e = GgufFile::open(dir.path().join("model-00001-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model-00003-of-00003.gguf"), "{e}");
    assert!(e.contains("expected split.no 2"), "{e}");

    // A corrupt later part names its own file and offset.
    write_split(dir.path());
    let p3 = dir.path().join("model-00003-of-00003.gguf");
    let mut b = std::fs::read(&p3).unwrap();
    b[4] = 7;
    std::fs::write(&p3, b).unwrap();
    let e = GgufFile::open(dir.path().join("model-00001-of-00003.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("model-00003-of-00003.gguf"), "{e}");
    assert!(e.contains("byte offset 4"), "{e}");
    assert!(e.contains("unsupported GGUF version 7"), "{e}");
}

#[test]
fn opening_a_missing_file_names_it() {
    let e = GgufFile::open("/nonexistent/x.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.gguf"), "{e}");
}
