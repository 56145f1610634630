//! Offline evaluation of recall: exact full-catalogue top-K by inner product and Recall,
//! HitRate, NDCG, MRR and Precision at several K, with optional filtering of seen items and
//! baselines (most-popular, random) on the same split.
//!
//! Not built yet. It will score embeddings and know no model.
