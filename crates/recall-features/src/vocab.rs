//! Vocabularies: raw values to dense indices.
//!
//! Index 0 is padding and index 1 is out-of-vocabulary in every vocabulary, so an embedding
//! table of [`Vocabulary::table_size`] rows can be indexed by any encoded value. Known values get
//! 2, 3, ... in order of decreasing training frequency (ties by ascending raw value), which puts
//! hot rows together and makes the files diff-able. Values seen fewer than `min_count` times are
//! left out and so encode to the OOV index.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use arrow_array::StringArray;
use recall_core::columns::{FIRST_KNOWN_INDEX, OOV_INDEX};
use recall_core::{RawIds, Result};

/// A vocabulary over one key type.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabOf<K: Hash + Eq> {
    index: HashMap<K, i32>,
    /// Known values in index order: `raw[i]` has index `i + 2`.
    raw: Vec<K>,
    counts: Vec<i64>,
}

impl<K: Hash + Eq + Ord + Clone> VocabOf<K> {
    /// Builds from (value, count) pairs; values under `min_count` are dropped.
    pub fn from_counts(counts: HashMap<K, i64>, min_count: u64) -> Self {
        let mut entries: Vec<(K, i64)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count as i64)
            .collect();
        entries.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self::from_sorted(entries)
    }

    fn from_sorted(entries: Vec<(K, i64)>) -> Self {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i as i32 + FIRST_KNOWN_INDEX))
            .collect();
        let (raw, counts) = entries.into_iter().unzip();
        VocabOf { index, raw, counts }
    }

    /// Counts values and builds the vocabulary.
    pub fn fit<'a, Q>(values: impl Iterator<Item = &'a Q>, min_count: u64) -> Self
    where
        Q: ?Sized + 'a + ToOwned<Owned = K> + Hash + Eq,
        K: std::borrow::Borrow<Q>,
    {
        let mut counts: HashMap<K, i64> = HashMap::new();
        for v in values {
            match counts.get_mut(v) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(v.to_owned(), 1);
                }
            }
        }
        Self::from_counts(counts, min_count)
    }

    /// The index of `value`, or [`OOV_INDEX`].
    pub fn get<Q>(&self, value: &Q) -> i32
    where
        Q: ?Sized + Hash + Eq,
        K: std::borrow::Borrow<Q>,
    {
        self.index.get(value).copied().unwrap_or(OOV_INDEX)
    }

    /// The raw value at `index`, `None` for padding, OOV or out of range.
    pub fn raw(&self, index: i32) -> Option<&K> {
        usize::try_from(index - FIRST_KNOWN_INDEX)
            .ok()
            .and_then(|i| self.raw.get(i))
    }

    pub fn known(&self) -> &[K] {
        &self.raw
    }

    /// This vocabulary with `new` values appended at count 0.
    fn appended(&self, new: Vec<K>) -> VocabOf<K> {
        let entries = self
            .raw
            .iter()
            .cloned()
            .zip(self.counts.iter().copied())
            .chain(new.into_iter().map(|k| (k, 0)));
        Self::from_sorted(entries.collect())
    }

    /// This vocabulary grown by `fresh` (fitted on newer data): every value keeps its index,
    /// values only `fresh` knows are appended in its order (frequency, then raw value), and
    /// counts become `fresh`'s (0 for a value the newer data lacks).
    fn grown(&self, fresh: &VocabOf<K>) -> VocabOf<K> {
        let count_in_fresh = |k: &K| {
            fresh
                .index
                .get(k)
                .map_or(0, |&i| fresh.counts[(i - FIRST_KNOWN_INDEX) as usize])
        };
        let carried = self.raw.iter().map(|k| (k.clone(), count_in_fresh(k)));
        let appended = fresh
            .raw
            .iter()
            .zip(&fresh.counts)
            .filter(|(k, _)| !self.index.contains_key(*k))
            .map(|(k, &c)| (k.clone(), c));
        Self::from_sorted(carried.chain(appended).collect())
    }

    pub fn counts(&self) -> &[i64] {
        &self.counts
    }
}

/// A vocabulary over integer or string values.
#[derive(Debug, Clone, PartialEq)]
pub enum Vocabulary {
    Int(VocabOf<i64>),
    Str(VocabOf<String>),
}

impl Vocabulary {
    /// Fits over `ids[rows]` (the training rows only).
    pub fn fit(ids: &RawIds, rows: impl Iterator<Item = usize>, min_count: u64) -> Self {
        match ids {
            RawIds::Int(v) => Vocabulary::Int(VocabOf::fit(rows.map(|r| &v[r]), min_count)),
            RawIds::Str(a) => Vocabulary::Str(VocabOf::fit(rows.map(|r| a.value(r)), min_count)),
        }
    }

