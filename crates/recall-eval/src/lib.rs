//! Offline evaluation of recall models that users can trust.
//!
//! - [`topk`]: exact top-K of every user against the whole item catalogue by inner product
//!   (cosine when both sides are L2-normalised): blocked matrix products through the `gemm`
//!   kernel plus per-row partial selection, parallel over user blocks, memory bounded by the
//!   block sizes, ties broken by item index; optional exclusion of each user's seen items.
//! - [`metrics`]: Recall, HitRate, NDCG, MRR and Precision at several K, coverage and mean
//!   popularity, per-user values and seeded bootstrap confidence intervals.
//! - [`baselines`]: most-popular and random rankings on the same split.
//! - [`freshness`]: an item-age prior fitted on training interactions, added to the scores
//!   through [`topk::ScoreBias`].
//! - [`embeddings`]: embedding matrices, from memory or from Parquet (`id` + vector columns).
//! - [`matmul`]: bounds-checked f32 matrix products over slices (the `gemm` kernel), shared
//!   with the fused training ops of `recall-models`.
//!
//! This crate knows no model: anything that produces vectors can be scored.
//!
//! ## Metric definitions
//! For a user with truth set `T` (non-empty) and ranked list `L` (at most K items, best first),
//! `hits@K = |T ∩ L[..K]|` and, with ranks counted from 1:
//! - `recall@K = hits@K / |T|`;
//! - `hit_rate@K = 1` if `hits@K > 0`, else 0;
//! - `precision@K = hits@K / K` (K, even when fewer than K candidates were left after
//!   filtering: a short list is not rewarded);
//! - `ndcg@K = Σ_{i in L[..K], i ∈ T} 1/log2(rank_i + 1) / Σ_{r=1}^{min(|T|, K)} 1/log2(r + 1)`;
//! - `mrr@K = 1 / rank` of the first hit within K, else 0.
//!
//! Each is averaged over users with non-empty truth (users without truth are not in any
//! denominator). `coverage@K` is the number of distinct items in all users' top-K over the
//! number of rankable items; `mean_popularity@K` the mean training count of recommended items.
//!
//! ```
//! use recall_eval::{Embeddings, Lists, metrics, topk};
//! // Two users and three items in 2-d; user 0 points at item 2, user 1 at item 0.
//! let users = Embeddings::new(2, vec![0.0, 1.0, 1.0, 0.0])?;
//! let items = Embeddings::new(2, vec![1.0, 0.1, 0.5, 0.5, 0.1, 1.0])?;
//! let top = topk::exact(&users, &items, 2, &topk::Options::default())?;
//! assert_eq!(top.list(0), &[2, 1]);
//! let truth = Lists::from_rows(&[vec![2], vec![1]]);
//! let m = metrics::evaluate(&top, &truth, &[1, 2], None)?;
//! assert_eq!(m.at(1).unwrap().hit_rate, 0.5); // user 1's item 1 is ranked second
//! assert_eq!(m.at(2).unwrap().hit_rate, 1.0);
//! # Ok::<(), recall_core::Error>(())
//! ```

pub mod baselines;
pub mod embeddings;
pub mod freshness;
pub mod matmul;
pub mod metrics;
pub mod progress;
pub mod split;
pub mod topk;

pub use embeddings::Embeddings;
pub use metrics::{MetricsAtK, Report};
pub use topk::{Lists, TopK};
