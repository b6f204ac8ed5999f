//! Hostile and broken files: each must be refused with an error that names the problem and
//! where it is (byte offset, key or tensor name), never a panic, hang or huge allocation.
//!
//! Most cases start from a small valid file made by the writer and corrupt one field in place;
//! the few the writer cannot express (a string-typed `general.alignment`, absurd nesting) are
//! assembled byte by byte.

use ferrite_gguf::{parse, writer, Array, GgmlType, GgufError, Metadata, TensorSpec, Value};

/// A small valid file exercising every value type, three tensors of three types.
fn base() -> Vec<u8> {
    let mut m = Metadata::new();
    let kv: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.alignment", Value::U32(32)),
        ("k.aa", Value::U32(1)),
        ("k.bb", Value::U32(2)),
        ("k.str", Value::String("héllo".into())),
        ("k.f64", Value::F64(0.5)),
        ("k.bool", Value::Bool(true)),
        ("k.i8", Value::I8(-1)),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(["a", "bc", "déf"].iter().collect())),
        ),
        ("k.u16s", Value::Array(Array::U16(vec![1, 2, 3]))),
        (
            "k.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::F32(vec![]),
            ])),
        ),
    ];
    for (k, v) in kv {
        m.insert(k, v).unwrap();
    }
    let a = vec![1u8; 32];
    let b = vec![2u8; 72];
    let c = vec![3u8; 34];
    writer::to_vec(
        &m,
        &[
            (TensorSpec::new("tok.weight", &[4, 2], GgmlType::F32), &a),
            (TensorSpec::new("blk.0.wq", &[64, 2], GgmlType::Q4_0), &b),
            (TensorSpec::new("out", &[32], GgmlType::Q8_0), &c),
        ],
    )
    .unwrap()
}

/// Position of the first occurrence of `needle` encoded as a GGUF string (length + bytes).
fn find_str(buf: &[u8], needle: &str) -> usize {
    let mut enc = (needle.len() as u64).to_le_bytes().to_vec();
    enc.extend_from_slice(needle.as_bytes());
    buf.windows(enc.len())
        .position(|w| w == enc.as_slice())
        .unwrap_or_else(|| panic!("{needle:?} not in file"))
}

/// Offset of the value of metadata key `key` (just past its type tag).
fn value_at(buf: &[u8], key: &str) -> usize {
    find_str(buf, key) + 8 + key.len() + 4
}

/// Offset of the type tag of metadata key `key`.
fn type_at(buf: &[u8], key: &str) -> usize {
    find_str(buf, key) + 8 + key.len()
}

