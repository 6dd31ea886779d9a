//! Element-wise and row operations used by the forward passes: RMSNorm, RoPE and activations
//! (the online-softmax attention accumulator lives in [`crate::attention`], re-exported here).
//! Numerics follow ggml where it matters for matching llama.cpp's greedy outputs (RMSNorm's f64
//! sum, RoPE's iterated angle, GELU through an f16 table).

use half::f16;
use half::slice::HalfFloatSliceExt;

/// `out = x / rms(x) * w`, with the sum of squares accumulated in f64 as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    scale_of_sum(sum, x.len(), eps)
}

fn scale_of_sum(sum: f64, n: usize, eps: f32) -> f32 {
    let mean = (sum / n as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Rows whose sums of squares [`rms_norm_rows`] runs side by side.
const RMS_ROWS: usize = 8;

/// The RMSNorm scales of the [`RMS_ROWS`] consecutive `d`-element rows at the start of `x`:
/// each row's sum is ggml's sequential f64 chain (the same operations in the same order as
/// [`rms_norm`]'s), the chains interleaved so that their adds overlap instead of each waiting
/// for the previous one's latency.
fn rms_scales(x: &[f32], d: usize, eps: f32) -> [f32; RMS_ROWS] {
    let block = &x[..RMS_ROWS * d];
    #[cfg(target_arch = "x86_64")]
    if crate::isa::Isa::detected() == crate::isa::Isa::Avx512 {
        // SAFETY: `block` holds the 8 rows of d floats; the CPU has AVX-512.
        let sums = unsafe { crate::arch::x86_64::rms::sums_of_squares_8(block.as_ptr(), d) };
        return sums.map(|s| scale_of_sum(s, d, eps));
    }
    let rows: [&[f32]; RMS_ROWS] = std::array::from_fn(|j| &block[j * d..(j + 1) * d]);
    let mut sums = [0f64; RMS_ROWS];
    for i in 0..d {
        for (s, row) in sums.iter_mut().zip(&rows) {
            let v = row[i];
            *s += f64::from(v * v);
        }
    }
    sums.map(|s| scale_of_sum(s, d, eps))
}

/// The scales of the rows of `x` (`d` elements each) from row `r` on: [`RMS_ROWS`] of them
/// when that many are left (interleaved), else one; and how many.
fn next_scales(x: &[f32], d: usize, r: usize, eps: f32) -> ([f32; RMS_ROWS], usize) {
    let left = x.len() / d - r;
    if left >= RMS_ROWS {
        (rms_scales(&x[r * d..], d, eps), RMS_ROWS)
    } else {
        let one = rms_scale(&x[r * d..(r + 1) * d], eps);
        (std::array::from_fn(|j| if j == 0 { one } else { 0.0 }), 1)
    }
}

/// `out` row r = [`rms_norm`] of `x` row r, for every `w.len()`-element row; bit-identical to
/// calling it row by row, with the rows' sums of squares run side by side.
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len().max(1);
    let rows = x.len() / d;
    let mut r = 0;
    while r < rows {
        let (scales, n) = next_scales(x, d, r, eps);
        for (j, &scale) in scales[..n].iter().enumerate() {
            let at = (r + j) * d;
            for ((o, &v), &g) in out[at..at + d].iter_mut().zip(&x[at..at + d]).zip(w) {
                *o = (v * scale) * g;
            }
        }
        r += n;
    }
}

/// [`rms_norm_rows`] in place.
pub fn rms_norm_rows_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len().max(1);
    let rows = x.len() / d;
    let mut r = 0;
    while r < rows {
        let (scales, n) = next_scales(x, d, r, eps);
        for (j, &scale) in scales[..n].iter().enumerate() {
            let at = (r + j) * d;
            for (v, &g) in x[at..at + d].iter_mut().zip(w) {
                *v = (*v * scale) * g;
            }
        }
        r += n;
    }
}

/// RoPE rotation angles for one position: `cos_sin[2i], cos_sin[2i+1]` = cos, sin of
/// `pos · base^(−2i/n_dims)` for `i < n_dims/2`. The angle is advanced by repeated
/// multiplication in f32, exactly as ggml's rope cache.
pub fn rope_angles(pos: f32, base: f32, n_dims: usize, cos_sin: &mut [f32]) {
    let theta_scale = base.powf(-2.0 / n_dims as f32);
    let mut theta = pos;
    for pair in cos_sin[..n_dims].chunks_exact_mut(2) {
        pair[0] = theta.cos();
        pair[1] = theta.sin();
        theta *= theta_scale;
    }
}

/// YaRN RoPE scaling (llama.cpp's `rope_yarn`): angles interpolated by `freq_scale` for the
/// low-frequency dimensions and kept for the high-frequency ones, blended over the ramp
/// `corr_dims`, and cos/sin multiplied by `mscale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// 1 / the context extension factor.
    pub freq_scale: f32,
    /// Weight of the extrapolated angle on the ramp (1 for YaRN).
    pub ext_factor: f32,
    /// Magnitude scale of cos and sin before the interpolation correction.
    pub attn_factor: f32,
    /// First and last dimension pair index of the ramp (`ggml_rope_yarn_corr_dims`).
    pub corr_dims: [f32; 2],
}

