//! Inference: user vectors of a split's rows, item vectors of the catalogue, validation
//! HitRate@K, and deep copies of a model (the best epoch's snapshot, a checkpoint's weights).

use candle_core::Tensor;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_eval::split::{SeenFilter, seen_before_targets};
use recall_eval::topk::{self, Lists};
use recall_eval::{Embeddings, metrics};

use crate::data::{EncodedData, SplitRows};
use crate::error::{Error, Result};
use crate::model::tables::StepTables;
use crate::model::{Pass, TwoTower, UserRows};
use recall_core::columns::{FIRST_ITEM, OOV_INDEX};

impl TwoTower {
    /// Embeddings of every row of `split` (the user side at that row's history and age).
    pub fn embed_split(&self, data: &EncodedData, split: &SplitRows) -> Result<Embeddings> {
        let mut out = Vec::with_capacity(split.len() * self.output_dim());
        // SASRec's attention holds [rows, len, len] scores per block: fewer rows at a time.
        let rows_per_chunk = if self.window_encoder().is_some() {
            256
        } else {
            4096
        };
        for chunk in (0..split.len()).collect::<Vec<_>>().chunks(rows_per_chunk) {
            let (hist, users, ages) = data.user_rows(split, chunk);
            let rows = UserRows {
                users: &users,
                histories: &hist,
                ages: &ages,
            };
            let step = self.gather(data, &rows, &[])?;
            let u = self.users(data, &step, &rows, &mut Pass::Infer)?;
            out.extend(u.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Embeddings::new(self.output_dim(), out)?)
    }

    /// Embeddings of every item index (rows 0 and 1 are the reserved slots; skip them when
    /// ranking).
    pub fn embed_items(&self, data: &EncodedData) -> Result<Embeddings> {
        self.embed_all_items(data, &[], |step, chunk| {
            self.items(data, step, chunk, &mut Pass::Infer)
        })
    }

    /// Every item's vector from its features alone (its id row replaced by the trained OOV
    /// row), what a cold item gets: for the kinds with an item tower (DSSM), `None` for the
    /// others, whose item vector is the item's own row.
    pub fn embed_items_from_features(&self, data: &EncodedData) -> Result<Option<Embeddings>> {
        let Some(tower) = self.item_tower() else {
            return Ok(None);
        };
        self.embed_all_items(data, &[OOV_INDEX as u32], |step, chunk| {
            tower.forward_features_only(data, step, chunk)
        })
        .map(Some)
    }

    /// Every item index through `vectors`, in chunks, each step gathering the chunk's rows and
    /// `extra_rows`.
    fn embed_all_items(
        &self,
        data: &EncodedData,
        extra_rows: &[u32],
        vectors: impl Fn(&StepTables, &[u32]) -> Result<Tensor>,
    ) -> Result<Embeddings> {
        let all: Vec<u32> = (0..data.item_table_size as u32).collect();
        let mut out = Vec::with_capacity(all.len() * self.output_dim());
        let rows = UserRows {
            users: &[],
            histories: &[],
            ages: &[],
        };
        for chunk in all.chunks(8192) {
            let step = self.gather(data, &rows, &[chunk, extra_rows].concat())?;
            out.extend(vectors(&step, chunk)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Embeddings::new(self.output_dim(), out)?)
    }

    pub fn output_dim(&self) -> usize {
        self.config().output_dim()
    }

    /// HitRate@k of `split` (exact full-catalogue ranking, with the items `filter`'s view of
    /// each row's earlier items left out).
    pub fn hit_rate(
        &self,
        data: &EncodedData,
        split: &SplitRows,
        k: usize,
        filter: SeenFilter,
    ) -> Result<f64> {
        let users = self.embed_split(data, split)?;
        let items = self.embed_items(data)?;
        let seen = match filter {
            SeenFilter::None => None,
            SeenFilter::All => Some(seen_before_targets(&data.sequences, split, usize::MAX)),
            SeenFilter::Recent(n) => Some(seen_before_targets(&data.sequences, split, n)),
        };
        let top = topk::exact(
            &users,
            &items,
            k,
            &topk::Options {
                first_item: FIRST_ITEM,
                exclude: seen,
                ..Default::default()
            },
        )?;
        let truth = Lists::from_rows(
            &(0..split.len())
                .map(|r| vec![data.target(split, r)])
                .collect::<Vec<_>>(),
        );
        let report = metrics::evaluate(&top, &truth, &[k], None)?;
        Ok(report.at(k).map_or(0.0, |m| m.hit_rate))
    }
}

impl TwoTower {
    /// A deep copy whose dense `Var`s are independent of this model's (candle `Var`s share
    /// storage when cloned).
    pub fn snapshot(&self) -> Result<TwoTower> {
        let mut copy = self.clone();
        let data = self
            .params()
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        copy.rebuild_dense(&data)?;
        Ok(copy)
    }

    /// Replaces dense parameters by the given tensors (by name), rebuilding the towers.
    pub fn rebuild_dense(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let dev = self.device().clone();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let fresh = TwoTower::fresh_encoders(self.config(), self.encoder_inputs(), &mut rng, &dev)?;
        // Fresh Vars (then overwritten) so the copy shares no storage with the original.
        self.set_encoders(fresh);
        for (name, var) in self.params() {
            let t = tensors
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::Training(format!("checkpoint lacks tensor `{name}`")))?;
            var.set(&t.1.to_device(&dev)?)?;
        }
        Ok(())
    }
}