/// Offsets of a tensor info's fields: (n_dims, first dim, type, offset).
fn tensor_fields(buf: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let n_dims_at = find_str(buf, name) + 8 + name.len();
    let nd = u32::from_le_bytes(buf[n_dims_at..n_dims_at + 4].try_into().unwrap()) as usize;
    let dims_at = n_dims_at + 4;
    let ty_at = dims_at + 8 * nd;
    (n_dims_at, dims_at, ty_at, ty_at + 4)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Parses `bytes`, which must fail; checks the message contains every `needle` and, if given,
/// that the error points at byte `offset`. Returns the message.
#[track_caller]
fn refused(bytes: &[u8], needles: &[&str], offset: Option<u64>) -> String {
    let err = match parse(bytes) {
        Ok(_) => panic!("accepted a bad file (expected error containing {needles:?})"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
    }
    assert!(msg.contains("byte offset"), "error {msg:?} gives no offset");
    if let Some(o) = offset {
        assert_eq!(err.offset(), Some(o), "wrong offset in {msg:?}");
    }
    msg
}

#[test]
fn the_base_file_is_valid() {
    let h = parse(&base()).unwrap();
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.metadata.len(), 11);
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let b = base();
    for n in 0..b.len() {
        match parse(&b[..n]) {
            Ok(_) => panic!("file cut to {n} of {} bytes was accepted", b.len()),
            Err(e @ GgufError::Format { .. }) => {
                let off = e.offset().unwrap();
                assert!(off <= n as u64, "cut at {n}: offset {off} is past the end");
                let msg = e.to_string();
                assert!(
                    msg.contains("file ends")
                        || msg.contains("bytes remain")
                        || msg.contains("past the end"),
                    "cut at {n}: {msg}"
                );
            }
            Err(e) => panic!("cut at {n}: unexpected error kind {e}"),
        }
    }
}

#[test]
fn bad_magic() {
    let mut b = base();
    b[..4].copy_from_slice(b"GGML");
    refused(&b, &["bad magic", "GGML"], Some(0));
    refused(b"", &["file ends while reading magic"], Some(0));
}

#[test]
fn version_1_is_unsupported() {
    let mut b = base();
    put_u32(&mut b, 4, 1);
    refused(&b, &["unsupported GGUF version 1"], Some(4));
}

#[test]
fn unknown_versions() {
    for v in [0u32, 4, 0xffff, u32::MAX] {
        let mut b = base();
        put_u32(&mut b, 4, v);
        refused(&b, &[&format!("unsupported GGUF version {v}")], Some(4));
    }
}

#[test]
fn big_endian_is_refused() {
    for v in [2u32, 3] {
        let mut b = base();
        b[4..8].copy_from_slice(&v.to_be_bytes());
        // A big-endian file stores its counts big-endian too; refusal must come first.
        b[8..16].copy_from_slice(&3u64.to_be_bytes());
        refused(&b, &["big-endian GGUF is not supported"], Some(4));
    }
}

#[test]
fn absurd_tensor_and_kv_counts() {
    for n in [u64::MAX, u64::MAX / 24 + 1, 1 << 60, 1000] {
        let mut b = base();
        put_u64(&mut b, 8, n);
        refused(&b, &[&format!("tensor count is {n}")], Some(8));
        let mut b = base();
        put_u64(&mut b, 16, n);
        refused(&b, &[&format!("metadata key/value count is {n}")], Some(16));
    }
}

#[test]
fn absurd_array_lengths() {
    for key in ["tokenizer.ggml.tokens", "k.u16s", "k.nested"] {
        for n in [u64::MAX, u64::MAX / 2, 1 << 60] {
            let mut b = base();
            let len_at = value_at(&b, key) + 4;
            put_u64(&mut b, len_at, n);
            refused(
                &b,
                &[&format!("array length is {n}"), key],
                Some(len_at as u64),
            );
        }
    }
}

#[test]
fn absurd_string_lengths() {
    // A metadata key, a string value, a string inside an array, a tensor name.
    let b0 = base();
    let cases = [
        (find_str(&b0, "k.aa"), "length of metadata key"),
        (value_at(&b0, "k.str"), "length of string value"),
        (
            value_at(&b0, "tokenizer.ggml.tokens") + 12,
            "length of array string",
        ),
        (find_str(&b0, "blk.0.wq"), "length of tensor name"),
    ];
    for (at, what) in cases {
        for n in [u64::MAX, u64::MAX - 7, 1 << 62] {
            let mut b = b0.clone();
            put_u64(&mut b, at, n);
            refused(&b, &[&format!("{what} is {n}")], Some(at as u64));
        }
    }
}

#[test]
fn zero_dimension() {
    let mut b = base();
    let (_, dims, _, _) = tensor_fields(&b, "tok.weight");
    put_u64(&mut b, dims + 8, 0);
    refused(&b, &["tensor 'tok.weight'", "dimension 1 is zero"], None);
}

#[test]
fn negative_dimension() {
    let mut b = base();
    let (_, dims, _, _) = tensor_fields(&b, "tok.weight");
    put_u64(&mut b, dims, -4i64 as u64);
    refused(
        &b,
        &["tensor 'tok.weight'", "dimension 0 is -4", "negative"],
        None,
    );
}

#[test]
fn too_many_or_no_dimensions() {
    for nd in [0u32, 5, 1000, u32::MAX] {
        let mut b = base();
        let (n_dims_at, _, _, _) = tensor_fields(&b, "out");
        put_u32(&mut b, n_dims_at, nd);
        refused(
            &b,
            &["tensor 'out'", &format!("has {nd} dimensions; 1 to 4")],
            Some(find_str(&b, "out") as u64),
        );
    }
}

/// Rewrites the shape of tensor `out` (1 dim, Q8_0) by splicing in new dims.
fn with_out_shape(dims: &[u64], ty: GgmlType) -> Vec<u8> {
    let b = base();
    let (n_dims_at, _, ty_at, _) = tensor_fields(&b, "out");
    let mut v = b[..n_dims_at].to_vec();
    v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        v.extend_from_slice(&d.to_le_bytes());
    }
    v.extend_from_slice(&ty.id().to_le_bytes());
    v.extend_from_slice(&b[ty_at + 4..]);
    v
}

