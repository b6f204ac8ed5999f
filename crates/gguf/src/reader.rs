//! Parsing and validation of one GGUF file's header: metadata, tensor infos, data layout.
//!
//! Hand-written because the format is the product's foundation and its threat surface: every
//! read is bounds-checked against the bytes that remain, every count is bounded by those bytes
//! before anything is allocated, and all size arithmetic is checked. A hostile file gets an
//! error naming the problem and its offset; it can never make us panic, loop or over-allocate.

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Array, Metadata, StringArray, Value, ValueType};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors have at most this many dimensions (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are refused rather than recursed into.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's description from the header, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section, as stored.
    pub offset: u64,
    /// Absolute byte offset of the data within its file.
    pub file_offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
    /// Which file of a split model holds the data (0 for single files).
    pub part: usize,
}

impl TensorInfo {
    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// Everything the header of one GGUF file says, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, message: impl Into<String>) -> GgufError {
        GgufError::format(self.pos as u64, message)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "file ends while reading {what}: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that promises `count * min_bytes_each` more bytes; refused up front if the file
    /// cannot hold that many, so no allocation is ever sized by an unchecked number.
    fn count(&mut self, what: &str, min_bytes_each: usize) -> Result<usize> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let need = n.checked_mul(min_bytes_each as u64);
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(GgufError::format(
                at,
                format!(
                    "{what} is {n}, but only {} bytes remain in the file",
                    self.remaining()
                ),
            )),
        }
    }

    /// A length-prefixed UTF-8 string. This runs once per vocabulary entry (262144 times for
    /// Gemma), so the happy path does no work beyond the bounds check, the UTF-8 check and the
    /// one allocation of the result.
    fn string(&mut self, what: &str) -> Result<String> {
        self.str(what).map(str::to_owned)
    }

    fn str(&mut self, what: &str) -> Result<&'a str> {
        let at = self.pos as u64;
        let len = u64::from_le_bytes(self.array(what)?);
        if len > self.remaining() as u64 {
            return Err(GgufError::format(
                at,
                format!(
                    "length of {what} is {len}, but only {} bytes remain in the file",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len as usize, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(e) => Err(GgufError::format(
                at + 8 + e.valid_up_to() as u64,
                format!("{what} is not valid UTF-8"),
            )),
        }
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let at = self.pos as u64;
        let id = self.u32(what)?;
        ValueType::from_id(id)
            .ok_or_else(|| GgufError::format(at, format!("unknown metadata value type {id}")))
    }

    fn bool(&mut self) -> Result<bool> {
        let at = self.pos as u64;
        match self.take(1, "bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::format(
                at,
                format!("bool value must be 0 or 1, found {b}"),
            )),
        }
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.take(1, "u8")?[0]),
            ValueType::I8 => Value::I8(self.take(1, "i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string("string value")?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "arrays nested deeper than {MAX_ARRAY_DEPTH} levels are not supported"
            )));
        }
        let ty = self.value_type("array element type")?;
        // Minimum encoded size of one element bounds the count before we allocate.
        let min_each = match ty {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        };
        let n = self.count("array length", min_each)?;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let bytes = self.take(n * W, "array data")?;
                Array::$variant(
                    bytes
                        .chunks_exact(W)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n, "array data")?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => Array::Bool((0..n).map(|_| self.bool()).collect::<Result<_>>()?),
            ValueType::String => {
                let mut strings = StringArray::with_capacity(n);
                for _ in 0..n {
                    let at = self.pos;
                    let s = self.str("array string")?;
                    strings.try_push(s).map_err(|_| {
                        GgufError::format(at as u64, "array strings total over 4 GiB")
                    })?;
                }
                strings.shrink_to_fit();
                Array::String(strings)
            }
            ValueType::Array => Array::Array(
                (0..n)
                    .map(|_| self.array_value(depth + 1))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// Keys whose type is fixed by the format or by every consumer; a file that stores them with
/// another type is refused at load time rather than misread later.
pub(crate) fn check_known_key(key: &str, value: &Value) -> std::result::Result<(), String> {
    let expect = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "key '{key}' must be {what}, found {}",
                value.type_description()
            ))
        }
    };
    let arr = value.as_array();
    match key {
        "general.alignment" => expect(matches!(value, Value::U32(_)), "u32"),
        "general.architecture"
        | "general.name"
        | "tokenizer.ggml.model"
        | "tokenizer.ggml.pre"
        | "tokenizer.chat_template" => expect(matches!(value, Value::String(_)), "a string"),
        "tokenizer.ggml.tokens" | "tokenizer.ggml.merges" => {
            expect(matches!(arr, Some(Array::String(_))), "an array of strings")
        }
        "tokenizer.ggml.scores" => expect(matches!(arr, Some(Array::F32(_))), "an array of f32"),
        "tokenizer.ggml.token_type" => {
            expect(matches!(arr, Some(Array::I32(_))), "an array of i32")
        }
        "split.no" | "split.count" | "split.tensors.count" => {
            expect(value.as_u64().is_some(), "a non-negative integer")
        }
        _ => Ok(()),
    }
}

