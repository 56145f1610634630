//! Exact top-K retrieval over the whole catalogue.
//!
//! Scores are computed block by block: a block of users times a block of items is one matrix
//! product through `gemm` (the kernel candle uses on CPU), written into a per-thread buffer of
//! `user_block * item_block` floats, so memory stays bounded whatever the catalogue size. Each
//! user keeps at most `2K` candidates and compacts them with a partial selection, so selection
//! costs O(items) per user with a small constant. Items are scanned in ascending index order,
//! which makes ties deterministic: equal scores rank by ascending item index.

use rayon::prelude::*;
use recall_core::{Error, Result};

use crate::embeddings::Embeddings;

/// One ranked list: (item index, score), best first.
type Scored = Vec<(u32, f32)>;

/// Per-user lists of item indices in CSR form (truth sets, seen items, rankings).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lists {
    offsets: Vec<usize>,
    items: Vec<u32>,
}

impl Lists {
    /// From one vector per user.
    pub fn from_rows(rows: &[Vec<u32>]) -> Self {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let mut items = Vec::new();
        for r in rows {
            items.extend_from_slice(r);
            offsets.push(items.len());
        }
        Lists { offsets, items }
    }

    /// From CSR parts; `offsets` has one more entry than there are users.
    pub fn from_parts(offsets: Vec<usize>, items: Vec<u32>) -> Result<Self> {
        let ok = offsets.first() == Some(&0)
            && offsets.last() == Some(&items.len())
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err(Error::invalid(
                "item lists",
                "offsets must rise from 0 to the number of items",
            ));
        }
        Ok(Lists { offsets, items })
    }

    pub fn users(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn get(&self, user: usize) -> &[u32] {
        &self.items[self.offsets[user]..self.offsets[user + 1]]
    }

    /// Each user's list sorted and deduplicated (what exclusion needs).
    pub fn sorted_unique(&self) -> Self {
        let rows: Vec<Vec<u32>> = (0..self.users())
            .map(|u| {
                let mut v = self.get(u).to_vec();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        Self::from_rows(&rows)
    }
}

/// A score added to each (query row, item) pair before ranking, such as an item-age prior
/// ([`crate::freshness`]): what a plain inner product cannot say about a pair.
pub trait ScoreBias: std::fmt::Debug + Send + Sync {
    /// Adds query row `row`'s bias for items `first..first + scores.len()` to `scores`.
    fn add(&self, row: usize, first: usize, scores: &mut [f32]);
}

/// Retrieval options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Items with an index below this are never returned (embedding tables indexed by an
    /// encoder's vocabulary reserve 0 for padding and 1 for out-of-vocabulary). Default 0.
    pub first_item: u32,
    /// Items each user must not get back (e.g. seen in training), one list per user.
    pub exclude: Option<Lists>,
    /// Users per block. Default 256.
    pub user_block: usize,
    /// Items per block. Default 8192 (with 256 users: an 8 MiB score buffer per thread).
    pub item_block: usize,
    /// Added to every score before ranking (rows numbered as `users`' rows). Default none.
    pub score_bias: Option<std::sync::Arc<dyn ScoreBias>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            first_item: 0,
            exclude: None,
            user_block: 256,
            item_block: 8192,
            score_bias: None,
        }
    }
}

/// The top-K of every user: item indices and scores, best first, ties by item index.
/// A user has fewer than K entries only when exclusions left fewer rankable items.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub k: usize,
    /// Number of items that could be ranked (catalogue minus reserved rows).
    pub rankable_items: usize,
    lists: Lists,
    scores: Vec<f32>,
}

impl TopK {
    pub fn users(&self) -> usize {
        self.lists.users()
    }

    pub fn list(&self, user: usize) -> &[u32] {
        self.lists.get(user)
    }

    pub fn scores(&self, user: usize) -> &[f32] {
        &self.scores[self.lists.offsets[user]..self.lists.offsets[user + 1]]
    }

    /// The rankings of the first `n` users.
    pub fn head(&self, n: usize) -> TopK {
        let n = n.min(self.users());
        let rows: Vec<Vec<(u32, f32)>> = (0..n)
            .map(|u| {
                self.list(u)
                    .iter()
                    .copied()
                    .zip(self.scores(u).iter().copied())
                    .collect()
            })
            .collect();
        TopK::from_ranked(self.k, self.rankable_items, rows)
    }

