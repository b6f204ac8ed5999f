//! # ferrite-gguf: the GGUF container format
//!
//! Reads, validates and writes GGUF files (the llama.cpp model format), versions 2 and 3,
//! little-endian. This crate knows the format only: metadata, tensor descriptions, where each
//! tensor's bytes are. What the bytes mean (dequantization, maths) is the `quant` crate's job.
//!
//! ```no_run
//! let model = ferrite_gguf::GgufFile::open("model.gguf")?;
//! println!("{:?}", model.metadata().architecture());
//! for t in model.tensors() {
//!     let bytes: &[u8] = model.tensor_data(t); // zero-copy from the memory map
//!     println!("{} {} {:?} {}", t.name, t.ty, t.dims, bytes.len());
//! }
//! # Ok::<(), ferrite_gguf::GgufError>(())
//! ```
//!
//! Untrusted input is expected: see [`reader`] for the guarantees.

pub mod error;
pub mod file;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{GgufError, Result};
pub use file::{GgufFile, OpenOptions};
pub use reader::{parse, Header, TensorInfo};
pub use types::{GgmlType, TypeInfo};
pub use value::{Array, Metadata, MetadataError, StringArray, StringArrayFull, Value, ValueType};
pub use writer::{HeaderWriter, TensorSpec};
