//! The hand-written CPU kernels of a training step: candle `CustomOp`s with their backward
//! passes, each tested forward and backward against the generic candle ops it replaces (what
//! other devices run). `kernel` holds what they share; nothing here imports the model or the
//! training loop.

pub mod adam;
pub mod fused;
pub(crate) mod kernel;
pub mod mlp_op;
pub mod norm_op;
pub(crate) mod par;
pub mod product_op;
pub mod score_op;
pub mod seq_op;

/// Whether the hand-written CPU kernels run for tensors on `device`, else the generic candle
/// form each is tested against: the one place that makes the choice (today: on the CPU).
pub fn fused_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::testing::{bits, values};

    /// The vendored candle's backward pass (`vendor/candle-core/PATCHED.md`) stores the first
    /// gradient reaching a tensor and adds the later ones, where upstream added every one into
    /// zeros. A tensor read once gets exactly its one gradient; one read several times (directly,
    /// through a transposed and a narrowed view, subtracted, broadcast) gets their sum.
    #[test]
    fn the_backward_pass_sums_every_gradient_a_tensor_receives() {
        let dev = Device::Cpu;
        let x0 = [[0.5f32, -1.0, 2.0], [1.5, 0.25, -3.0]];
        let x = Var::from_tensor(&Tensor::new(&x0, &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&Tensor::new(&[0.1f32, 0.2, 0.3], &dev).unwrap()).unwrap();
        let (t, b) = (x.as_tensor(), bias.as_tensor());

        // Read once: d sum(exp(x)) / dx = exp(x), bit for bit.
        let grads = t.exp().unwrap().sum_all().unwrap().backward().unwrap();
        let expected = values(&t.exp().unwrap());
        assert_eq!(bits(&values(grads.get(t).unwrap())), bits(&expected));

        // Read five times: y = sum(2x) + sum(3 x^T) + sum(x[:, :2]) - sum(x^2) + sum(x + bias).
        let y = [
            (t * 2.0).unwrap().sum_all().unwrap(),
            (t.t().unwrap() * 3.0).unwrap().sum_all().unwrap(),
            t.narrow(1, 0, 2).unwrap().sum_all().unwrap(),
            t.sqr().unwrap().sum_all().unwrap().neg().unwrap(),
            t.broadcast_add(b).unwrap().sum_all().unwrap(),
        ]
        .into_iter()
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
        let grads = y.backward().unwrap();
        let dx = grads.get(t).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in x0.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let want = 2.0 + 3.0 + if j < 2 { 1.0 } else { 0.0 } - 2.0 * v + 1.0;
                assert!(
                    (dx[i][j] - want).abs() < 1e-6,
                    "dx[{i}][{j}] {} for {want}",
                    dx[i][j]
                );
            }
        }
        // The bias is read once, broadcast over two rows.
        assert_eq!(values(grads.get(b).unwrap()), vec![2.0, 2.0, 2.0]);
    }

    /// An identity whose backward returns its gradient's first row only: the faulty backward
    /// of a custom op.
    struct FirstRowGrad;

    impl candle_core::CustomOp1 for FirstRowGrad {
        fn name(&self) -> &'static str {
            "first-row-grad"
        }

        fn cpu_fwd(
            &self,
            storage: &candle_core::CpuStorage,
            layout: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            let x = super::kernel::contiguous(storage, layout, self.name())?;
            Ok((
                candle_core::CpuStorage::F32(x.to_vec()),
                layout.shape().clone(),
            ))
        }

        fn bwd(
            &self,
            _: &Tensor,
            _: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<Option<Tensor>> {
            Ok(Some(grad.narrow(0, 0, 1)?))
        }
    }

    /// A gradient of another shape than its tensor is refused, as upstream's sum into zeros
    /// refused it, also when it is the first (and only) gradient the tensor receives.
    #[test]
    fn the_backward_pass_refuses_a_gradient_of_another_shape() {
        let x = Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap())
            .unwrap();
        let y = x.as_tensor().apply_op1(FirstRowGrad).unwrap();
        let err = y.sum_all().unwrap().backward().unwrap_err().to_string();
        assert!(
            err.contains("shape mismatch in add")
                && err.contains("[2, 2]")
                && err.contains("[1, 2]"),
            "{err}"
        );
    }
}
