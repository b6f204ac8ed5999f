//! The ggml tensor type table: every type id a GGUF file may name, with its block geometry.
//!
//! This is data, not maths: how many elements one block holds and how many bytes it takes. The
//! `quant` crate owns what the bytes mean. Ids that llama.cpp once assigned and later removed are
//! kept so that a file naming one gets an error that says so, rather than "unknown type".

use std::fmt;

/// A ggml tensor element type, as stored in a GGUF tensor info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Block geometry of one type: `block_size` elements are stored in `type_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub ty: GgmlType,
    pub name: &'static str,
    pub block_size: u64,
    pub type_size: u64,
}

const fn info(ty: GgmlType, name: &'static str, block_size: u64, type_size: u64) -> TypeInfo {
    TypeInfo {
        ty,
        name,
        block_size,
        type_size,
    }
}

/// Every live type, in id order. Byte sizes follow ggml's C structs (the authority for files);
/// note Q8_1 is 36 bytes (two f16 + 32 i8) although the Python `gguf` package lists 40.
pub const TYPES: &[TypeInfo] = &[
    info(GgmlType::F32, "F32", 1, 4),
    info(GgmlType::F16, "F16", 1, 2),
    info(GgmlType::Q4_0, "Q4_0", 32, 18),
    info(GgmlType::Q4_1, "Q4_1", 32, 20),
    info(GgmlType::Q5_0, "Q5_0", 32, 22),
    info(GgmlType::Q5_1, "Q5_1", 32, 24),
    info(GgmlType::Q8_0, "Q8_0", 32, 34),
    info(GgmlType::Q8_1, "Q8_1", 32, 36),
    info(GgmlType::Q2_K, "Q2_K", 256, 84),
    info(GgmlType::Q3_K, "Q3_K", 256, 110),
    info(GgmlType::Q4_K, "Q4_K", 256, 144),
    info(GgmlType::Q5_K, "Q5_K", 256, 176),
    info(GgmlType::Q6_K, "Q6_K", 256, 210),
    info(GgmlType::Q8_K, "Q8_K", 256, 292),
    info(GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    info(GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    info(GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    info(GgmlType::IQ1_S, "IQ1_S", 256, 50),
    info(GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    info(GgmlType::IQ3_S, "IQ3_S", 256, 110),
    info(GgmlType::IQ2_S, "IQ2_S", 256, 82),
    info(GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    info(GgmlType::I8, "I8", 1, 1),
    info(GgmlType::I16, "I16", 1, 2),
    info(GgmlType::I32, "I32", 1, 4),
    info(GgmlType::I64, "I64", 1, 8),
    info(GgmlType::F64, "F64", 1, 8),
    info(GgmlType::IQ1_M, "IQ1_M", 256, 56),
    info(GgmlType::BF16, "BF16", 1, 2),
    info(GgmlType::TQ1_0, "TQ1_0", 256, 54),
    info(GgmlType::TQ2_0, "TQ2_0", 256, 66),
    info(GgmlType::MXFP4, "MXFP4", 32, 17),
    info(GgmlType::NVFP4, "NVFP4", 64, 36),
    info(GgmlType::Q1_0, "Q1_0", 128, 18),
    info(GgmlType::Q2_0, "Q2_0", 64, 18),
];

/// Ids llama.cpp assigned once and then removed; files naming them are refused by name.
pub const REMOVED_TYPES: &[(u32, &str)] = &[
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

/// Why a type id could not be turned into a [`GgmlType`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeIdError {
    Removed(u32, &'static str),
    Unknown(u32),
}

impl fmt::Display for TypeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeIdError::Removed(id, name) => {
                write!(f, "{name} (type id {id}) was removed from GGUF")
            }
            TypeIdError::Unknown(id) => write!(f, "unknown tensor type id {id}"),
        }
    }
}

impl GgmlType {
    /// Looks a type up by its numeric id.
    pub fn from_id(id: u32) -> Result<Self, TypeIdError> {
        if let Some(t) = TYPES.iter().find(|t| t.ty as u32 == id) {
            return Ok(t.ty);
        }
        match REMOVED_TYPES.iter().find(|(rid, _)| *rid == id) {
            Some(&(id, name)) => Err(TypeIdError::Removed(id, name)),
            None => Err(TypeIdError::Unknown(id)),
        }
    }

    /// Looks a type up by its name (case-insensitive), e.g. `"q4_k"`.
    pub fn from_name(name: &str) -> Option<Self> {
        TYPES
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| t.ty)
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn info(self) -> &'static TypeInfo {
        // Every variant has a row; the table test below keeps it that way.
        TYPES
            .iter()
            .find(|t| t.ty == self)
            .expect("type table covers every variant")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.info().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.info().type_size
    }

    /// Bytes taken by a row of `n` elements, or `None` if `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }

    /// Whether the type is a block-quantized format (as opposed to plain floats or integers).
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }

    /// Bits of storage per element.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_round_trips_through_its_id_and_name() {
        for t in TYPES {
            assert_eq!(GgmlType::from_id(t.ty.id()).unwrap(), t.ty);
            assert_eq!(GgmlType::from_name(t.name), Some(t.ty));
            assert_eq!(t.ty.info(), t);
        }
        let mut ids: Vec<u32> = TYPES.iter().map(|t| t.ty.id()).collect();
        ids.extend(REMOVED_TYPES.iter().map(|r| r.0));
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "ids are unique");
    }

    #[test]
    fn removed_and_unknown_ids_say_so() {
        assert_eq!(
            GgmlType::from_id(4).unwrap_err().to_string(),
            "Q4_2 (type id 4) was removed from GGUF"
        );
        assert_eq!(
            GgmlType::from_id(1000).unwrap_err().to_string(),
            "unknown tensor type id 1000"
        );
    }

    #[test]
    fn row_bytes_checks_block_multiples() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
    }
}