    /// Builds a ranking from per-user (item, score) lists already ordered best first.
    pub fn from_ranked(k: usize, rankable_items: usize, rows: Vec<Vec<(u32, f32)>>) -> Self {
        let lists = Lists::from_rows(
            &rows
                .iter()
                .map(|r| r.iter().map(|p| p.0).collect())
                .collect::<Vec<_>>(),
        );
        let scores = rows.into_iter().flatten().map(|p| p.1).collect();
        TopK {
            k,
            rankable_items,
            lists,
            scores,
        }
    }
}

/// Orders candidates best first: higher score, then lower item index. IEEE comparison, not
/// `total_cmp`, so that -0.0 and 0.0 tie (a kernel may produce either for a zero product).
/// Scores are never NaN: embeddings are checked finite.
fn better(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// A candidate ordered so that the *worst* is greatest: lower score, then higher index. The
/// max-heap of these keeps the current k-th best on top.
#[derive(Debug, Clone, Copy)]
struct Worst(f32, u32);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    /// `better` orders the better candidate first (Less), so the worse one compares Greater:
    /// exactly the order a max-heap of "worst on top" needs.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        better(&(self.0, self.1), &(other.0, other.1))
    }
}

/// Keeps the best `k` of a stream of (score, item) whose items arrive in ascending order.
struct Selector {
    k: usize,
    heap: std::collections::BinaryHeap<Worst>,
    /// Score of the current k-th best (-inf until k candidates are in). A later item must beat
    /// it strictly: on an equal score it loses the tie, having a larger index.
    threshold: f32,
}

/// Width of the vectorised pre-check: a chunk is only looked at item by item when one of its
/// scores beats the threshold, which after the first few blocks is rare.
const CHUNK: usize = 16;

impl Selector {
    fn new(k: usize) -> Self {
        Selector {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
            threshold: f32::NEG_INFINITY,
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, item: u32) {
        if self.heap.len() < self.k {
            // Excluded items carry -inf and are never taken, even to fill the list.
            if score > f32::NEG_INFINITY {
                self.heap.push(Worst(score, item));
                if self.heap.len() == self.k {
                    self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0);
                }
            }
        } else if score > self.threshold {
            if let Some(mut top) = self.heap.peek_mut() {
                *top = Worst(score, item);
            }
            self.threshold = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0);
        }
    }

    /// Offers a row of scores for items `first..first + row.len()`.
    fn offer_row(&mut self, row: &[f32], first: u32) {
        let mut j = 0;
        while self.heap.len() < self.k && j < row.len() {
            self.offer(row[j], first + j as u32);
            j += 1;
        }
        for (c, chunk) in row[j..].chunks(CHUNK).enumerate() {
            let t = self.threshold;
            // No short-circuit, so this compiles to packed compares.
            if chunk.iter().fold(false, |any, &x| any | (x > t)) {
                let base = first + (j + c * CHUNK) as u32;
                for (i, &x) in chunk.iter().enumerate() {
                    self.offer(x, base + i as u32);
                }
            }
        }
    }

    fn finish(self) -> Vec<(u32, f32)> {
        let mut v: Vec<(f32, u32)> = self.heap.into_iter().map(|w| (w.0, w.1)).collect();
        v.sort_unstable_by(better);
        v.into_iter().map(|(s, i)| (i, s)).collect()
    }
}

/// `scores[u * n + i] = users[u] · items[i]` (row-major `m x dim` times `n x dim`), through
/// gemm, on `threads` threads (1 inside the parallel top-K; more for a plain product).
pub fn inner_products(
    users: &[f32],
    items: &[f32],
    dim: usize,
    scores: &mut [f32],
    threads: usize,
) {
    use crate::matmul::{Matrix, matmul};
    let (m, n) = (users.len() / dim, items.len() / dim);
    matmul(
        Matrix::row_major(users, m, dim),
        Matrix::row_major(items, n, dim).t(),
        scores,
        false,
        threads,
    );
}

/// Exact top-`k` of every row of `users` against every row of `items` by inner product.
pub fn exact(users: &Embeddings, items: &Embeddings, k: usize, options: &Options) -> Result<TopK> {
    let exclude = options.exclude.as_ref();
    let mut lists = exact_views(users, items, k, options, &[exclude])?;
    Ok(lists.remove(0))
}

