//! Opening GGUF files: memory-mapped (default) or read into memory, single or split.
//!
//! Opening parses the header only. Tensor bytes stay in the mapping until a caller asks for a
//! tensor, so listing a model costs milliseconds and little resident memory.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::reader::{self, Header, TensorInfo};
use crate::value::Metadata;

/// How to get a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Map the file (default) or read it into memory (`--no-mmap`, for file systems where
    /// mapping fails or is slow).
    pub mmap: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { mmap: true }
    }
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

struct Part {
    path: PathBuf,
    bytes: Bytes,
    header: Header,
}

/// An opened GGUF model: one file, or all files of a split model presented as one.
pub struct GgufFile {
    parts: Vec<Part>,
    /// All tensors of all parts, in file order (`TensorInfo::part` says where each lives).
    tensors: Vec<TensorInfo>,
    index: std::collections::HashMap<String, usize>,
    /// Per tensor: whether [`GgufFile::release_tensor_pages`] dropped its pages.
    released: Vec<std::sync::atomic::AtomicBool>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GgufError + '_ {
    move |error| GgufError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn load_bytes(path: &Path, opts: OpenOptions) -> Result<Bytes> {
    let file = File::open(path).map_err(io_err(path))?;
    if opts.mmap {
        // SAFETY: the map is read-only and lives as long as the `GgufFile`. Another process
        // truncating the file while we hold it is the one hazard memmap2 cannot rule out; it
        // is the same contract every mmap-based model loader (llama.cpp included) accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
        Ok(Bytes::Mapped(map))
    } else {
        let mut v = Vec::new();
        use std::io::Read;
        (&file).read_to_end(&mut v).map_err(io_err(path))?;
        Ok(Bytes::Owned(v))
    }
}

fn open_part(path: &Path, opts: OpenOptions) -> Result<Part> {
    let bytes = load_bytes(path, opts)?;
    let header = reader::parse(bytes.as_slice()).map_err(|e| e.with_path(path))?;
    Ok(Part {
        path: path.to_path_buf(),
        bytes,
        header,
    })
}

/// `name-00001-of-00003.gguf` → (`name`, 1, 3).
pub fn parse_split_name(path: &Path) -> Option<(String, u32, u32)> {
    let s = path.to_str()?.strip_suffix(".gguf")?;
    let (rest, count) = s.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

/// The path of part `no` (1-based) of `count`, in llama.cpp's naming.
pub fn split_path(prefix: &str, no: u32, count: u32) -> PathBuf {
    PathBuf::from(format!("{prefix}-{no:05}-of-{count:05}.gguf"))
}

impl GgufFile {
    /// Opens a GGUF file with memory mapping. For a split model, pass the first part.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref();
        let first = open_part(path, opts)?;
        let meta = &first.header.metadata;
        let count = meta.get_u64("split.count").ok().flatten().unwrap_or(1);
        let mut parts = vec![first];
        if count > 1 {
            let split_err = |message: String| GgufError::Split {
                path: path.to_path_buf(),
                message,
            };
            let no = parts[0].header.metadata.get_u64("split.no").ok().flatten();
            if no != Some(0) {
                let first = parse_split_name(path)
                    .map(|(prefix, _, c)| split_path(&prefix, 1, c).display().to_string())
                    .unwrap_or_else(|| "the part with split.no 0".into());
                return Err(split_err(format!(
                    "is part {} of {count} of a split model (split.no {}); open the first part, {first}",
                    no.map_or("?".into(), |n| (n + 1).to_string()),
                    no.map_or("missing".into(), |n| n.to_string()),
                )));
            }
            let count = u32::try_from(count)
                .ok()
                .filter(|&c| c <= 9999)
                .ok_or_else(|| split_err(format!("split.count {count} is absurd")))?;
            let (prefix, _, _) = parse_split_name(path).ok_or_else(|| {
                split_err(format!(
                    "split.count is {count}, but the file name does not follow NAME-00001-of-{count:05}.gguf"
                ))
            })?;
            for i in 2..=count {
                let p = split_path(&prefix, i, count);
                if !p.exists() {
                    return Err(split_err(format!(
                        "part {i} of {count} is missing: {} not found",
                        p.display()
                    )));
                }
                let part = open_part(&p, opts)?;
                let meta = &part.header.metadata;
                let got = meta.get_u64("split.no").ok().flatten();
                let got_count = meta.get_u64("split.count").ok().flatten();
                if got != Some(u64::from(i - 1)) || got_count != Some(u64::from(count)) {
                    let show = |v: Option<u64>| v.map_or("missing".into(), |n| n.to_string());
                    return Err(GgufError::Split {
                        path: p,
                        message: format!(
                            "expected split.no {} and split.count {count}, found split.no {} and split.count {}",
                            i - 1,
                            show(got),
                            show(got_count)
                        ),
                    });
                }
                parts.push(part);
            }
        }
        let mut tensors = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (pi, part) in parts.iter().enumerate() {
            for t in &part.header.tensors {
                if index.insert(t.name.clone(), tensors.len()).is_some() {
                    return Err(GgufError::Split {
                        path: part.path.clone(),
                        message: format!("tensor '{}' appears in more than one part", t.name),
                    });
                }
                tensors.push(TensorInfo {
                    part: pi,
                    ..t.clone()
                });
            }
        }
        if parts.len() > 1 {
            if let Ok(Some(expected)) = parts[0].header.metadata.get_u64("split.tensors.count") {
                if expected != tensors.len() as u64 {
                    return Err(GgufError::Split {
                        path: path.to_path_buf(),
                        message: format!(
                            "split.tensors.count says {expected} tensors, the parts hold {}",
                            tensors.len()
                        ),
                    });
                }
            }
        }
        Ok(GgufFile {
            released: tensors.iter().map(|_| Default::default()).collect(),
            parts,
            tensors,
            index,
        })
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, embedded models).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let header = reader::parse(&bytes)?;
        let tensors = header.tensors.clone();
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            parts: vec![Part {
                path: PathBuf::new(),
                bytes: Bytes::Owned(bytes),
                header,
            }],
            released: tensors.iter().map(|_| Default::default()).collect(),
            tensors,
            index,
        })
    }

    /// The first (or only) file's header: version, alignment, metadata.
    pub fn header(&self) -> &Header {
        &self.parts[0].header
    }

    pub fn version(&self) -> u32 {
        self.header().version
    }

    pub fn alignment(&self) -> u64 {
        self.header().alignment
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header().metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The stored bytes of a tensor (zero-copy from the mapping).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.parts[t.part].bytes.as_slice();
        // Offsets and sizes were validated against this file's length when it was parsed.
        &bytes[t.file_offset as usize..(t.file_offset + t.n_bytes) as usize]
    }

    /// Drops this process's resident pages of `t`'s bytes, for a caller that has copied
    /// them elsewhere (weights repacked at load), so the model costs one copy of its memory
    /// and not two. Touching the bytes again reads them back from the file, so every slice
    /// stays valid. Pages the tensor shares with its neighbours go too, and come back the
    /// same way. A no-op for files read into memory; the OS may also decline (it is advice).
    pub fn release_tensor_pages(&self, t: &TensorInfo) {
        if let Some(&i) = self.index.get(&t.name) {
            self.released[i].store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.release_tensor_range(t, 0..t.n_bytes as usize);
    }

    /// [`GgufFile::release_tensor_pages`] for the bytes `range` of `t`'s data (clamped to
    /// them), for a caller that copies a large tensor piece by piece: dropping each piece
    /// once copied keeps the file's copy and the new one from being resident together.
    /// Does not mark the tensor released.
    pub fn release_tensor_range(&self, t: &TensorInfo, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.parts[t.part].bytes {
            let n = t.n_bytes as usize;
            let (start, end) = (range.start.min(n), range.end.min(n));
            if start >= end {
                return;
            }
            // SAFETY: the mapping is a read-only shared map of the file (memmap2's `Mmap`),
            // so MADV_DONTNEED only unmaps pages: the next read of those addresses faults
            // the same file contents back in, and no borrow can observe a change (the file
            // not being modified is the mapping's own contract, see `load_bytes`). memmap2
            // checks the range against the mapping and aligns it to pages.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    t.file_offset as usize + start,
                    end - start,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (t, range);
    }

    /// Whether [`GgufFile::release_tensor_pages`] was called for `t`: its user keeps a copy,
    /// so paging its bytes in would only cost memory.
    pub fn is_released(&self, t: &TensorInfo) -> bool {
        self.index
            .get(&t.name)
            .is_some_and(|&i| self.released[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Paths of the files this model was read from.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().map(|p| p.path.as_path())
    }

    /// Total bytes of all files.
    pub fn file_size(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| p.bytes.as_slice().len() as u64)
            .sum()
    }

    /// Whether the bytes are memory-mapped (as opposed to read into memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.parts[0].bytes, Bytes::Mapped(_))
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("paths", &self.paths().collect::<Vec<_>>())
            .field("version", &self.version())
            .field("n_kv", &self.metadata().len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}
