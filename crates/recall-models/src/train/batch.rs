//! What a training step is made of: the rows (or SASRec windows) of a batch, their
//! histories, the negatives drawn for them ahead of the step, and the batch's loss.

use candle_core::Tensor;
use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_sampling::exclude::draw_excluding_with_mass;
use recall_sampling::{ItemSampler, Popularity, Uniform};

use crate::config::{Loss, NegativeSampler, TrainConfig};
use crate::data::EncodedData;
use crate::error::Result;
use crate::model::window::{Padded, WindowEncoder};
use crate::model::{Pass, StepTables, TwoTower, UserRows};
use crate::ops::fused::RowExclusions;
use crate::train::hard::HardRound;
use crate::train::loss::{bce_with_logits, bpr, proposal_q, softmax_first};
use recall_core::columns::FIRST_ITEM;
use recall_eval::split::SeenView;

pub(crate) fn sampler(config: &TrainConfig, data: &EncodedData) -> Result<Box<dyn ItemSampler>> {
    let end = data.item_table_size as u32;
    Ok(match config.sampler {
        NegativeSampler::Uniform => Box::new(Uniform::new(FIRST_ITEM, end)?),
        NegativeSampler::Popularity { alpha } => {
            Box::new(Popularity::new(&data.item_counts, FIRST_ITEM, alpha)?)
        }
    })
}

/// Each item's share of the training examples' targets (an item never a target gets the
/// share of one, so its logQ stays finite).
pub fn example_target_q(data: &EncodedData) -> Vec<f64> {
    let mut counts = vec![0u64; data.item_table_size];
    for r in 0..data.train.len() {
        counts[data.target(&data.train, r) as usize] += 1;
    }
    let total = data.train.len().max(1) as f64;
    counts.iter().map(|&c| c.max(1) as f64 / total).collect()
}

/// Where a batch's negatives come from.
pub(crate) struct Negatives<'a> {
    pub(crate) sampler: &'a dyn ItemSampler,
    /// Sampler mass of each user's positives (see `draw_excluding_with_mass`).
    pub(crate) user_mass: &'a [f64],
    pub(crate) hard: Option<&'a HardRound>,
}

/// Everything random about one batch, drawn ahead of the step that trains on it: the rows,
/// the sampled negatives and a seed for the dropout masks. Drawing does not depend on the
/// model, so a second thread draws batch t + 1 while batch t trains (sampling was about a
/// seventh of a YoutubeDNN step at torch-rechub's sizes).
pub(crate) struct BatchDraw {
    /// Rows of the training split, or SASRec's windows.
    pub rows: Vec<usize>,
    /// Sampled losses: `negatives` items per row, row after row (a row's hard negatives
    /// first). Mixed: the draws the whole batch shares. In-batch: none.
    negatives: Vec<u32>,
    /// How many of each row's negatives are hard ones (empty without a hard round).
    pub(crate) hard_counts: Vec<usize>,
    dropout_seed: u64,
}

/// Draws a batch's negatives (never one of the user's training positives for per-row
/// negatives; mixed negatives are shared by the batch and masked where they hit a target).
pub(crate) fn draw_batch(
    data: &EncodedData,
    config: &TrainConfig,
    rows: &[usize],
    negatives: &Negatives<'_>,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<BatchDraw> {
    let dropout_seed = rng.random();
    let mut hard_counts = Vec::new();
    let drawn = match config.loss {
        Loss::InBatch | Loss::FullSoftmax => Vec::new(),
        Loss::Mixed => (0..config.negatives)
            .map(|_| negatives.sampler.draw(rng))
            .collect(),
        _ => {
            let n = config.negatives;
            let mut all = Vec::with_capacity(rows.len() * n);
            let mut negs = Vec::with_capacity(n);
            for &r in rows {
                negs.clear();
                let user = data.train.user[r] as usize;
                let positives = &data.user_positives[user];
                // Hard negatives first (users the mining model ranked), the rest from the sampler.
                if let Some(h) = negatives.hard.filter(|h| h.has_ranking(user)) {
                    h.negatives
                        .draw(user, rng, positives, h.count.min(n), &mut negs)?;
                }
                if negatives.hard.is_some() {
                    hard_counts.push(negs.len());
                }
                let rest = n - negs.len();
                draw_excluding_with_mass(
                    negatives.sampler,
                    rng,
                    positives,
                    negatives.user_mass[user],
                    rest,
                    &mut negs,
                )?;
                all.extend_from_slice(&negs);
            }
            all
        }
    };
    Ok(BatchDraw {
        rows: rows.to_vec(),
        negatives: drawn,
        hard_counts,
        dropout_seed,
    })
}