impl Yarn {
    /// ggml's `ggml_rope_yarn_corr_dims` for `n_dims` rotated dimensions, a training context
    /// of `n_ctx_orig`, and the ramp's rotation counts `beta_fast`, `beta_slow`.
    pub fn corr_dims(
        n_dims: usize,
        n_ctx_orig: usize,
        base: f32,
        beta_fast: f32,
        beta_slow: f32,
    ) -> [f32; 2] {
        let dim = |n_rot: f32| {
            n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        [
            dim(beta_fast).floor().max(0.0),
            dim(beta_slow).ceil().min(n_dims as f32 - 1.0),
        ]
    }
}

/// [`rope_angles`] with YaRN scaling: ggml's rope cache with `rope_yarn` for every pair.
pub fn rope_angles_yarn(pos: f32, base: f32, n_dims: usize, y: &Yarn, cos_sin: &mut [f32]) {
    let theta_scale = base.powf(-2.0 / n_dims as f32);
    let mut theta_extrap = pos;
    for (i, pair) in cos_sin[..n_dims].chunks_exact_mut(2).enumerate() {
        let theta_interp = y.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = y.attn_factor;
        if y.ext_factor != 0.0 {
            // ggml's `rope_yarn_ramp` on the pair index (i0 / 2).
            let ramp = (i as f32 - y.corr_dims[0]) / (y.corr_dims[1] - y.corr_dims[0]).max(0.001);
            let mix = (1.0 - ramp.clamp(0.0, 1.0)) * y.ext_factor;
            theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
            mscale *= 1.0 + 0.1 * (1.0 / y.freq_scale).ln();
        }
        pair[0] = theta.cos() * mscale;
        pair[1] = theta.sin() * mscale;
        theta_extrap *= theta_scale;
    }
}

/// RoPE pairing convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama.cpp's `LLAMA_ROPE_TYPE_NORM` (Llama).
    Normal,
    /// Halves (x[i], x[i + n/2]): `LLAMA_ROPE_TYPE_NEOX` (Gemma, Qwen, ...).
    Neox,
}

/// Rotate the first `n_dims` elements of one head vector in place.
pub fn rope_apply(x: &mut [f32], cos_sin: &[f32], n_dims: usize, style: RopeStyle) {
    let half = n_dims / 2;
    for i in 0..half {
        let (c, s) = (cos_sin[2 * i], cos_sin[2 * i + 1]);
        let (a, b) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        (x[a], x[b]) = crate::compat::rotate(x[a], x[b], c, s);
    }
}

/// `x / (1 + e^−x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate = silu(gate) · up`, in place, with ggml's numerics (see [`crate::compat::swiglu`]).
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    crate::compat::swiglu(gate, up);
}

/// [`swiglu_inplace`] row by row (`width` elements each, as ggml applies it per row), rows
/// spread over the pool, with the kernel family's SIMD version (same results as the scalar
/// reference, bit for bit but for its emulated FMA's rare last-bit double rounding).
pub fn swiglu_rows(
    pool: &crate::ThreadPool,
    k: &crate::Kernels,
    gate: &mut [f32],
    up: &[f32],
    width: usize,
) -> crate::Result<()> {
    glu_rows("swiglu", pool, gate, up, width, |g, u| k.swiglu(g, u))
}

/// [`geglu_inplace`] row by row, rows spread over the pool, with the kernel family's SIMD
/// version (bit-identical to the scalar reference).
pub fn geglu_rows(
    pool: &crate::ThreadPool,
    k: &crate::Kernels,
    gate: &mut [f32],
    up: &[f32],
    width: usize,
) -> crate::Result<()> {
    glu_rows("geglu", pool, gate, up, width, |g, u| k.geglu(g, u))
}

/// A gated activation `f` over rows of `width`, spread over the pool; the lengths are checked
/// once here.
fn glu_rows(
    name: &str,
    pool: &crate::ThreadPool,
    gate: &mut [f32],
    up: &[f32],
    width: usize,
    f: impl Fn(&mut [f32], &[f32]) -> crate::Result<()> + Sync,
) -> crate::Result<()> {
    if gate.len() != up.len() {
        return Err(crate::Error::Shape(format!(
            "{name}: gate has {} values, up {}",
            gate.len(),
            up.len()
        )));
    }
    pool.par_chunks_mut(gate, width, |i, g| {
        // Equal lengths: checked above, and chunks of both follow the same rows.
        let _ = f(g, &up[i * width..i * width + g.len()]);
    });
    Ok(())
}

/// tanh-approximated GELU in f32.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU as ggml's CPU backend computes it (f16 table; see [`crate::compat::gelu`]).
#[inline]
pub fn gelu_ggml(x: f32) -> f32 {
    crate::compat::gelu(x)
}

