//! Metadata values and the ordered key/value store of a GGUF file.

use std::collections::HashMap;
use std::fmt;

/// The type tag of a metadata value, as stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Lower-case name as used by `ferrite inspect` (`u32`, `string`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Bytes one value of a fixed-size type takes; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// An array of strings in one text buffer with 32-bit offsets.
///
/// Why not `Vec<String>`: vocabularies are arrays of hundreds of thousands of short
/// strings (Gemma 3: 262,144 tokens; SmolLM2: 48,900 merges too), and each `String` costs a
/// 24-byte header plus a heap block of at least 32 bytes: ~14 MiB for Gemma's tokens, kept
/// for as long as the file is open. Here a string costs its bytes and a 4-byte offset, and
/// parsing makes two allocations instead of one per string.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StringArray {
    /// Every string, one after another.
    text: String,
    /// String `i` is `text[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<u32>,
}

/// [`StringArray::try_push`] refused a string: the texts would exceed 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringArrayFull;

impl StringArray {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty array with room for `n` strings.
    pub fn with_capacity(n: usize) -> Self {
        StringArray {
            text: String::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Appends `s`, unless the texts would then exceed 4 GiB.
    pub fn try_push(&mut self, s: &str) -> Result<(), StringArrayFull> {
        let end = u32::try_from(self.text.len() + s.len()).map_err(|_| StringArrayFull)?;
        self.text.push_str(s);
        self.ends.push(end);
        Ok(())
    }

    /// Appends `s`.
    ///
    /// # Panics
    /// If the texts would exceed 4 GiB ([`try_push`](Self::try_push) reports it instead).
    pub fn push(&mut self, s: &str) {
        self.try_push(s)
            .expect("a StringArray holds at most 4 GiB of text");
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`, `None` out of range.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    /// Every string, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.text[start..end as usize];
            start = end as usize;
            s
        })
    }

    /// Total bytes of all strings.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Releases spare capacity (parsing cannot know the total text size in advance).
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

impl fmt::Debug for StringArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::ops::Index<usize> for StringArray {
    type Output = str;

    /// # Panics
    /// If `i` is out of range, as slices do.
    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(s) => s,
            None => panic!("index {i} out of range for {} strings", self.len()),
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    /// # Panics
    /// If the texts exceed 4 GiB.
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut a = StringArray::with_capacity(iter.size_hint().0);
        for s in iter {
            a.push(s.as_ref());
        }
        a
    }
}

impl From<Vec<String>> for StringArray {
    fn from(v: Vec<String>) -> Self {
        v.iter().collect()
    }
}

/// A homogeneous metadata array. Arrays of arrays are allowed (to a bounded depth).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(StringArray),
    Array(Vec<Array>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// The value as a signed integer, if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is a float (or an integer, which converts exactly enough).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Type description such as `u32` or `[string; 49152]`, as `ferrite inspect` prints it.
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => a.type_description(),
            v => v.value_type().name().to_string(),
        }
    }
}

impl Array {
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F32(_) => ValueType::F32,
            Array::F64(_) => ValueType::F64,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a standalone value.
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.to_string()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
        })
    }

    /// All elements as signed integers, if this is an integer array whose values fit.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        (0..self.len()).map(|i| self.get(i)?.as_i64()).collect()
    }

    /// All elements as f32, if this is a float or integer array.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        match self {
            Array::F32(v) => Some(v.clone()),
            _ => (0..self.len())
                .map(|i| self.get(i)?.as_f64().map(|f| f as f32))
                .collect(),
        }
    }

    /// `[string; 49152]`, `[[i32; 3]; 2]` ...
    pub fn type_description(&self) -> String {
        match self {
            Array::Array(v) => match v.first() {
                Some(inner) => format!("[{}; {}]", inner.type_description(), v.len()),
                None => "[array; 0]".to_string(),
            },
            a => format!("[{}; {}]", a.element_type().name(), a.len()),
        }
    }
}

/// Why a typed metadata lookup failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata key '{0}' is missing")]
    Missing(String),
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        found: String,
        expected: &'static str,
    },
}

/// The metadata of a GGUF file: keys in file order, with fast lookup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key. Returns the value back if the key is already present (GGUF keys are unique).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Result<(), Value> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(value);
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets a key, replacing any existing value in place (order is kept).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                let _ = self.insert(key, value);
            }
        }
    }

    /// Removes a key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(v)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, MetadataError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| MetadataError::WrongType {
                key: key.to_string(),
                found: v.type_description(),
                expected,
            }),
        }
    }

    /// A non-negative integer of any stored width; `Ok(None)` if absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, MetadataError> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, MetadataError> {
        self.typed(key, "an integer", Value::as_i64)
    }

    /// A float (f32 or f64; integers are accepted too).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, MetadataError> {
        self.typed(key, "a number", Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, MetadataError> {
        self.typed(key, "bool", Value::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, MetadataError> {
        self.typed(key, "string", Value::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, MetadataError> {
        self.typed(key, "array", Value::as_array)
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<&StringArray>, MetadataError> {
        self.typed(key, "[string]", |v| match v {
            Value::Array(Array::String(s)) => Some(s),
            _ => None,
        })
    }

    /// Like [`Metadata::get_u64`] but a missing key is an error too.
    pub fn require_u64(&self, key: &str) -> Result<u64, MetadataError> {
        self.get_u64(key)?
            .ok_or_else(|| MetadataError::Missing(key.to_string()))
    }

    pub fn require_str(&self, key: &str) -> Result<&str, MetadataError> {
        self.get_str(key)?
            .ok_or_else(|| MetadataError::Missing(key.to_string()))
    }

    /// `general.architecture`, the prefix of the model's own keys.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }
}

impl fmt::Display for Value {
    /// Short human form; long arrays show their type and first elements only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(a) => {
                const SHOWN: usize = 3;
                let shown: Vec<String> = (0..a.len().min(SHOWN))
                    .filter_map(|i| a.get(i))
                    .map(|v| v.to_string())
                    .collect();
                if a.len() <= SHOWN {
                    write!(f, "[{}]", shown.join(", "))
                } else {
                    write!(f, "{} {}, ...", a.type_description(), shown.join(", "))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_array_keeps_each_string_including_empty_and_multibyte_ones() {
        let words = ["", "a", "déf", "", "▁the", "<0x0A>", ""];
        let a: StringArray = words.iter().collect();
        assert_eq!(a.len(), words.len());
        assert_eq!(a.iter().len(), words.len());
        assert_eq!(a.iter().collect::<Vec<_>>(), words);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(a.get(i), Some(*w));
            assert_eq!(&a[i], *w);
        }
        assert_eq!(a.get(words.len()), None);
        assert_eq!(a.text_len(), words.concat().len());
        assert_eq!(format!("{a:?}"), format!("{words:?}"));
        let same = StringArray::from(words.map(String::from).to_vec());
        assert_eq!(a, same);
        let mut other = same.clone();
        other.push("x");
        assert_ne!(a, other);
        assert!(StringArray::new().is_empty());
        assert_eq!(Array::String(a).get(2), Some(Value::String("déf".into())));
    }

    #[test]
    #[should_panic(expected = "index 1 out of range for 1 strings")]
    fn string_array_index_out_of_range_panics_like_a_slice() {
        let a: StringArray = ["only"].iter().collect();
        let _ = &a[1];
    }
}
