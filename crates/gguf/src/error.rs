//! Errors of the GGUF layer. Every format error carries the byte offset where it was found and,
//! where one applies, the metadata key or tensor name, so a user can see what is wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or read. The message includes the I/O error's
    /// (which is therefore not also returned by `source()`: a chain printer such as
    /// anyhow's `{:#}` would repeat it).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The bytes do not form a valid GGUF file.
    #[error("{}invalid GGUF at byte offset {offset}{}: {message}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default(),
        context.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Format {
        path: Option<PathBuf>,
        offset: u64,
        /// The metadata key or tensor being read, e.g. `tensor 'output.weight'`.
        context: Option<String>,
        message: String,
    },
    /// A split model whose parts do not fit together.
    #[error("{path}: {message}")]
    Split { path: PathBuf, message: String },
}

impl GgufError {
    pub(crate) fn format(offset: u64, message: impl Into<String>) -> Self {
        GgufError::Format {
            path: None,
            offset,
            context: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_context(self, ctx: impl FnOnce() -> String) -> Self {
        match self {
            GgufError::Format {
                path,
                offset,
                context: None,
                message,
            } => GgufError::Format {
                path,
                offset,
                context: Some(ctx()),
                message,
            },
            e => e,
        }
    }

    pub(crate) fn with_path(self, p: &std::path::Path) -> Self {
        match self {
            GgufError::Format {
                path: None,
                offset,
                context,
                message,
            } => GgufError::Format {
                path: Some(p.to_path_buf()),
                offset,
                context,
                message,
            },
            e => e,
        }
    }

    /// The byte offset of a format error, if this is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            GgufError::Format { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
