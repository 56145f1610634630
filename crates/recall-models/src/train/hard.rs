//! A second training round on hard negatives: another model of the pipeline ranks each user
//! at its last training example, and a band of that ranking becomes the user's pool.

use recall_eval::topk::{self, Lists};
use recall_sampling::hard::HardNegatives;

use crate::data::{EncodedData, SplitRows};
use crate::error::Result;
use crate::model::TwoTower;
use recall_core::columns::FIRST_ITEM;

/// Hard negatives of a second training round: rankings mined from another model (one per
/// user index) and how many of each example's `negatives` come from them.
#[derive(Debug, Clone)]
pub struct HardRound {
    pub negatives: HardNegatives,
    pub count: usize,
    ranked_users: Vec<bool>,
}

impl HardRound {
    pub(crate) fn has_ranking(&self, user: usize) -> bool {
        self.ranked_users.get(user).copied().unwrap_or(false)
    }
}

/// Mines hard negatives with a trained `model`: each user is embedded at its last training
/// example (no validation or test information), ranked exactly against the catalogue without
/// its training positives, and ranks `band.0..band.1` become that user's hard-negative pool.
pub fn mine_hard_negatives(
    model: &TwoTower,
    data: &EncodedData,
    band: (usize, usize),
    count: usize,
) -> Result<HardRound> {
    let _span = tracing::info_span!("mine_hard_negatives", lo = band.0, hi = band.1).entered();
    let rankable = data.item_table_size.saturating_sub(FIRST_ITEM as usize);
    // Validate the band before the expensive part.
    HardNegatives::new(Vec::new(), band.0, band.1, rankable)?;
    let sub = mining_split(data);
    let users = model.embed_split(data, &sub)?;
    let items = model.embed_items(data)?;
    let exclude = Lists::from_rows(
        &sub.user
            .iter()
            .map(|&u| data.user_positives[u as usize].clone())
            .collect::<Vec<_>>(),
    );
    let top = topk::exact(
        &users,
        &items,
        band.1,
        &topk::Options {
            first_item: FIRST_ITEM,
            exclude: Some(exclude),
            ..Default::default()
        },
    )?;
    let mut rankings = vec![Vec::new(); data.user_table_size];
    let mut ranked_users = vec![false; data.user_table_size];
    for (i, &u) in sub.user.iter().enumerate() {
        rankings[u as usize] = top.list(i).to_vec();
        ranked_users[u as usize] = top.list(i).len() > band.0;
    }
    Ok(HardRound {
        negatives: HardNegatives::new(rankings, band.0, band.1, rankable)?,
        count,
        ranked_users,
    })
}

/// The rows a miner embeds: each user at its last training example (no validation or test
/// information), at the serving example-age bucket (age 0, as the user is embedded when the
/// model serves).
pub fn mining_split(data: &EncodedData) -> SplitRows {
    let train = &data.train;
    let mut last: Vec<Option<usize>> = vec![None; data.user_table_size];
    for r in 0..train.len() {
        let u = train.user[r] as usize;
        if last[u].is_none_or(|p| train.position[p] < train.position[r]) {
            last[u] = Some(r);
        }
    }
    let rows: Vec<usize> = last.iter().flatten().copied().collect();
    let mut sub = train.select(&rows);
    sub.age_bucket.fill(data.serving_age_bucket);
    sub
}
