//! Writing GGUF v3 files.
//!
//! The header needs every tensor's offset up front, so the writer takes tensor descriptions
//! first (name, shape, type), writes the header, then takes each tensor's bytes in order. That
//! lets `quantize` stream a model much larger than memory: data is produced and written one
//! tensor at a time.

use std::io::{self, Write};

use crate::reader::{check_known_key, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{Array, Metadata, Value};

/// A tensor to be written: its header entry. Data follows via [`HeaderWriter::write_tensor`].
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order (`dims[0]` contiguous).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> Self {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }

    /// Bytes of data this tensor takes, or an error if the shape does not fit the type.
    pub fn n_bytes(&self) -> io::Result<u64> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if self.dims.is_empty() || self.dims.len() > MAX_DIMS || self.dims.contains(&0) {
            return Err(bad(format!(
                "tensor '{}': shape {:?} must have 1 to {MAX_DIMS} non-zero dims",
                self.name, self.dims
            )));
        }
        let row = self.ty.row_bytes(self.dims[0]).ok_or_else(|| {
            bad(format!(
                "tensor '{}': row length {} is not a multiple of {}'s block size",
                self.name, self.dims[0], self.ty
            ))
        })?;
        self.dims[1..]
            .iter()
            .try_fold(row, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor '{}': size overflows", self.name)))
    }
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_array(w: &mut impl Write, a: &Array) -> io::Result<()> {
    w.write_all(&(a.element_type() as u32).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    write_array_elements(w, a)
}

/// Writes an array's elements as GGUF stores them, without the array's own type and length:
/// little-endian numbers, bools as one byte, strings as u64 length + UTF-8, inner arrays with
/// their type and length. Also the canonical form that `inspect --json` digests.
pub fn write_array_elements(w: &mut impl Write, a: &Array) -> io::Result<()> {
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
        };
    }
    match a {
        Array::U8(v) => w.write_all(v)?,
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => {
            for &b in v {
                w.write_all(&[b as u8])?;
            }
        }
        Array::String(v) => {
            for s in v.iter() {
                write_str(w, s)?;
            }
        }
        Array::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
        }
    }
    Ok(())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_str(w, s),
        Value::Array(a) => write_array(w, a),
    }
}

/// Counts bytes so padding can be computed without `Seek`.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad_to(w: &mut Counting<impl Write>, alignment: u64) -> io::Result<()> {
    let target = w.written.next_multiple_of(alignment);
    let zeros = vec![0u8; (target - w.written) as usize];
    w.write_all(&zeros)
}

/// The alignment a metadata set asks for (`general.alignment`), or the default.
fn alignment_of(metadata: &Metadata) -> io::Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => Ok(u64::from(*a)),
        Some(v) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("general.alignment must be a u32 power of two, found {v}"),
        )),
    }
}

/// Writes the header, then accepts tensor data in the order the specs were given.
pub struct HeaderWriter<W: Write> {
    out: Counting<W>,
    alignment: u64,
    specs: Vec<(TensorSpec, u64)>,
    next: usize,
}

impl<W: Write> HeaderWriter<W> {
    /// Writes magic, version 3, metadata and tensor infos, padded to the data section.
    pub fn new(out: W, metadata: &Metadata, tensors: &[TensorSpec]) -> io::Result<Self> {
        // Refuse to write what the reader would refuse.
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        for (k, v) in metadata.iter() {
            check_known_key(k, v).map_err(bad)?;
        }
        let mut names = std::collections::HashSet::with_capacity(tensors.len());
        if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(bad(format!("duplicate tensor name '{}'", t.name)));
        }
        let alignment = alignment_of(metadata)?;
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        out.write_all(MAGIC)?;
        out.write_all(&3u32.to_le_bytes())?;
        out.write_all(&(tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(metadata.len() as u64).to_le_bytes())?;
        for (k, v) in metadata.iter() {
            write_str(&mut out, k)?;
            out.write_all(&(v.value_type() as u32).to_le_bytes())?;
            write_value(&mut out, v)?;
        }
        let mut offset = 0u64;
        let mut specs = Vec::with_capacity(tensors.len());
        for t in tensors {
            let n = t.n_bytes()?;
            write_str(&mut out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ty.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            specs.push((t.clone(), n));
            offset = (offset + n).next_multiple_of(alignment);
        }
        pad_to(&mut out, alignment)?;
        Ok(HeaderWriter {
            out,
            alignment,
            specs,
            next: 0,
        })
    }

    /// Writes the next tensor's bytes; their length must match its spec.
    pub fn write_tensor(&mut self, data: &[u8]) -> io::Result<()> {
        let (spec, n) = self.specs.get(self.next).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "more tensors written than declared",
            )
        })?;
        if data.len() as u64 != *n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tensor '{}' needs {n} bytes, got {}", spec.name, data.len()),
            ));
        }
        self.out.write_all(data)?;
        self.next += 1;
        if self.next < self.specs.len() {
            pad_to(&mut self.out, self.alignment)?;
        }
        Ok(())
    }

    /// Checks every declared tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next != self.specs.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} tensors declared, {} written",
                    self.specs.len(),
                    self.next
                ),
            ));
        }
        self.out.flush()?;
        Ok(self.out.inner)
    }
}

/// Writes a whole GGUF image with all tensor data at hand.
pub fn write(
    out: impl Write,
    metadata: &Metadata,
    tensors: &[(TensorSpec, &[u8])],
) -> io::Result<()> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut w = HeaderWriter::new(out, metadata, &specs)?;
    for (_, data) in tensors {
        w.write_tensor(data)?;
    }
    w.finish()?;
    Ok(())
}

/// Writes a whole GGUF image into a new `Vec`.
pub fn to_vec(metadata: &Metadata, tensors: &[(TensorSpec, &[u8])]) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    write(&mut v, metadata, tensors)?;
    Ok(v)
}
