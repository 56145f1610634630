//! Adam, one kernel for both kinds of parameters: the dense layers' `Var`s (every element,
//! every step) and the embedding tables' gathered rows (lazily, each row with its own step
//! count; `sparse.rs`).
//!
//! candle's `AdamW` builds each update from about fourteen tensor ops per parameter, each
//! allocating its result; for the few dozen small parameters of a tower that was a measurable
//! part of a training step. Here each parameter is one pass over its values.

use candle_core::{Tensor, Var};

use crate::error::Result;

/// Adam settings shared by the dense parameters and the sparse tables.
#[derive(Debug, Clone, Copy)]
pub struct AdamSettings {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Coupled L2 penalty: `weight_decay * w` is added to the gradient, as
    /// `torch.optim.Adam(weight_decay=...)` does (table rows no batch touches do not decay).
    pub weight_decay: f64,
}

impl AdamSettings {
    /// torch's defaults (betas 0.9 and 0.999, eps 1e-8) at `lr` with `weight_decay`.
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamSettings {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
}

/// One Adam step on `w` with gradient `g` and moments `m`, `v`, at step `t` (1-based) of these
/// values: `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)` (the bias corrections folded
/// into the step size, as in the Adam paper), with `g` plus `weight_decay * w`.
pub(crate) fn step(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    t: i32,
    a: AdamSettings,
) {
    let (b1, b2) = (a.beta1 as f32, a.beta2 as f32);
    let size = (a.lr * (1.0 - a.beta2.powi(t)).sqrt() / (1.0 - a.beta1.powi(t))) as f32;
    let (eps, decay) = (a.eps as f32, a.weight_decay as f32);
    for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let g = g + decay * *w;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *w -= size * *m / (v.sqrt() + eps);
    }
}

/// Adam over a model's dense parameters (those that receive a gradient: batch norm's running
/// statistics never do and are left alone).
#[derive(Debug)]
pub struct DenseAdam {
    vars: Vec<(Var, Vec<f32>, Vec<f32>)>,
    t: i32,
}

impl DenseAdam {
    pub fn new(vars: impl IntoIterator<Item = Var>) -> Self {
        let vars = vars
            .into_iter()
            .map(|v| {
                let n = v.elem_count();
                (v, vec![0.0; n], vec![0.0; n])
            })
            .collect();
        DenseAdam { vars, t: 0 }
    }

    /// One step from the gradients of a backward pass.
    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        a: AdamSettings,
    ) -> Result<()> {
        self.t += 1;
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let mut w: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            step(&mut w, m, v, &g, self.t, a);
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The first step moves every weight by lr * sign(g) (bias corrections cancel), and the
    /// coupled decay adds `weight_decay * w` to the gradient before the moments.
    #[test]
    fn first_step_moves_by_the_learning_rate_and_decay_is_coupled() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1f32, -2.0, 0.5], &dev).unwrap()).unwrap();
        let loss = (var.as_tensor() * Tensor::new(&[3f32, -1.0, 0.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut adam = DenseAdam::new([var.clone()]);
        adam.step(&grads, AdamSettings::new(0.01, 0.0)).unwrap();
        let w = var.as_tensor().to_vec1::<f32>().unwrap();
        // g = [3, -1, 0]: the first two move by -0.01 * sign(g), the third not at all.
        for (a, b) in w.iter().zip([0.99f32, -1.99, 0.5]) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
        // With decay 0.1 the third weight (gradient 0) sees g = 0.1 * 0.5 and moves by -0.01.
        let (mut w, mut m, mut v) = (vec![0.5f32], vec![0f32], vec![0f32]);
        step(
            &mut w,
            &mut m,
            &mut v,
            &[0.0],
            1,
            AdamSettings::new(0.01, 0.1),
        );
        assert!((w[0] - 0.49).abs() < 1e-6, "{w:?}");
    }
}