#[test]
fn shape_products_that_overflow() {
    let b = with_out_shape(&[1 << 32, 1 << 32, 1 << 32], GgmlType::F32);
    refused(&b, &["tensor 'out'", "element count", "overflows"], None);
    let b = with_out_shape(&[1 << 31, 1 << 31, 2, 2], GgmlType::F32);
    refused(&b, &["tensor 'out'", "element count", "overflows"], None);
    // Element count fits in i64 but the byte size does not.
    let b = with_out_shape(&[1 << 62], GgmlType::F32);
    refused(&b, &["tensor 'out'", "byte size", "overflows"], None);
    // Fits everywhere but is far larger than the file.
    let b = with_out_shape(&[1 << 40, 1 << 10], GgmlType::F32);
    refused(&b, &["tensor 'out'", "runs past the end of the file"], None);
}

#[test]
fn unknown_and_removed_type_ids() {
    for (id, needle) in [
        (4u32, "Q4_2 (type id 4) was removed from GGUF"),
        (5, "Q4_3 (type id 5) was removed"),
        (31, "Q4_0_4_4 (type id 31) was removed"),
        (43, "unknown tensor type id 43"), // the first id past the table
        (1000, "unknown tensor type id 1000"),
        (u32::MAX, "unknown tensor type id 4294967295"),
    ] {
        let mut b = base();
        let (_, _, ty_at, _) = tensor_fields(&b, "blk.0.wq");
        put_u32(&mut b, ty_at, id);
        refused(&b, &["tensor 'blk.0.wq'", needle], None);
    }
}

#[test]
fn row_not_a_multiple_of_the_block_size() {
    let b = with_out_shape(&[33], GgmlType::Q8_0);
    refused(
        &b,
        &[
            "tensor 'out'",
            "row length 33 is not a multiple of Q8_0's block size 32",
        ],
        None,
    );
    let b = with_out_shape(&[128], GgmlType::Q4_K);
    refused(&b, &["tensor 'out'", "block size 256"], None);
}

#[test]
fn tensor_data_past_the_end() {
    let b0 = base();
    let (_, _, _, off_at) = tensor_fields(&b0, "out");
    let stored = u64::from_le_bytes(b0[off_at..off_at + 8].try_into().unwrap());
    for off in [stored + 32, 1 << 40, u64::MAX - 31] {
        let mut b = b0.clone();
        put_u64(&mut b, off_at, off);
        refused(
            &b,
            &["tensor 'out'", "past the end of the file"],
            Some(find_str(&b, "out") as u64),
        );
    }
    // Cutting the last byte of data.
    refused(
        &b0[..b0.len() - 1],
        &["tensor 'out'", "runs past the end of the file"],
        None,
    );
}

#[test]
fn overlapping_offsets() {
    let mut b = base();
    let (_, _, _, off_at) = tensor_fields(&b, "blk.0.wq");
    put_u64(&mut b, off_at, 0);
    refused(&b, &["overlaps", "blk.0.wq", "tok.weight"], None);
    // Partial overlap: the last tensor starts inside the second one.
    let mut b = base();
    let (_, _, _, off_second) = tensor_fields(&b, "blk.0.wq");
    let second = u64::from_le_bytes(b[off_second..off_second + 8].try_into().unwrap());
    let (_, _, _, off_at) = tensor_fields(&b, "out");
    put_u64(&mut b, off_at, second + 64);
    refused(&b, &["overlaps", "'out'", "'blk.0.wq'"], None);
}