/// The dropout masks of a step: keep/scale masks of any shape at `rate`, from the batch's
/// own seed (so the batches depend on the seed only). One random `u64` decides four values,
/// a 16-bit lane each (dropped below `rate * 2^16`): drawing a number per value was about 4 %
/// of a SASRec step, whose attention probabilities alone take millions of values. The rate is
/// exact to 1/65,536 and the keep scale is that of the rounded rate, so the mask's mean is 1.
fn dropout_masks(
    seed: u64,
    rate: f32,
    dev: &candle_core::Device,
) -> impl FnMut(&[usize]) -> Result<Tensor> + '_ {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let threshold = ((rate as f64 * 65536.0).round() as u32).min(65535);
    let keep = (65536.0 / (65536 - threshold) as f64) as f32;
    move |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut m = vec![0f32; n];
        for chunk in m.chunks_mut(4) {
            let r = rng.next_u64();
            for (lane, v) in chunk.iter_mut().enumerate() {
                let bits = ((r >> (16 * lane)) & 0xffff) as u32;
                *v = if bits < threshold { 0.0 } else { keep };
            }
        }
        Ok(Tensor::from_vec(m, shape, dev)?)
    }
}

/// Loss of one drawn batch, the step's gathered rows, and how many training examples (rows,
/// or SASRec's target positions) it trained on.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_loss(
    model: &TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    draw: &BatchDraw,
    sampler: &dyn ItemSampler,
    target_q: &dyn Fn(u32) -> f64,
    hard: Option<&HardRound>,
    windows: Option<&Windows>,
) -> Result<(Tensor, StepTables, usize)> {
    if let (Some(encoder), Some(windows)) = (model.window_encoder(), windows) {
        return sequence_loss(
            model, encoder, data, config, draw, windows, sampler, target_q,
        );
    }
    let rows = &draw.rows[..];
    let split = &data.train;
    let dev = &model.device();
    let (hist, users, ages) = data.user_rows(split, rows);
    let targets: Vec<u32> = rows.iter().map(|&r| data.target(split, r)).collect();
    let b = rows.len();
    let temperature = model.config().common().temperature;
    let dropout_rate = model.config().common().dropout;
    let mut mask = dropout_masks(draw.dropout_seed, dropout_rate, dev);
    let urows = UserRows {
        users: &users,
        histories: &hist,
        ages: &ages,
    };

    if config.loss == Loss::FullSoftmax {
        // Every item is a column, the target's own the label; nothing to correct or mask.
        let items: Vec<u32> = (FIRST_ITEM..data.item_table_size as u32).collect();
        let labels: Vec<u32> = targets.iter().map(|&t| t - FIRST_ITEM).collect();
        let step = model.gather(data, &urows, &items)?;
        let mut pass = Pass::Train {
            dropout: dropout_rate,
            mask: &mut mask,
            seed: draw.dropout_seed,
        };
        let u = model.users(data, &step, &urows, &mut pass)?;
        let v = model.items(data, &step, &items, &mut pass)?;
        let loss = crate::ops::fused::softmax_loss(
            &u.matmul(&v.t()?)?,
            1.0 / temperature,
            &targets,
            &items,
            &vec![0.0; items.len()],
            &labels,
        )?;
        return Ok((loss, step, b));
    }
    if matches!(config.loss, Loss::InBatch | Loss::Mixed) {
        // Candidates: the batch's targets and, for mixed negatives, `negatives` items drawn
        // for the whole batch. Each column is corrected by its log expected count (logQ), and
        // a column holding row i's own target elsewhere is an accidental hit, masked.
        let batch = recall_sampling::inbatch::mixed_from_draws(
            &targets,
            target_q,
            sampler,
            &draw.negatives,
        );
        let c = batch.items.len();
        let step = model.gather(data, &urows, &batch.items)?;
        let mut pass = Pass::Train {
            dropout: dropout_rate,
            mask: &mut mask,
            seed: draw.dropout_seed,
        };
        let u = model.users(data, &step, &urows, &mut pass)?;
        let v = model.items(data, &step, &batch.items, &mut pass)?;
        let logits = u.matmul(&v.t()?)?;
        let column_bias: Vec<f32> = if config.logq_correction {
            batch.log_expected_count.iter().map(|c| -c).collect()
        } else {
            vec![0.0; c]
        };
        let loss = crate::ops::fused::in_batch_softmax_loss(
            &logits,
            1.0 / temperature,
            &targets,
            &batch.items,
            &column_bias,
        )?;
        return Ok((loss, step, b));
    }

    // Each row's positive, then its sampled negatives.
    let n = config.negatives;
    let mut candidates = Vec::with_capacity(b * (n + 1));
    for (k, &target) in targets.iter().enumerate() {
        candidates.push(target);
        candidates.extend_from_slice(&draw.negatives[k * n..(k + 1) * n]);
    }
    let step = model.gather(data, &urows, &candidates)?;
    let mut pass = Pass::Train {
        dropout: dropout_rate,
        mask: &mut mask,
        seed: draw.dropout_seed,
    };
    let u = model.users(data, &step, &urows, &mut pass)?;
    let v = model.items(data, &step, &candidates, &mut pass)?;
    let mut logits = crate::ops::fused::row_scores(&u, &v, n + 1, 1.0 / temperature)?;
    if config.logq_correction && matches!(config.loss, Loss::SampledSoftmax) {
        let q = sampled_log_q(data, draw, &candidates, n, sampler, hard)?;
        logits = (logits + Tensor::from_vec(q, (b, n + 1), dev)?)?;
    }
    let loss = match config.loss {
        Loss::SampledSoftmax => softmax_first(&logits)?,
        Loss::Pairwise => bpr(&logits)?,
        _ => {
            let mut labels = vec![0f32; b * (n + 1)];
            (0..b).for_each(|i| labels[i * (n + 1)] = 1.0);
            bce_with_logits(&logits, &Tensor::from_vec(labels, (b, n + 1), dev)?)?
        }
    };
    Ok((loss, step, b))
}

