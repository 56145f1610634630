//! The per-row losses of the two-tower kinds on their logits (sampled softmax, pointwise
//! BCE, BPR) and the proposal probability behind a sampled softmax's logQ correction (sampler
//! and hard negatives; `batch::sampled_log_q` applies it to a batch). The shared-candidate softmax (in-batch, mixed, full, SASRec) is the
//! fused op `fused::softmax_loss`.

use candle_core::{D, Tensor};

use crate::error::Result;

/// Stable binary cross-entropy on logits: `relu(x) - x*y + ln(1 + exp(-|x|))`, mean.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let loss = (logits.relu()? - logits.mul(labels)?)?
        .add(&logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    Ok(loss.mean_all()?)
}

/// Softmax cross-entropy with the label in column 0: `-mean(log_softmax(logits)[:, 0])`.
pub fn softmax_first(logits: &Tensor) -> Result<Tensor> {
    let ls = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(ls.narrow(1, 0, 1)?.mean_all()?.neg()?)
}

/// BPR: `mean(softplus(-(s_pos - s_neg)))` with the positive in column 0.
pub fn bpr(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(1)?;
    let diff = logits
        .narrow(1, 0, 1)?
        .broadcast_sub(&logits.narrow(1, 1, n - 1)?)?;
    // softplus(-d) = relu(-d) + ln(1 + exp(-|d|)), stable for large |d|.
    let neg = diff.neg()?;
    let sp = (neg.relu()? + diff.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    Ok(sp.mean_all()?)
}

/// The per-draw probability of `item` for a row whose `n` negatives are `h` uniform draws from
/// `pool` (sorted) and `n - h` draws from a sampler giving it `sampler_q`, scaled by
/// `1 / (n - h)` (see [`sampled_log_q`]).
pub(crate) fn proposal_q(sampler_q: f64, pool: &[u32], h: usize, n: usize, item: u32) -> f64 {
    if h == 0 || pool.binary_search(&item).is_err() {
        return sampler_q;
    }
    // Validation keeps at least one sampler draw per row when logQ is on.
    let from_sampler = n.saturating_sub(h).max(1) as f64;
    sampler_q + h as f64 / pool.len() as f64 / from_sampler
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    /// BCE on logits [2, -1, 40] with labels [1, 0, 0]: ln(1+e^-2) = 0.126928,
    /// ln(1+e^-1) = 0.313262, 40 + ln(1+e^-40) = 40.0 (the naive form overflows); mean 13.480063.
    #[test]
    fn bce_matches_hand_values_and_survives_large_logits() {
        let loss =
            bce_with_logits(&t(&[2.0, -1.0, 40.0], (1, 3)), &t(&[1.0, 0.0, 0.0], (1, 3))).unwrap();
        assert!(close(
            loss.to_scalar::<f32>().unwrap(),
            (0.126928 + 0.313262 + 40.0) / 3.0
        ));
    }

    /// Softmax CE with the label first: logits [1, 2, 3]: -ln(e^1 / (e^1+e^2+e^3)) = 2.407606;
    /// its gradient is softmax - onehot = [0.090031 - 1, 0.244728, 0.665241].
    #[test]
    fn softmax_loss_and_gradient_match_hand_values() {
        let x = Var::from_tensor(&t(&[1.0, 2.0, 3.0], (1, 3))).unwrap();
        let loss = softmax_first(x.as_tensor()).unwrap();
        assert!(close(loss.to_scalar::<f32>().unwrap(), 2.407606));
        let g = loss.backward().unwrap();
        let grad = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in grad[0].iter().zip([0.090031 - 1.0, 0.244728, 0.665241]) {
            assert!(close(*a, b), "{a} vs {b}");
        }
    }

    /// BPR with s_pos = 3 and negatives [1, 3]: softplus(-2) = 0.126928, softplus(0) = ln 2.
    #[test]
    fn bpr_matches_hand_values() {
        let loss = bpr(&t(&[3.0, 1.0, 3.0], (1, 3))).unwrap();
        assert!(close(
            loss.to_scalar::<f32>().unwrap(),
            (0.126928 + std::f32::consts::LN_2) / 2.0
        ));
    }

    /// Hard negatives are corrected by their own proposal (a uniform draw from the pool), not
    /// by the sampler's probability alone: 2 of 4 negatives from a pool of 4 items give a pool
    /// item `2/4` expected draws on top of the sampler's 2 q, so per sampler draw q + 0.25.
    #[test]
    fn hard_negatives_are_corrected_by_their_own_proposal() {
        let pool = [5, 7, 9, 11];
        assert!((proposal_q(0.01, &pool, 2, 4, 7) - 0.26).abs() < 1e-12);
        assert_eq!(proposal_q(0.01, &pool, 2, 4, 6), 0.01);
        // Rows without hard draws keep the sampler's q exactly.
        assert_eq!(proposal_q(0.01, &pool, 0, 4, 7), 0.01);
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let n = crate::model::l2_normalize(&t(&[3.0, 4.0, 0.0, 2.0], (2, 2))).unwrap();
        assert_eq!(
            n.to_vec2::<f32>().unwrap(),
            vec![vec![0.6, 0.8], vec![0.0, 1.0]]
        );
    }
}