/// `gate = gelu(gate) · up`, in place (GeGLU), with ggml's table.
pub fn geglu_inplace(gate: &mut [f32], up: &[f32]) {
    crate::compat::geglu(gate, up);
}

/// `y += x`.
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// `x *= s`.
pub fn scale_inplace(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// f32 → IEEE half bits (round to nearest even).
pub fn f32_to_f16_bits(x: &[f32], out: &mut [u16]) {
    // `half`'s slice conversion rounds like `f16::from_f32` (nearest even), with F16C where
    // the CPU has it.
    let n = x.len().min(out.len());
    let o: &mut [f16] = bytemuck::cast_slice_mut(&mut out[..n]);
    o.convert_from_f32_slice(&x[..n]);
}

pub use crate::attention::{merge_partials, AttentionAccumulator, AttnAccum, KvRun, SoftmaxStats};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::bits;
    use crate::{Isa, Kernels};

    #[test]
    fn rms_norm_unit_weights() {
        let x = [3.0f32, 4.0];
        let mut y = [0.0; 2];
        rms_norm(&x, &[1.0, 1.0], 0.0, &mut y);
        let rms = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / rms).abs() < 1e-6 && (y[1] - 4.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_rows_equal_the_row_by_row_norm_bit_for_bit() {
        // Rows of widely spread magnitudes and counts with and without a remainder below the
        // interleaved block: a row given another row's scale, or a remainder row lost, fails.
        // (The f64 chains are rms_norm's own; a different summation order would only rarely
        // show in the f32 scale, so this does not stand in for keeping that order.)
        let mut r = crate::test_util::uniform(11, -1.0, 2.0);
        for (rows, d) in [(1, 5), (7, 64), (8, 64), (19, 640), (3, 256)] {
            let w: Vec<f32> = (0..d).map(|_| r()).collect();
            let x: Vec<f32> = (0..rows * d)
                .map(|i| r() * 10f32.powi((i % 13) as i32 - 6))
                .collect();
            let mut want = vec![0.0; rows * d];
            for (xr, o) in x.chunks_exact(d).zip(want.chunks_exact_mut(d)) {
                rms_norm(xr, &w, 1e-6, o);
            }
            let mut got = vec![0.0; rows * d];
            rms_norm_rows(&x, &w, 1e-6, &mut got);
            assert_eq!(bits(&got), bits(&want), "{rows} × {d}");
            let mut inplace = x.clone();
            rms_norm_rows_inplace(&mut inplace, &w, 1e-6);
            assert_eq!(bits(&inplace), bits(&want), "{rows} × {d} in place");
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let mut cs = [0f32; 8];
        rope_angles(0.0, 10000.0, 8, &mut cs);
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = x;
        rope_apply(&mut x, &cs, 8, RopeStyle::Neox);
        assert_eq!(x, orig);
        rope_angles(17.0, 10000.0, 8, &mut cs);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut y = orig;
            rope_apply(&mut y, &cs, 8, style);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = y.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-3, "{style:?}");
        }
    }

    #[test]
    fn gelu_ggml_close_to_exact() {
        for i in -300..300 {
            let x = i as f32 / 20.0;
            assert!(
                (gelu_ggml(x) - gelu_tanh(x)).abs() < 1e-2 * (1.0 + x.abs()),
                "{x}"
            );
        }
    }

    #[test]
    fn geglu_rows_equal_the_scalar_reference() {
        let mut rnd = crate::test_util::uniform(0x5851_f42d_4c95_7f2du64, -14.0, 28.0);
        let width = 77; // four 16-lane chunks and a tail
        let mut gate: Vec<f32> = (0..3 * width).map(|_| rnd()).collect();
        let mut up: Vec<f32> = (0..3 * width).map(|_| rnd()).collect();
        up[..8].fill(1.5); // a positive weight keeps the sign of a −0 table entry visible
                           // Exact thresholds, f16 halfway points, infinities and a NaN.
        gate[..8].copy_from_slice(&[
            -10.0,
            10.0,
            1.000_488_3,
            -0.0,
            f32::INFINITY,
            9.999,
            -9.999,
            0.5,
        ]);
        gate[20] = f32::NEG_INFINITY;
        gate[40] = f32::NAN;
        let mut want = gate.clone();
        for (g, u) in want.chunks_mut(width).zip(up.chunks(width)) {
            crate::compat::geglu(g, u);
        }
        for isa in Isa::available() {
            let k = Kernels::new(isa).unwrap();
            for nth in [1, 2] {
                let mut got = gate.clone();
                geglu_rows(&crate::ThreadPool::new(nth), &k, &mut got, &up, width).unwrap();
                assert_eq!(bits(&got), bits(&want), "{isa} {nth} threads");
            }
            // Unequal lengths are refused.
            let mut short = gate.clone();
            let err = geglu_rows(&crate::ThreadPool::new(1), &k, &mut short, &up[1..], width);
            assert!(err.is_err(), "{isa}");
        }
    }
}