/// Reads the version, detecting the two ways a file can be unreadable before anything else.
fn version(c: &mut Cursor) -> Result<u32> {
    let at = c.pos as u64;
    let raw: [u8; 4] = c.array("version")?;
    let v = u32::from_le_bytes(raw);
    match v {
        2 | 3 => Ok(v),
        1 => Err(GgufError::format(
            at,
            "unsupported GGUF version 1 (only 2 and 3 are read)",
        )),
        _ if matches!(u32::from_be_bytes(raw), 1..=3) => {
            Err(GgufError::format(at, "big-endian GGUF is not supported"))
        }
        _ => Err(GgufError::format(
            at,
            format!("unsupported GGUF version {v}"),
        )),
    }
}

/// Parses and validates the header of a GGUF file held entirely in `bytes` (usually a memory
/// map). Only the header is read; tensor data is checked for placement, never touched.
pub fn parse(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic: [u8; 4] = c.array("magic")?;
    if &magic != MAGIC {
        return Err(GgufError::format(
            0,
            format!(
                "bad magic {:?}, expected \"GGUF\"",
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    let version = version(&mut c)?;
    // A tensor info takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
    // a metadata entry at least 8 (key len) + 4 (type) + 1.
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata key/value count", 13)?;

    let mut metadata = Metadata::new();
    let mut alignment_at = 0u64;
    for _ in 0..n_kv {
        let at = c.pos as u64;
        let key = c.string("metadata key")?;
        let ctx = || format!("key '{key}'");
        let ty = c
            .value_type("value type")
            .map_err(|e| e.with_context(ctx))?;
        let value = c.value(ty, 0).map_err(|e| e.with_context(ctx))?;
        check_known_key(&key, &value).map_err(|m| GgufError::format(at, m))?;
        if key == "general.alignment" {
            alignment_at = at;
        }
        if let Err(_dup) = metadata.insert(key.clone(), value) {
            return Err(GgufError::format(
                at,
                format!("duplicate metadata key '{key}'"),
            ));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_u64().unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::format(
                    alignment_at,
                    format!("key 'general.alignment' must be a non-zero power of two, found {a}"),
                ));
            }
            a
        }
    };

    struct Raw {
        info_at: u64,
        name: String,
        dims: Vec<u64>,
        ty: GgmlType,
        offset: u64,
        n_elements: u64,
        n_bytes: u64,
    }
    let mut raws = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let info_at = c.pos as u64;
        let name = c.string("tensor name")?;
        let ctx = || format!("tensor '{name}'");
        let fail = |m: String| GgufError::format(info_at, m).with_context(ctx);
        let n_dims = c.u32("dimension count").map_err(|e| e.with_context(ctx))? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(fail(format!(
                "has {n_dims} dimensions; 1 to {MAX_DIMS} are supported"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(c.u64("dimension").map_err(|e| e.with_context(ctx))?);
        }
        let type_id = c.u32("tensor type").map_err(|e| e.with_context(ctx))?;
        let offset = c
            .u64("tensor data offset")
            .map_err(|e| e.with_context(ctx))?;
        let ty = GgmlType::from_id(type_id).map_err(|e| fail(e.to_string()))?;
        if let Some(i) = dims.iter().position(|&d| d == 0) {
            return Err(fail(format!("dimension {i} is zero")));
        }
        if let Some(i) = dims.iter().position(|&d| d > i64::MAX as u64) {
            return Err(fail(format!(
                "dimension {i} is {} (negative as a signed 64-bit number)",
                dims[i] as i64
            )));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| fail(format!("element count of shape {dims:?} overflows")))?;
        if !dims[0].is_multiple_of(ty.block_size()) {
            return Err(fail(format!(
                "row length {} is not a multiple of {}'s block size {}",
                dims[0],
                ty,
                ty.block_size()
            )));
        }
        let row_bytes = ty
            .row_bytes(dims[0])
            .ok_or_else(|| fail(format!("byte size of shape {dims:?} overflows")))?;
        let n_bytes = row_bytes
            .checked_mul(n_elements / dims[0])
            .ok_or_else(|| fail(format!("byte size of shape {dims:?} overflows")))?;
        if offset % alignment != 0 {
            return Err(fail(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(fail("duplicate tensor name".to_string()));
        }
        raws.push(Raw {
            info_at,
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    let file_len = bytes.len() as u64;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(raws.len());
    for r in raws {
        let fail = |m: String| {
            GgufError::format(r.info_at, m).with_context(|| format!("tensor '{}'", r.name))
        };
        let start = data_offset.checked_add(r.offset).ok_or_else(|| {
            fail(format!(
                "data offset {} points past the end of the file ({file_len} bytes)",
                r.offset
            ))
        })?;
        let end = start
            .checked_add(r.n_bytes)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| {
                fail(format!(
                    "data ({} bytes at file offset {start}) runs past the end of the file ({file_len} bytes)",
                    r.n_bytes
                ))
            })?;
        debug_assert!(end <= file_len);
        tensors.push(TensorInfo {
            name: r.name,
            dims: r.dims,
            ty: r.ty,
            offset: r.offset,
            file_offset: start,
            n_elements: r.n_elements,
            n_bytes: r.n_bytes,
            part: 0,
        });
    }

    // Overlapping data would let one tensor's bytes be read as another's.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err(GgufError::format(
                b.file_offset,
                format!(
                    "data of tensor '{}' overlaps the data of tensor '{}'",
                    b.name, a.name
                ),
            ));
        }
    }

    Ok(Header {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}