/// A SASRec training window: the targets at positions `end - len + 1 ..= end` of `user`'s
/// sequence, each predicted from the items before it within the window.
#[derive(Debug, Clone, Copy)]
struct Window {
    user: u32,
    end: u32,
    len: u32,
    /// Where its `len` flags start in [`Windows::trainable`].
    start: usize,
}

/// SASRec's training units: each user's training targets (the encode stage's train rows)
/// cut, from the newest back, into windows of at most `max_len` positions. A window's inputs
/// are the `len` items just before its targets, so every position trains on its own prefix
/// within the window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Windows {
    windows: Vec<Window>,
    /// Per window position, whether its target is a training example (a train row: a known
    /// target, within any per-user cap).
    trainable: Vec<bool>,
}

impl Windows {
    pub(crate) fn new(data: &EncodedData, max_len: usize) -> Self {
        let split = &data.train;
        let mut out = Windows::default();
        let mut r = 0;
        // Train rows are grouped by user, positions ascending (the encode contract).
        while r < split.len() {
            let user = split.user[r];
            let mut e = r;
            while e < split.len() && split.user[e] == user {
                e += 1;
            }
            let positions = &split.position[r..e];
            let mut end = positions[positions.len() - 1];
            while end >= 1 {
                let len = (max_len as u32).min(end);
                let first = end - len + 1;
                let start = out.trainable.len();
                out.trainable
                    .extend((first..=end).map(|p| positions.binary_search(&p).is_ok()));
                if out.trainable[start..].iter().any(|&t| t) {
                    out.windows.push(Window {
                        user,
                        end,
                        len,
                        start,
                    });
                } else {
                    out.trainable.truncate(start);
                }
                end -= len;
            }
            r = e;
        }
        out
    }

