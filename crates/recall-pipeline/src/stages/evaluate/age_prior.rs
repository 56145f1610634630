//! `evaluate.item_age_prior`: each model ranked again with `recall_eval::freshness`'s item-age
//! prior added to its scores, as `<model>+age-prior`. The prior's lift is fitted on the
//! training interactions; its weight is chosen per model on the validation split (HitRate at
//! the interval's K, unfiltered, 0 always a candidate), written with the fitted buckets to
//! `<model>/age_prior.json` (what a serving system needs to apply it), and test is ranked once
//! with that weight.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use recall_core::columns::FIRST_ITEM;
use recall_core::encoded::files;
use recall_eval::Embeddings;
use recall_eval::freshness::{self, AgePrior};
use recall_eval::metrics;
use recall_eval::split::EvalSplit;
use recall_eval::topk::{self, Options};
use serde::Serialize;

use crate::config::AgePriorConfig;

/// The weight chosen and the prior fitted, per model, in its evaluate directory.
pub const CHOICE_FILE: &str = "age_prior.json";

/// The fitted prior and the weights to try.
pub struct Prior {
    prior: Arc<AgePrior>,
    betas: Vec<f64>,
}

/// `age_prior.json`.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// The weight chosen: a query ranks items by
    /// `score / temperature + beta * log_lift[bucket(query time - release time)]`.
    pub beta: f64,
    /// The model's softmax temperature: the prior is added on its logits' scale, where a
    /// log lift is a log-probability ratio.
    pub temperature: f64,
    /// HitRate at `k` on the validation split, unfiltered, for each weight tried.
    pub validation: Vec<(f64, f64)>,
    pub k: usize,
    /// Every bucket, in order.
    pub buckets: Vec<Bucket>,
}

/// One age bucket. An item's age at a query is `(query time - release_time) / 86,400` days;
/// its bucket is the one whose `[from_days, to_days)` holds the age (`to_days` null for the
/// last), "not yet released" for a negative age, "no date" for a null `release_time`.
#[derive(Debug, Serialize)]
pub struct Bucket {
    pub name: String,
    /// The bucket's ages in days, from (inclusive) and to (exclusive, null when open-ended);
    /// both null for "not yet released" and "no date".
    pub from_days: Option<f64>,
    pub to_days: Option<f64>,
    pub log_lift: f64,
    /// Its share of the training interactions.
    pub interactions_share: f64,
    /// Its mean share of the rankable items at the training interactions' times.
    pub catalogue_share: f64,
}

impl Prior {
    /// Fits the prior on the training interactions of `split` (read with its timestamps,
    /// [`EvalSplit::read_timed`]) and `encode_dir`'s release times.
    pub fn fit(encode_dir: &Path, config: &AgePriorConfig, split: &EvalSplit) -> Result<Self> {
        let key = "configuration key `evaluate.item_age_prior`";
        let released = freshness::read_release_times(encode_dir)?.with_context(|| {
            format!(
                "{key}: {} has no release times: set `encode.item_release` (the item column that dates each item) and rerun from encode",
                encode_dir.join(files::ITEMS).display()
            )
        })?;
        let prior = AgePrior::fit(
            config.buckets()?,
            released,
            FIRST_ITEM as usize,
            split.training_events(),
        )
        .with_context(|| format!("{key}: fitting on the training interactions"))?;
        // Ascending, so a tie on validation goes to the smaller weight.
        let mut betas = vec![0.0];
        betas.extend(&config.betas);
        betas.sort_by(f64::total_cmp);
        betas.dedup();
        Ok(Prior {
            prior: Arc::new(prior),
            betas,
        })
    }

    /// Ranking options that add the prior at weight `beta` to a model's logits
    /// (`score / temperature`) for query rows at `times`: `temperature * beta` on the scores.
    pub fn options(&self, beta: f64, temperature: f64, times: Vec<Option<i64>>) -> Options {
        Options {
            first_item: FIRST_ITEM,
            score_bias: Some(self.prior.bias(temperature * beta, times)),
            ..Options::default()
        }
    }

    /// The weight with the highest unfiltered HitRate@`k` on `split` (the validation split,
    /// queried by `users` at `times`); ties go to the smaller weight.
    pub fn choose(
        &self,
        users: &Embeddings,
        items: &Embeddings,
        split: &EvalSplit,
        times: &[Option<i64>],
        temperature: f64,
        k: usize,
    ) -> Result<Choice> {
        if times.iter().all(Option::is_none) {
            anyhow::bail!(
                "configuration key `evaluate.item_age_prior`: no validation target has a timestamp to age the items at"
            );
        }
        let mut validation = Vec::new();
        for &beta in &self.betas {
            let options = self.options(beta, temperature, times.to_vec());
            let top = topk::exact_views(users, items, k, &options, &[None])?;
            let report = metrics::evaluate(&top[0], &split.truth, &[k], None)?;
            let hit_rate = report.at(k).map_or(0.0, |m| m.hit_rate);
            validation.push((beta, hit_rate));
        }
        let mut best = validation[0];
        for &(beta, hit_rate) in &validation[1..] {
            if hit_rate > best.1 {
                best = (beta, hit_rate);
            }
        }
        let p = &self.prior;
        let buckets = (0..p.buckets().len())
            .map(|b| {
                let days = p.buckets().days(b);
                Bucket {
                    name: p.buckets().name(b),
                    from_days: days.map(|(from, _)| from),
                    to_days: days.and_then(|(_, to)| to),
                    log_lift: p.log_lift()[b],
                    interactions_share: p.shares()[b].0,
                    catalogue_share: p.shares()[b].1,
                }
            })
            .collect();
        Ok(Choice {
            beta: best.0,
            temperature,
            validation,
            k,
            buckets,
        })
    }
}
