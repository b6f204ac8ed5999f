//! The token texts of a vocabulary, in one buffer, with an index from text to id.
//!
//! Why not `Vec<String>` and a `HashMap<String, u32>`: Gemma 3's 262,144 tokens cost that
//! ~45 MiB (two small allocations per token and a 16 MiB table of owned keys), beyond the
//! 64 MiB a model may use over its file and KV cache while it generates. Here a token costs
//! its text and a 4-byte offset (a [`StringArray`], as the file's metadata holds it) and a
//! 4-byte slot of a table that holds ids only (the key is looked up in the texts): ~7 MiB for
//! Gemma's vocabulary. `hashbrown::HashTable` is the map made for keys stored elsewhere.

use std::borrow::Cow;
use std::hash::BuildHasher;

use ferrite_gguf::StringArray;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

pub(crate) struct Vocab {
    /// Token `i`'s text is string `i`.
    texts: StringArray,
    /// Ids, hashed by their text.
    index: HashTable<u32>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vocab({} tokens)", self.len())
    }
}

/// Why a vocabulary could not be built.
#[derive(Debug)]
pub(crate) enum VocabError {
    /// The texts exceed 4 GiB (offsets are 32-bit).
    TooLarge,
    /// A text appears twice: the text and both ids.
    Duplicate(String, u32, u32),
}

fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Vocab {
    /// The vocabulary of `tokens`, in id order.
    pub(crate) fn new<'a>(
        tokens: impl ExactSizeIterator<Item = Cow<'a, str>>,
    ) -> Result<Vocab, VocabError> {
        let n = tokens.len();
        let mut texts = StringArray::with_capacity(n);
        for t in tokens {
            texts.try_push(&t).map_err(|_| VocabError::TooLarge)?;
        }
        texts.shrink_to_fit();
        let mut v = Vocab {
            texts,
            index: HashTable::new(),
        };
        let mut index = HashTable::with_capacity(n);
        for id in 0..n as u32 {
            let t = v.text(id);
            match index.entry(hash(t), |&i| v.text(i) == t, |&i| hash(v.text(i))) {
                hashbrown::hash_table::Entry::Occupied(e) => {
                    return Err(VocabError::Duplicate(t.to_string(), *e.get(), id));
                }
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(id);
                }
            }
        }
        v.index = index;
        Ok(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The text of token `id`, which must be in range (ids the tokenizer made itself).
    pub(crate) fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }

    /// The text of token `id`, `None` out of range.
    pub(crate) fn get(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize)
    }

    /// The id of the token whose text is `t`.
    pub(crate) fn id(&self, t: &str) -> Option<u32> {
        self.index.find(hash(t), |&i| self.text(i) == t).copied()
    }

    /// Every token's text, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.texts.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_ids_round_trip() {
        let words = ["a", "ab", "", "\u{2581}the", "<0x0A>", "b"];
        let v = Vocab::new(words.iter().map(|w| Cow::Borrowed(*w))).unwrap();
        assert_eq!(v.len(), words.len());
        for (i, w) in words.iter().enumerate() {
            assert_eq!(v.text(i as u32), *w);
            assert_eq!(v.id(w), Some(i as u32), "{w:?}");
        }
        assert_eq!(v.get(6), None);
        assert_eq!(v.id("abc"), None);
        assert_eq!(v.iter().collect::<Vec<_>>(), words);
    }

    #[test]
    fn duplicates_are_refused_with_both_ids() {
        let err = Vocab::new(["x", "y", "x"].into_iter().map(Cow::Borrowed)).unwrap_err();
        assert!(
            matches!(err, VocabError::Duplicate(ref t, 0, 2) if t == "x"),
            "{err:?}"
        );
    }
}