/// Whether each row's target would rank in the top `k` if it were a cold item: the target
/// scored by its `cold` vector (the one a model gives an item from its features alone) against
/// every other rankable item's own vector, `exclude`d items left out. Ties count as misses.
/// What validation can measure of a cold-start path when no validation target is cold.
pub fn hits_as_cold(
    users: &Embeddings,
    items: &Embeddings,
    cold: &Embeddings,
    targets: &[u32],
    exclude: Option<&Lists>,
    k: usize,
    options: &Options,
) -> Result<Vec<bool>> {
    if targets.len() != users.rows() || cold.rows() != items.rows() || cold.dim() != items.dim() {
        return Err(Error::invalid(
            "hits_as_cold",
            format!(
                "{} targets for {} users, {} cold vectors of width {} for {} items of width {}",
                targets.len(),
                users.rows(),
                cold.rows(),
                cold.dim(),
                items.rows(),
                items.dim()
            ),
        ));
    }
    // The target itself is out of the others' ranking.
    let rows: Vec<Vec<u32>> = (0..targets.len())
        .map(|r| {
            let mut row = exclude.map_or_else(Vec::new, |e| e.get(r).to_vec());
            row.push(targets[r]);
            row
        })
        .collect();
    let others = exact(
        users,
        items,
        k,
        &Options {
            exclude: Some(Lists::from_rows(&rows)),
            ..options.clone()
        },
    )?;
    Ok((0..targets.len())
        .map(|r| {
            let u = users.row(r);
            let score: f32 = u
                .iter()
                .zip(cold.row(targets[r] as usize))
                .map(|(a, b)| a * b)
                .sum();
            let ranked = others.scores(r);
            ranked.len() < k || score > ranked[k - 1]
        })
        .collect())
}