    /// The user and the newest target position of window `w`.
    pub(crate) fn newest_target(&self, w: usize) -> (u32, u32) {
        (self.windows[w].user, self.windows[w].end)
    }

    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }

    /// The input items of window `w` (oldest first).
    fn inputs<'a>(&self, data: &'a EncodedData, w: &Window) -> &'a [u32] {
        let seq = data.sequences.sequence(w.user);
        &seq[(w.end - w.len) as usize..w.end as usize]
    }
}

/// SASRec's loss on a batch of windows: every trainable position's user vector (the encoder's
/// output there) scored against the candidates the batch shares — the whole catalogue, or the
/// batch's distinct targets (plus, mixed, the shared draws) corrected by their inclusion
/// probability — in one softmax with the position's target as its label.
#[allow(clippy::too_many_arguments)]
fn sequence_loss(
    model: &TwoTower,
    encoder: &dyn WindowEncoder,
    data: &EncodedData,
    config: &TrainConfig,
    draw: &BatchDraw,
    windows: &Windows,
    sampler: &dyn ItemSampler,
    target_q: &dyn Fn(u32) -> f64,
) -> Result<(Tensor, StepTables, usize)> {
    let dev = &model.device();
    let chosen: Vec<&Window> = draw.rows.iter().map(|&i| &windows.windows[i]).collect();
    let inputs: Vec<&[u32]> = chosen.iter().map(|w| windows.inputs(data, w)).collect();
    let users: Vec<u32> = chosen.iter().map(|w| w.user).collect();
    // Packed several windows to a row: the same outputs on about 0.6 of the slots.
    let padded = Padded::packed(inputs.iter().copied(), encoder.max_len());
    // The trainable positions, as slots of the encoder's [rows * len, d] output, and their
    // targets.
    let (mut picks, mut targets) = (Vec::new(), Vec::new());
    for (b, w) in chosen.iter().enumerate() {
        let seq = data.sequences.sequence(w.user);
        let first_target = (w.end - w.len + 1) as usize;
        for j in 0..w.len as usize {
            if windows.trainable[w.start + j] {
                picks.push((padded.starts[b] + j) as u32);
                targets.push(seq[first_target + j]);
            }
        }
    }
    let (items, bias, labels) = if config.loss == Loss::FullSoftmax {
        let items: Vec<u32> = (FIRST_ITEM..data.item_table_size as u32).collect();
        let labels = targets.iter().map(|&t| t - FIRST_ITEM).collect();
        let bias = vec![0.0; items.len()];
        (items, bias, labels)
    } else {
        let shared = recall_sampling::inbatch::shared_candidates(
            &targets,
            target_q,
            (config.loss == Loss::Mixed).then_some(sampler),
            &draw.negatives,
        );
        let bias = if config.logq_correction {
            shared.log_inclusion.iter().map(|l| -l).collect()
        } else {
            vec![0.0; shared.items.len()]
        };
        (shared.items, bias, shared.target_columns)
    };
    let excluded = match config.seen_filter {
        SeenView::None => None,
        SeenView::All => Some(seen_before_targets(
            data,
            &chosen,
            windows,
            &items,
            usize::MAX,
        )),
        SeenView::Recent => Some(seen_before_targets(
            data,
            &chosen,
            windows,
            &items,
            encoder.max_len(),
        )),
    };
    let urows = UserRows {
        users: &users,
        histories: &inputs,
        ages: &[],
    };
    let step = model.gather(data, &urows, &items)?;
    let side = model.side_inputs(data, &step, &users)?;
    let mut mask = dropout_masks(draw.dropout_seed, model.config().common().dropout, dev);
    let mut pass = Pass::Train {
        dropout: model.config().common().dropout,
        mask: &mut mask,
        seed: draw.dropout_seed,
    };
    let hidden = encoder.forward(&step.item, &padded, side.as_ref(), &mut pass)?;
    let count = picks.len();
    let picks = Tensor::from_vec(picks, count, dev)?;
    let u = crate::ops::fused::l2_normalize(&hidden.index_select(&picks, 0)?)?;
    let v = model.items(data, &step, &items, &mut pass)?;
    let loss = crate::ops::score_op::vector_softmax_loss(
        &u,
        &v,
        1.0 / model.config().common().temperature,
        crate::ops::score_op::Columns {
            row_targets: &targets,
            column_items: &items,
            column_bias: &bias,
            labels: &labels,
            excluded: excluded.as_ref(),
        },
    )?;
    Ok((loss, step, count))
}