#[test]
fn misaligned_offsets() {
    for off in [1u64, 4, 31, 33] {
        let mut b = base();
        let (_, _, _, off_at) = tensor_fields(&b, "out");
        put_u64(&mut b, off_at, off);
        refused(
            &b,
            &[
                "tensor 'out'",
                &format!("data offset {off} is not a multiple of the alignment 32"),
            ],
            None,
        );
    }
}

#[test]
fn duplicate_keys() {
    let mut b = base();
    let at = find_str(&b, "k.bb");
    b[at + 8..at + 12].copy_from_slice(b"k.aa");
    refused(&b, &["duplicate metadata key 'k.aa'"], Some(at as u64));
}

#[test]
fn duplicate_tensor_names() {
    let mut m = Metadata::new();
    m.insert("a", Value::U8(0)).unwrap();
    let z = vec![0u8; 4];
    let f = writer::to_vec(
        &m,
        &[
            (TensorSpec::new("w1", &[1], GgmlType::F32), &z),
            (TensorSpec::new("w2", &[1], GgmlType::F32), &z),
        ],
    )
    .unwrap();
    let mut f = f;
    // Renamed in place: "w2" becomes a second "w1".
    let at = find_str(&f, "w2");
    f[at + 8..at + 10].copy_from_slice(b"w1");
    refused(
        &f,
        &["tensor 'w1'", "duplicate tensor name"],
        Some(at as u64),
    );
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 48, u32::MAX] {
        let mut b = base();
        let at = value_at(&b, "general.alignment");
        put_u32(&mut b, at, a);
        refused(
            &b,
            &[
                "general.alignment",
                &format!("must be a non-zero power of two, found {a}"),
            ],
            Some(find_str(&b, "general.alignment") as u64),
        );
    }
}

/// A file with no tensors whose metadata is `(key, type id, encoded value)` entries.
fn raw_file(entries: &[(&[u8], u32, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (k, ty, val) in entries {
        v.extend_from_slice(&(k.len() as u64).to_le_bytes());
        v.extend_from_slice(k);
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(val);
    }
    v
}

fn enc_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

#[test]
fn alignment_2_pow_40_as_u64() {
    let b = raw_file(&[(
        b"general.alignment",
        10,
        (1u64 << 40).to_le_bytes().to_vec(),
    )]);
    refused(
        &b,
        &["key 'general.alignment' must be u32, found u64"],
        Some(24),
    );
}

/// `m` plus `key: value` appended, written although `value` has the wrong type for `key`.
fn with_known_key(mut m: Metadata, key: &str, value: Value) -> Vec<u8> {
    let stand_in = format!("~{}", &key[1..]);
    m.insert(stand_in.clone(), value).unwrap();
    let mut b = writer::to_vec(&m, &[]).unwrap();
    let at = find_str(&b, &stand_in) + 8;
    b[at] = key.as_bytes()[0];
    b
}

#[test]
fn wrong_types_for_known_keys() {
    let b = raw_file(&[(b"general.alignment", 8, enc_str("32"))]);
    refused(
        &b,
        &["key 'general.alignment' must be u32, found string"],
        Some(24),
    );

    // tokenizer.ggml.scores as a u8 array. The writer refuses to write that, so the key is
    // written under a stand-in name of the same length and renamed in the bytes.
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String("llama".into()))
        .unwrap();
    let b = with_known_key(
        m,
        "tokenizer.ggml.scores",
        Value::Array(Array::U8(vec![1, 2, 3])),
    );
    refused(
        &b,
        &["key 'tokenizer.ggml.scores' must be an array of f32, found [u8; 3]"],
        Some(find_str(&b, "tokenizer.ggml.scores") as u64),
    );

    for (key, val, expect) in [
        (
            "general.architecture",
            Value::U32(1),
            "must be a string, found u32",
        ),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::I32(vec![1])),
            "must be an array of strings, found [i32; 1]",
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::F32(vec![1.0])),
            "must be an array of i32, found [f32; 1]",
        ),
        (
            "split.count",
            Value::I32(-1),
            "must be a non-negative integer, found i32",
        ),
        (
            "split.no",
            Value::String("0".into()),
            "must be a non-negative integer, found string",
        ),
    ] {
        let b = with_known_key(Metadata::new(), key, val.clone());
        refused(&b, &[&format!("key '{key}' {expect}")], Some(24));
        // The writer refuses it too.
        let mut m = Metadata::new();
        m.insert(key, val).unwrap();
        let e = writer::to_vec(&m, &[]).unwrap_err().to_string();
        assert!(e.contains(&format!("key '{key}' {expect}")), "{e}");
    }
}