/// Exact top-`k` of every user for several exclusion views in one pass over the score
/// blocks: each block's products are computed once and offered to every view (the matrix
/// product is most of the cost at a large catalogue). `views[v]` is that view's exclusion
/// lists (`None`: nothing excluded); `options.exclude` is ignored. Returns one ranking per
/// view, each equal to [`exact`] with that view's exclusions.
pub fn exact_views(
    users: &Embeddings,
    items: &Embeddings,
    k: usize,
    options: &Options,
    views: &[Option<&Lists>],
) -> Result<Vec<TopK>> {
    let _span = tracing::info_span!(
        "exact_topk",
        users = users.rows(),
        items = items.rows(),
        k,
        views = views.len()
    )
    .entered();
    if users.dim() != items.dim() {
        return Err(Error::invalid(
            "top-K",
            format!(
                "user embeddings have dimension {} but item embeddings {}",
                users.dim(),
                items.dim()
            ),
        ));
    }
    let first = options.first_item as usize;
    let rankable = items.rows().saturating_sub(first);
    if k == 0 || k > rankable {
        return Err(Error::config(
            "k",
            format!("must be between 1 and the number of rankable items ({rankable}), got {k}"),
        ));
    }
    for ex in views.iter().flatten() {
        if ex.users() != users.rows() {
            return Err(Error::invalid(
                "top-K exclusions",
                format!("{} exclusion lists for {} users", ex.users(), users.rows()),
            ));
        }
    }
    let excludes: Vec<Option<Lists>> = views.iter().map(|v| v.map(Lists::sorted_unique)).collect();
    let dim = users.dim();
    let (ub, ib) = (options.user_block.max(1), options.item_block.max(1));
    let n_items = items.rows();
    let n_views = views.len();

    let progress = crate::progress::RateLog::new("exact top-K", "users", users.rows());
    // Per user block, per view, per user: its top-K (item, score).
    let blocks: Vec<Vec<Vec<Scored>>> = users
        .as_slice()
        .par_chunks(ub * dim)
        .enumerate()
        .map(|(b, user_rows)| {
            let m = user_rows.len() / dim;
            // selectors[v * m + u]: view v of user u.
            let mut selectors: Vec<Selector> = (0..m * n_views).map(|_| Selector::new(k)).collect();
            // Per view and user, a cursor into the sorted exclusion list, advanced block by
            // block.
            let mut cursors = vec![0usize; m * n_views];
            let mut scores = vec![0f32; m * ib.min(n_items)];
            let mut saved: Vec<(usize, f32)> = Vec::new();
            let mut start = first;
            while start < n_items {
                let end = (start + ib).min(n_items);
                let n = end - start;
                let block_scores = &mut scores[..m * n];
                // One thread per block: the parallelism is across user blocks.
                inner_products(
                    user_rows,
                    &items.as_slice()[start * dim..end * dim],
                    dim,
                    block_scores,
                    1,
                );
                if let Some(bias) = &options.score_bias {
                    for u in 0..m {
                        bias.add(b * ub + u, start, &mut block_scores[u * n..(u + 1) * n]);
                    }
                }
                for u in 0..m {
                    let row = &mut block_scores[u * n..(u + 1) * n];
                    for (v, exclude) in excludes.iter().enumerate() {
                        let sel = &mut selectors[v * m + u];
                        let Some(ex) = exclude else {
                            sel.offer_row(row, start as u32);
                            continue;
                        };
                        let list = ex.get(b * ub + u);
                        let c = &mut cursors[v * m + u];
                        saved.clear();
                        while *c < list.len() && (list[*c] as usize) < end {
                            let i = list[*c] as usize;
                            if i >= start {
                                saved.push((i - start, row[i - start]));
                                row[i - start] = f32::NEG_INFINITY;
                            }
                            *c += 1;
                        }
                        sel.offer_row(row, start as u32);
                        // The next view sees the true scores again.
                        for &(j, x) in &saved {
                            row[j] = x;
                        }
                    }
                }
                start = end;
            }
            let mut per_view: Vec<Vec<Scored>> =
                (0..n_views).map(|_| Vec::with_capacity(m)).collect();
            for (i, sel) in selectors.into_iter().enumerate() {
                per_view[i / m].push(sel.finish());
            }
            progress.add(m);
            per_view
        })
        .collect();
    let mut rows: Vec<Vec<Vec<(u32, f32)>>> = (0..n_views)
        .map(|_| Vec::with_capacity(users.rows()))
        .collect();
    for block in blocks {
        for (v, lists) in block.into_iter().enumerate() {
            rows[v].extend(lists);
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| TopK::from_ranked(k, rankable, r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_as_cold_is_ranked_by_its_cold_vector_against_the_others() {
        // Rows 0 and 1 reserved; items 2, 3, 4 score 0.9, 0.5, 0.1 for the one user.
        let items = Embeddings::new(2, vec![0., 0., 0., 0., 0.9, 0., 0.5, 0., 0.1, 0.]).unwrap();
        let users = Embeddings::new(2, vec![1.0, 0.0]).unwrap();
        let options = Options {
            first_item: 2,
            ..Options::default()
        };
        let with = |cold_score: f32, exclude: Option<&Lists>| {
            let mut cold = items.as_slice().to_vec();
            cold[6] = cold_score; // item 3's cold vector
            let cold = Embeddings::new(2, cold).unwrap();
            hits_as_cold(&users, &items, &cold, &[3], exclude, 1, &options).unwrap()[0]
        };
        // Top-1 of the others is item 2 (0.9): a cold score above it hits, below misses.
        assert!(with(0.95, None));
        assert!(!with(0.2, None));
        // With item 2 left out, the best other is item 4 (0.1).
        let seen = Lists::from_rows(&[vec![2]]);
        assert!(with(0.2, Some(&seen)));
    }
    use proptest::prelude::*;

    /// Reference: score everything, sort by (score desc, index asc), skip excluded.
    fn brute(
        users: &Embeddings,
        items: &Embeddings,
        k: usize,
        first: u32,
        ex: Option<&Lists>,
    ) -> Vec<Vec<u32>> {
        (0..users.rows())
            .map(|u| {
                let mut all: Vec<(f32, u32)> = (first as usize..items.rows())
                    .filter(|&i| ex.is_none_or(|e| !e.get(u).contains(&(i as u32))))
                    .map(|i| {
                        (
                            users
                                .row(u)
                                .iter()
                                .zip(items.row(i))
                                .map(|(a, b)| a * b)
                                .sum(),
                            i as u32,
                        )
                    })
                    .collect();
                all.sort_by(better);
                all.into_iter().take(k).map(|p| p.1).collect()
            })
            .collect()
    }

    #[test]
    fn ties_rank_by_item_index_and_reserved_rows_are_skipped() {
        let users = Embeddings::new(1, vec![1.0]).unwrap();
        // Items 0 and 1 reserved (and best); items 2..6 tie in pairs.
        let items = Embeddings::new(1, vec![9.0, 9.0, 1.0, 2.0, 2.0, 1.0, 3.0]).unwrap();
        let opts = Options {
            first_item: 2,
            item_block: 2,
            ..Options::default()
        };
        let top = exact(&users, &items, 4, &opts).unwrap();
        assert_eq!(top.list(0), &[6, 3, 4, 2]);
        assert_eq!(top.scores(0), &[3.0, 2.0, 2.0, 1.0]);
    }

    #[test]
    fn exclusions_can_leave_fewer_than_k() {
        let users = Embeddings::new(1, vec![1.0, 1.0]).unwrap();
        let items = Embeddings::new(1, vec![1.0, 2.0, 3.0]).unwrap();
        let opts = Options {
            exclude: Some(Lists::from_rows(&[vec![2, 0], vec![]])),
            ..Options::default()
        };
        let top = exact(&users, &items, 3, &opts).unwrap();
        assert_eq!(top.list(0), &[1]);
        assert_eq!(top.list(1), &[2, 1, 0]);
    }

    #[test]
    fn impossible_k_and_mismatched_dimensions_are_errors() {
        let users = Embeddings::new(2, vec![1.0, 0.0]).unwrap();
        let items = Embeddings::new(2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let msg = exact(&users, &items, 3, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`k`") && msg.contains("(2)"), "{msg}");
        let items3 = Embeddings::new(3, vec![1.0, 0.0, 0.0]).unwrap();
        let msg = exact(&users, &items3, 1, &Options::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("dimension 2 but item embeddings 3"), "{msg}");
        assert!(Embeddings::new(2, vec![1.0, f32::NAN]).is_err());
    }

    proptest! {
        #[test]
        fn blocked_selection_equals_brute_force(
            n_users in 1usize..12, n_items in 3usize..60, dim in 1usize..5,
            k in 1usize..10, ub in 1usize..5, ib in 1usize..17, seed in 0u64..1000,
            with_exclusions: bool,
        ) {
            // Few distinct values so ties are common.
            let val = |i: usize| (((i as u64 * 2654435761 + seed) % 7) as f32) - 3.0;
            let users = Embeddings::new(dim, (0..n_users * dim).map(val).collect()).unwrap();
            let items = Embeddings::new(dim, (0..n_items * dim).map(|i| val(i + 1000)).collect()).unwrap();
            let k = k.min(n_items - 2);
            let ex = with_exclusions.then(|| Lists::from_rows(&(0..n_users).map(|u| (0..n_items as u32).filter(|i| (i + u as u32) % 3 == 0).collect()).collect::<Vec<_>>()));
            let opts = Options { first_item: 2, exclude: ex.clone(), user_block: ub, item_block: ib, score_bias: None };
            let top = exact(&users, &items, k, &opts).unwrap();
            let expected = brute(&users, &items, k, 2, ex.as_ref());
            for (u, e) in expected.iter().enumerate() {
                prop_assert_eq!(top.list(u), e.as_slice());
            }
        }
    }

    proptest! {
        /// One pass over several views gives each view exactly what a pass of its own gives.
        #[test]
        fn views_in_one_pass_equal_separate_passes(
            n_users in 1usize..12,
            n_items in 3usize..60,
            seed: u64,
            item_block in 1usize..20,
        ) {
            let mut state = seed | 1;
            let mut next = move || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; (state % 1000) as f32 / 500.0 - 1.0 };
            let dim = 3;
            let users = Embeddings::new(dim, (0..n_users * dim).map(|_| next()).collect()).unwrap();
            let items = Embeddings::new(dim, (0..n_items * dim).map(|_| next()).collect()).unwrap();
            let seen = Lists::from_rows(&(0..n_users).map(|u| (0..n_items as u32).filter(|i| (i + u as u32) % 3 == 0).collect()).collect::<Vec<_>>());
            let options = Options { first_item: 1, item_block, user_block: 4, ..Options::default() };
            let k = (n_items / 3).max(1);
            let both = exact_views(&users, &items, k, &options, &[None, Some(&seen)]).unwrap();
            let plain = exact(&users, &items, k, &options).unwrap();
            let filtered = exact(&users, &items, k, &Options { exclude: Some(seen.clone()), ..options.clone() }).unwrap();
            prop_assert_eq!(&both[0], &plain);
            prop_assert_eq!(&both[1], &filtered);
        }
    }
}