/// For each trainable position of `chosen` (in the order `sequence_loss` picks them), the
/// candidate columns of the newest `newest` items its user interacted with before its target
/// (`usize::MAX`: the whole history, older windows included), as the evaluate stage's seen
/// filter has it (`recall_eval::split::seen_before_targets`). Items that are not candidates are
/// skipped; the label column, even where the target was seen before, is kept by the loss.
fn seen_before_targets(
    data: &EncodedData,
    chosen: &[&Window],
    windows: &Windows,
    items: &[u32],
    newest: usize,
) -> RowExclusions {
    let mut column_of = vec![u32::MAX; data.item_table_size];
    for (c, &item) in items.iter().enumerate() {
        column_of[item as usize] = c as u32;
    }
    let mut out = RowExclusions::default();
    let mut seen_counts = Vec::new();
    for w in chosen {
        let seq = data.sequences.sequence(w.user);
        let first_target = (w.end - w.len + 1) as usize;
        // Window positions' targets are seq[first_target + j]: their histories are the
        // prefixes of seq[..first_target + len - 1], so one copy serves the window's rows.
        let prefix = &seq[..first_target + w.len as usize - 1];
        seen_counts.clear();
        seen_counts.push(0u32);
        let start = out.extend(prefix.iter().filter_map(|&item| {
            let c = column_of.get(item as usize).copied().unwrap_or(u32::MAX);
            let kept = c != u32::MAX;
            let n = seen_counts.last().copied().unwrap_or(0) + u32::from(kept);
            seen_counts.push(n);
            kept.then_some(c)
        }));
        for j in 0..w.len as usize {
            if windows.trainable[w.start + j] {
                // The target is seq[t]: its history is prefix[..t], the view its newest part.
                let t = first_target + j;
                let oldest = seen_counts[t.saturating_sub(newest)];
                out.push_row(start + oldest, seen_counts[t] - oldest);
            }
        }
    }
    out
}