#[test]
fn invalid_utf8_in_keys_and_tensor_names() {
    let mut b = base();
    let at = find_str(&b, "k.str");
    b[at + 8 + 2] = 0xff; // "k.\xffr"
    refused(
        &b,
        &["metadata key is not valid UTF-8"],
        Some(at as u64 + 8 + 2),
    );

    let mut b = base();
    let at = find_str(&b, "blk.0.wq");
    b[at + 8] = 0xc3; // a lone lead byte followed by ASCII
    refused(&b, &["tensor name is not valid UTF-8"], Some(at as u64 + 8));

    // In a string value and in an array of strings: the key is named.
    let mut b = base();
    let at = value_at(&b, "k.str");
    b[at + 8 + 1] = 0x80; // breaks "é"
    refused(
        &b,
        &["key 'k.str'", "string value is not valid UTF-8"],
        None,
    );
    let mut b = base();
    let at = value_at(&b, "tokenizer.ggml.tokens") + 12;
    b[at + 8] = 0xfe;
    refused(
        &b,
        &[
            "key 'tokenizer.ggml.tokens'",
            "array string is not valid UTF-8",
        ],
        Some(at as u64 + 8),
    );
}

/// `levels` arrays, each holding one array, around an empty u8 array.
fn nested(levels: usize) -> Vec<u8> {
    let mut val = Vec::new();
    for _ in 0..levels - 1 {
        val.extend_from_slice(&9u32.to_le_bytes());
        val.extend_from_slice(&1u64.to_le_bytes());
    }
    val.extend_from_slice(&0u32.to_le_bytes());
    val.extend_from_slice(&0u64.to_le_bytes());
    raw_file(&[(b"deep", 9, val)])
}

#[test]
fn deeply_nested_arrays() {
    // Up to the limit, nesting is read.
    let h = parse(&nested(8)).unwrap();
    assert_eq!(
        h.metadata.get("deep").unwrap().type_description(),
        "[[[[[[[[u8; 0]; 1]; 1]; 1]; 1]; 1]; 1]; 1]"
    );
    // One level more, or a million (no stack overflow), is refused.
    refused(
        &nested(9),
        &["key 'deep'", "arrays nested deeper than 8 levels"],
        None,
    );
    refused(
        &nested(1_000_000),
        &["key 'deep'", "arrays nested deeper than 8 levels"],
        None,
    );
}

#[test]
fn unknown_value_type_and_bad_bool() {
    let mut b = base();
    let at = type_at(&b, "k.aa");
    put_u32(&mut b, at, 13);
    refused(
        &b,
        &["key 'k.aa'", "unknown metadata value type 13"],
        Some(at as u64),
    );
    let mut b = base();
    let at = value_at(&b, "k.bool");
    b[at] = 2;
    refused(
        &b,
        &["key 'k.bool'", "bool value must be 0 or 1, found 2"],
        Some(at as u64),
    );
    let mut b = base();
    let at = value_at(&b, "k.nested");
    put_u32(&mut b, at, 99);
    refused(
        &b,
        &["key 'k.nested'", "unknown metadata value type 99"],
        Some(at as u64),
    );
}

#[test]
fn huge_claims_in_a_tiny_file_fail_fast() {
    // 100 bytes claiming 2^60 elements, for every element kind.
    for elem in 0u32..=12 {
        let mut val = elem.to_le_bytes().to_vec();
        val.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let mut b = raw_file(&[(b"big", 9, val)]);
        b.resize(100, 0);
        let t = std::time::Instant::now();
        refused(
            &b,
            &["key 'big'", "array length is 1152921504606846976"],
            None,
        );
        assert!(t.elapsed().as_millis() < 100, "element type {elem}");
    }
}
