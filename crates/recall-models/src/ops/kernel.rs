//! What the hand-written CPU kernels share: the f32 view of a CPU tensor, the leaky
//! activation of the towers' tails (and its generic candle form), the vectorising `exp`,
//! maximum and sum of the softmax rows, and [`wide_kernel!`], which compiles a kernel's
//! inner loop a second time for AVX2. Below every op module; imports none of them.

use candle_core::{CpuStorage, Layout, Tensor};

use crate::error::Result;

/// The f32 values of a contiguous CPU tensor; `what` names the op in errors.
pub(crate) fn contiguous<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what}: only f32 is supported")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// A three-input kernel's inputs: the first's `(rows, columns)` and the f32 values of all three.
pub(crate) type Inputs3<'a> = ((usize, usize), [&'a [f32]; 3]);

/// The inputs of a three-input kernel whose first is a matrix (the prologue every such
/// `cpu_fwd` shares).
pub(crate) fn inputs3<'a>(
    what: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> candle_core::Result<Inputs3<'a>> {
    Ok((
        l1.shape().dims2()?,
        [
            contiguous(s1, l1, what)?,
            contiguous(s2, l2, what)?,
            contiguous(s3, l3, what)?,
        ],
    ))
}

/// `v` for `v > 0`, else `alpha * v`, as `max(v, 0) + alpha * min(v, 0)`: no branch, so a loop
/// of it vectorises. (The `if` form compiled to a branch that mispredicts on random signs:
/// 1.8 ms for a 2,048 x 128 layer, 7 ns a value.)
#[inline(always)]
pub(crate) fn leaky(v: f32, alpha: f32) -> f32 {
    v.max(0.0) + alpha * v.min(0.0)
}

/// The slope of [`leaky`] at `v` (1 for `v > 0`, else `alpha`), branch-free.
#[inline(always)]
pub(crate) fn leaky_slope(v: f32, alpha: f32) -> f32 {
    let positive = f32::from(u8::from(v > 0.0));
    alpha + positive * (1.0 - alpha)
}

/// `act(z + bias)` (`leaky` per column) from generic candle ops: what the fused tails run on
/// other devices and are tested against; `z` is `[N, C]`, `bias` and `alpha` `[C]`.
pub fn bias_activation_generic(z: &Tensor, bias: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let v = z.broadcast_add(bias)?;
    let zeros = v.zeros_like()?;
    Ok((v.maximum(&zeros)? + v.minimum(&zeros)?.broadcast_mul(alpha)?)?)
}

/// `e^x` in f32 without a libm call, so a loop of it vectorises (libm's `expf` was most of the
/// in-batch softmax: one call per value, the running sum spilled around each call). Range
/// reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial for `e^r`
/// (relative error below 3e-7, about 4 ulp, tested), and `2^n` built in the exponent
/// bits. `-inf` gives exactly 0 (masked columns); inputs below about -87 flush to 0.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in plain SSE2.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// The largest value, over eight independent lanes (a single running maximum does not vectorise).
#[inline(always)]
pub(crate) fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    rest.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// The sum, over eight independent lanes (vectorises; the order differs from a running sum
/// only in rounding).
#[inline(always)]
pub(crate) fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Whether this CPU runs the AVX2 and FMA copies [`wide_kernel!`] makes (std caches the
/// answer: an atomic load per call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `wide_kernel! { fn name / portable(args) -> ret { body } }` defines `portable`, the body
/// compiled for the build's target (x86-64's baseline is SSE2: four f32 lanes), and `name`,
/// which runs the same body compiled for AVX2 and FMA (eight lanes) where the CPU has them
/// and `portable` elsewhere. The release binary is built for the baseline so that it runs on
/// any x86-64 machine; gemm already dispatches on the CPU this way, and this does the same for
/// the element-wise loops (the softmax rows, the SiLUs) that were a fifth of an HSTU step.
///
/// Both copies give the same bits: only the vector width differs, since Rust fuses no multiply
/// into an add unless asked (`mul_add`), and the kernels' reductions fix their own order
/// ([`lane_sum`]'s eight lanes). Each kernel's test compares `name` with `portable` bit for bit.
/// Helpers the body calls are compiled wide only where they are inlined into it: mark them
/// `#[inline(always)]` (as [`fast_exp`], [`lane_max`] and [`lane_sum`] are). A body must not
/// call into rayon or anything else that runs it on another thread: the dispatch goes inside
/// each task.
macro_rules! wide_kernel {
    (
        $(#[$meta:meta])*
        fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[inline(always)]
        fn $portable($($arg: $ty),*) $(-> $ret)? $body

        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if $crate::ops::kernel::has_avx2_fma() {
                    // SAFETY: `wide` needs AVX2 and FMA, which the CPU was just found to have.
                    #[allow(unsafe_code)]
                    return unsafe { wide($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use wide_kernel;