/// `-ln q` of every candidate of a sampled-softmax batch (`n + 1` per row: the positive, then
/// the row's negatives), where `q` is the candidate's probability per draw under the row's
/// whole proposal. Without hard negatives that is the sampler's `q`. With `h` of the row's `n`
/// negatives drawn uniformly from the user's hard pool (rank band minus positives) and the rest
/// from the sampler, an item's expected count among the negatives is
/// `(n - h) q_sampler + h [in pool] / |pool|`; divided by `n - h` (a constant per row, which
/// the softmax ignores) so rows without hard negatives keep exactly the sampler's `q`. The
/// positive column gets the same formula at its own item, as in any sampled softmax.
pub(crate) fn sampled_log_q(
    data: &EncodedData,
    draw: &BatchDraw,
    candidates: &[u32],
    n: usize,
    sampler: &dyn ItemSampler,
    hard: Option<&HardRound>,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(candidates.len());
    for (k, (&r, row)) in draw.rows.iter().zip(candidates.chunks(n + 1)).enumerate() {
        let h = draw.hard_counts.get(k).copied().unwrap_or(0);
        let pool = match hard {
            Some(round) if h > 0 => {
                let user = data.train.user[r] as usize;
                let mut pool = round.negatives.pool(user, &data.user_positives[user])?;
                pool.sort_unstable();
                pool
            }
            _ => Vec::new(),
        };
        out.extend(row.iter().map(|&c| {
            -(proposal_q(sampler.probability(c), &pool, h, n, c)
                .max(1e-12)
                .ln() as f32)
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Windows, dropout_masks, seen_before_targets};
    use crate::data::{EncodedData, SplitRows};
    use crate::testing::values;
    use candle_core::Device;
    use recall_core::encoded::Sequences;

    /// One user (index 2) with items 2..=9 in order, positions 1..=6 trained on.
    fn one_user(max_len: usize) -> EncodedData {
        let items: Vec<u32> = (2..10).collect();
        let sequences =
            Sequences::new(vec![0, 0, 0, items.len()], items, vec![0, 0, 7], None).unwrap();
        EncodedData {
            user_table_size: 3,
            item_table_size: 10,
            max_len,
            age_table_size: 0,
            serving_age_bucket: 0,
            user_features: Vec::new(),
            item_scalar_features: Vec::new(),
            item_bags: Vec::new(),
            user_dense: Vec::new(),
            item_dense: Vec::new(),
            sequences,
            train: SplitRows {
                user: vec![2; 6],
                position: (1..=6).collect(),
                age_bucket: vec![0; 6],
            },
            valid: SplitRows::default(),
            test: SplitRows::default(),
            item_counts: vec![1; 10],
            user_positives: Vec::new(),
            first_cold_item: None,
        }
    }

    /// Each trainable position leaves out exactly the columns of the items before its target,
    /// older windows' items included, and skips items that are not candidates.
    #[test]
    fn seen_exclusions_are_the_history_before_each_target() {
        let data = one_user(3);
        let windows = Windows::new(&data, 3);
        // Windows from the newest: targets at positions 4..=6, then 1..=3.
        assert_eq!(windows.len(), 2);
        let chosen: Vec<_> = windows.windows.iter().collect();
        let seq = data.sequences.sequence(2);
        let targets: Vec<usize> = chosen
            .iter()
            .flat_map(|w| (w.end - w.len + 1..=w.end).map(|p| p as usize))
            .collect();
        // Full softmax: every item a column (item - 2); then candidates without items 3 and 6.
        let all: Vec<u32> = (2..10).collect();
        let some: Vec<u32> = vec![9, 2, 4, 5, 7, 8];
        // The whole history, and the `recent` view's newest 2 and 4 items before each target.
        for newest in [usize::MAX, 2, 4] {
            for candidates in [&all, &some] {
                let ex = seen_before_targets(&data, &chosen, &windows, candidates, newest);
                assert_eq!(ex.rows(), targets.len());
                for (row, &p) in targets.iter().enumerate() {
                    let want: Vec<u32> = seq[p.saturating_sub(newest)..p]
                        .iter()
                        .filter_map(|i| candidates.iter().position(|c| c == i))
                        .map(|c| c as u32)
                        .collect();
                    assert_eq!(
                        ex.row(row),
                        &want[..],
                        "target position {p}, newest {newest}"
                    );
                }
            }
        }
    }

    /// A mask drops its rate of values, scales the rest so its mean is 1, and is the same for
    /// the same seed whatever the shapes drawn before (an odd count leaves lanes unused).
    #[test]
    fn dropout_masks_drop_their_rate_and_keep_the_mean() {
        let dev = Device::Cpu;
        for rate in [0.1f32, 0.2, 0.5] {
            let mut draw = dropout_masks(7, rate, &dev);
            let first = values(&draw(&[3]).unwrap());
            let m = values(&draw(&[1000, 1000]).unwrap());
            let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
            let mean = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
            assert!(
                (dropped - rate as f64).abs() < 0.005,
                "rate {rate}: dropped {dropped}"
            );
            assert!((mean - 1.0).abs() < 0.01, "rate {rate}: mean {mean}");
            let mut again = dropout_masks(7, rate, &dev);
            assert_eq!(values(&again(&[3]).unwrap()), first);
            assert_eq!(values(&again(&[1000, 1000]).unwrap()), m);
            let other = values(&dropout_masks(8, rate, &dev)(&[1000, 1000]).unwrap());
            assert_ne!(other, m);
        }
    }
}