    /// From values counted elsewhere (an engine's group-by): `raw[i]` was counted `counts[i]`
    /// times; values under `min_count` are dropped and the rest ordered as [`Vocabulary::fit`]
    /// orders them, so the result is the one `fit` gives over the same rows.
    pub fn from_counted(raw: &RawIds, counts: &[u64], min_count: u64) -> Self {
        let count = |i: usize| i64::try_from(counts[i]).unwrap_or(i64::MAX);
        match raw {
            RawIds::Int(v) => Vocabulary::Int(VocabOf::from_counts(
                v.iter().enumerate().map(|(i, &x)| (x, count(i))).collect(),
                min_count,
            )),
            RawIds::Str(a) => Vocabulary::Str(VocabOf::from_counts(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| (x.unwrap_or_default().to_owned(), count(i)))
                    .collect(),
                min_count,
            )),
        }
    }

    /// This vocabulary grown by `fresh`, fitted on newer data: each known value keeps its
    /// index and new values are appended (see the module header for the order), so an embedding
    /// table trained on this vocabulary stays valid for its first rows. `what` names the
    /// vocabulary in the error when the two disagree on the id type.
    pub fn grown(&self, fresh: &Vocabulary, what: &str) -> Result<Vocabulary> {
        match (self, fresh) {
            (Vocabulary::Int(old), Vocabulary::Int(new)) => Ok(Vocabulary::Int(old.grown(new))),
            (Vocabulary::Str(old), Vocabulary::Str(new)) => Ok(Vocabulary::Str(old.grown(new))),
            (Vocabulary::Str(old), Vocabulary::Int(new)) => {
                // Integer ids against string ones: compare as text, as `encode` does.
                let as_text: VocabOf<String> = VocabOf::from_sorted(
                    new.raw
                        .iter()
                        .map(ToString::to_string)
                        .zip(new.counts.iter().copied())
                        .collect(),
                );
                Ok(Vocabulary::Str(old.grown(&as_text)))
            }
            (Vocabulary::Int(_), Vocabulary::Str(_)) => Err(recall_core::Error::invalid(
                what,
                "the earlier run's values are integers and this data's are strings: grow from \
                 a run of the same source, or leave `init_from` out to fit anew",
            )),
        }
    }

    /// This vocabulary with every value of `listed` it lacks appended (count 0), in ascending
    /// order of value: items a side table lists that no training interaction has (cold items).
    /// Integer values are compared as text in a string vocabulary, as [`Vocabulary::encode`]
    /// does; string values cannot join an integer vocabulary and are left out.
    pub fn with_unseen(&self, listed: &RawIds) -> Vocabulary {
        let missing = self
            .encode(listed)
            .into_iter()
            .enumerate()
            .filter(|&(_, i)| i == OOV_INDEX);
        match (self, listed) {
            (Vocabulary::Int(v), RawIds::Int(ids)) => {
                let mut new: Vec<i64> = missing.map(|(r, _)| ids[r]).collect();
                new.sort_unstable();
                new.dedup();
                Vocabulary::Int(v.appended(new))
            }
            (Vocabulary::Str(v), _) => {
                let text = |r: usize| match listed {
                    RawIds::Int(ids) => ids[r].to_string(),
                    RawIds::Str(a) => a.value(r).to_owned(),
                };
                let mut new: Vec<String> = missing.map(|(r, _)| text(r)).collect();
                new.sort_unstable();
                new.dedup();
                Vocabulary::Str(v.appended(new))
            }
            (Vocabulary::Int(_), RawIds::Str(_)) => self.clone(),
        }
    }

    /// Number of known values (excluding the two reserved slots).
    pub fn known_len(&self) -> usize {
        match self {
            Vocabulary::Int(v) => v.raw.len(),
            Vocabulary::Str(v) => v.raw.len(),
        }
    }

    /// Rows an embedding table indexed by this vocabulary needs: known values plus padding and
    /// OOV.
    pub fn table_size(&self) -> usize {
        self.known_len() + FIRST_KNOWN_INDEX as usize
    }

    /// The index of one integer value (as text in a string vocabulary), or [`OOV_INDEX`].
    pub fn index_of_int(&self, value: i64) -> i32 {
        match self {
            Vocabulary::Int(v) => v.get(&value),
            Vocabulary::Str(v) => v.get(value.to_string().as_str()),
        }
    }

    /// The index of one string value, or [`OOV_INDEX`] (always, in an integer vocabulary).
    pub fn index_of_str(&self, value: &str) -> i32 {
        match self {
            Vocabulary::Int(_) => OOV_INDEX,
            Vocabulary::Str(v) => v.get(value),
        }
    }

    /// Encodes every id; unknown ids (and ids of the other type) become [`OOV_INDEX`].
    pub fn encode(&self, ids: &RawIds) -> Vec<i32> {
        match (self, ids) {
            (Vocabulary::Int(v), RawIds::Int(ids)) => ids.iter().map(|x| v.get(x)).collect(),
            (Vocabulary::Str(v), RawIds::Str(ids)) => {
                ids.iter().map(|x| v.get(x.unwrap_or_default())).collect()
            }
            (Vocabulary::Str(v), RawIds::Int(ids)) => {
                ids.iter().map(|x| v.get(x.to_string().as_str())).collect()
            }
            (Vocabulary::Int(_), RawIds::Str(_)) => vec![OOV_INDEX; ids.len()],
        }
    }

    /// Known raw values in index order, as ids (row `i` has index `i + 2`).
    pub fn raw_ids(&self) -> RawIds {
        match self {
            Vocabulary::Int(v) => RawIds::Int(v.raw.clone()),
            Vocabulary::Str(v) => RawIds::Str(StringArray::from(v.raw.clone())),
        }
    }

    fn counts(&self) -> &[i64] {
        match self {
            Vocabulary::Int(v) => &v.counts,
            Vocabulary::Str(v) => &v.counts,
        }
    }

    /// Writes the vocabulary as `recall_core::encoded` lays it out: `raw` (Int64 or Utf8),
    /// `index` (Int32, 2, 3, ...), `count` (Int64), one row per known value in index order;
    /// the reserved slots are not listed.
    pub fn save(&self, path: &Path) -> Result<()> {
        recall_core::encoded::write_vocabulary(path, &self.raw_ids(), self.counts())
    }

    /// Reads a vocabulary written by [`Vocabulary::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let file = recall_core::encoded::read_vocabulary(path)?;
        let counts = file.counts.into_iter().map(|c| c as i64);
        Ok(match file.raw {
            RawIds::Int(v) => {
                Vocabulary::Int(VocabOf::from_sorted(v.into_iter().zip(counts).collect()))
            }
            RawIds::Str(a) => Vocabulary::Str(VocabOf::from_sorted(
                a.iter()
                    .map(|s| s.unwrap_or_default().to_owned())
                    .zip(counts)
                    .collect(),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frequency_ordered_with_reserved_slots_and_min_count() {
        let ids = RawIds::Int(vec![5, 7, 7, 9, 9, 9, 3]);
        let v = Vocabulary::fit(&ids, 0..ids.len(), 1);
        // 9 (x3) -> 2, 7 (x2) -> 3, then 3 and 5 (x1) by ascending value -> 4, 5.
        assert_eq!(
            v.encode(&RawIds::Int(vec![9, 7, 3, 5, 42])),
            vec![2, 3, 4, 5, 1]
        );
        assert_eq!(v.table_size(), 6);
        let v2 = Vocabulary::fit(&ids, 0..ids.len(), 2);
        assert_eq!(v2.encode(&RawIds::Int(vec![9, 7, 3])), vec![2, 3, 1]);
    }

    #[test]
    fn fitting_on_a_subset_of_rows_ignores_the_rest() {
        let ids = RawIds::Int(vec![1, 2, 3]);
        let v = Vocabulary::fit(&ids, [0, 1].into_iter(), 1);
        assert_eq!(v.encode(&ids), vec![2, 3, 1]);
    }

    #[test]
    fn growing_keeps_every_index_and_appends_new_values_by_frequency() {
        let old = Vocabulary::fit(&RawIds::Int(vec![5, 7, 7, 9]), 0..4, 1);
        let newer = RawIds::Int(vec![9, 9, 9, 4, 11, 11, 7]);
        let fresh = Vocabulary::fit(&newer, 0..newer.len(), 1);
        let grown = old.grown(&fresh, "items").unwrap();
        // 7 -> 2, 5 -> 3, 9 -> 4 as before; 11 (x2) then 4 (x1) appended; 5 is kept though
        // the newer data lacks it.
        assert_eq!(
            grown.encode(&RawIds::Int(vec![7, 5, 9, 11, 4, 42])),
            vec![2, 3, 4, 5, 6, 1]
        );
        assert_eq!(grown.counts(), &[1, 0, 3, 2, 1]);
        let strings = Vocabulary::fit(&RawIds::Str(StringArray::from(vec!["a"])), 0..1, 1);
        let err = old.grown(&strings, "vocab_item_id.parquet").unwrap_err();
        assert!(err.to_string().contains("vocab_item_id.parquet"), "{err}");
    }

    #[test]
    fn string_vocabulary_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ids = RawIds::Str(StringArray::from(vec!["b", "a", "b"]));
        let v = Vocabulary::fit(&ids, 0..3, 1);
        let path = dir.path().join("v.parquet");
        v.save(&path).unwrap();
        assert_eq!(Vocabulary::load(&path).unwrap(), v);
    }

    proptest! {
        #[test]
        fn round_trip_through_parquet_keeps_every_mapping(values in proptest::collection::vec(-50i64..50, 1..200)) {
            let ids = RawIds::Int(values.clone());
            let v = Vocabulary::fit(&ids, 0..values.len(), 1);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("v.parquet");
            v.save(&path).unwrap();
            let loaded = Vocabulary::load(&path).unwrap();
            prop_assert_eq!(loaded.encode(&ids), v.encode(&ids));
            // Decoding an encoded value gives the value back.
            if let Vocabulary::Int(inner) = &loaded {
                for (&x, idx) in values.iter().zip(v.encode(&ids)) {
                    prop_assert_eq!(inner.raw(idx), Some(&x));
                }
            }
        }
    }
}
