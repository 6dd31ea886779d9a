//! A reference forward pass in the style of llama2.c: every weight dequantized to f32, no KV
//! cache, no batching, exact softmax, f64 angles. Slow and obviously correct; the engine's
//! quantized forward is checked against it on the tiny models.

use ferrite_gguf::GgufFile;
use ferrite_kernels::quant::{dequantize_row, QuantType};

/// Errors are strings here: this is test support.
pub type Result<T> = std::result::Result<T, String>;

struct Mat {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
}

impl Mat {
    fn load(f: &GgufFile, name: &str) -> Result<Mat> {
        let (info, data) = f.tensor_by_name(name).map_err(|e| e.to_string())?;
        let t = QuantType::from_name(info.ggml_type.name())
            .ok_or_else(|| format!("{name}: unsupported type {}", info.ggml_type))?;
        let cols = info.dims[0] as usize;
        let rows = info.dims[1..].iter().product::<u64>() as usize; // experts stacked
        let mut w = vec![0f32; rows * cols];
        let rb = t.row_bytes(cols).map_err(|e| e.to_string())?;
        for r in 0..rows {
            dequantize_row(
                t,
                &data[r * rb..(r + 1) * rb],
                &mut w[r * cols..(r + 1) * cols],
            )
            .map_err(|e| e.to_string())?;
        }
        // A second-level scale (`<name>.scale`, as llama.cpp stores NVFP4's) multiplies W.
        if let Some(base) = name.strip_suffix(".weight") {
            if let Ok((_, s)) = f.tensor_by_name(&format!("{base}.scale")) {
                let s = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                w.iter_mut().for_each(|v| *v *= s);
            }
        }
        Ok(Mat { rows, cols, w })
    }

    /// `W · x`.
    fn mul(&self, x: &[f32]) -> Vec<f32> {
        (0..self.rows)
            .map(|r| {
                let row = &self.w[r * self.cols..(r + 1) * self.cols];
                row.iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    /// Rows `first..first + n` of `W` times `x`: one expert of a 3-D expert tensor.
    fn mul_block(&self, first: usize, n: usize, x: &[f32]) -> Vec<f32> {
        (first..first + n)
            .map(|r| {
                self.row(r)
                    .iter()
                    .zip(x)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.w[r * self.cols..(r + 1) * self.cols]
    }
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + f64::from(eps)).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, g)| (f64::from(*v) * s) as f32 * g)
        .collect()
}

/// RoPE with angles in f64. `neox` pairs halves, otherwise adjacent elements.
fn rope(x: &mut [f32], pos: usize, base: f32, neox: bool) {
    let d = x.len();
    for i in 0..d / 2 {
        let theta = pos as f64 * f64::from(base).powf(-2.0 * i as f64 / d as f64);
        let (s, c) = theta.sin_cos();
        let (a, b) = if neox {
            (i, i + d / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (f64::from(x[a]), f64::from(x[b]));
        x[a] = (x0 * c - x1 * s) as f32;
        x[b] = (x0 * s + x1 * c) as f32;
    }
}

fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))
        as f32
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn meta_u(f: &GgufFile, k: &str) -> Result<usize> {
    f.metadata_u64(k)
        .map(|v| v as usize)
        .map_err(|e| e.to_string())
}

fn meta_f(f: &GgufFile, k: &str, default: f32) -> f32 {
    f.metadata_f64(k).map(|v| v as f32).unwrap_or(default)
}

/// The feed-forward of one layer.
enum Ffn {
    Dense {
        gate: Mat,
        up: Mat,
        down: Mat,
    },
    /// Softmax-routed experts (Qwen3-MoE): top `used`, weights renormalized.
    Experts {
        router: Mat,
        gate: Mat,
        up: Mat,
        down: Mat,
        used: usize,
    },
}

impl Ffn {
    fn apply(&self, h: &[f32], act: impl Fn(f32) -> f32) -> Vec<f32> {
        let swiglu = |g: Vec<f32>, u: Vec<f32>| -> Vec<f32> {
            g.iter().zip(&u).map(|(g, u)| act(*g) * u).collect()
        };
        match self {
            Ffn::Dense { gate, up, down } => down.mul(&swiglu(gate.mul(h), up.mul(h))),
            Ffn::Experts {
                router,
                gate,
                up,
                down,
                used,
            } => {
                let scores = router.mul(h);
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f64> = scores.iter().map(|s| f64::from(s - max).exp()).collect();
                let mut order: Vec<usize> = (0..e.len()).collect();
                order.sort_by(|a, b| e[*b].total_cmp(&e[*a]));
                let chosen = &order[..*used];
                let total: f64 = chosen.iter().map(|&x| e[x]).sum();
                let (ff, d) = (gate.rows / e.len(), down.rows / e.len());
                let mut out = vec![0f32; d];
                for &x in chosen {
                    let y = down.mul_block(
                        x * d,
                        d,
                        &swiglu(gate.mul_block(x * ff, ff, h), up.mul_block(x * ff, ff, h)),
                    );
                    for (o, v) in out.iter_mut().zip(&y) {
                        *o += (e[x] / total) as f32 * v;
                    }
                }
                out
            }
        }
    }
}

/// Logits at every position of `tokens` for the llama, gemma3, qwen3 or qwen3moe model in `f`.
pub fn logits(f: &GgufFile, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
    let arch = f
        .metadata_str("general.architecture")
        .map_err(|e| e.to_string())?
        .to_string();
    // (Gemma, per-head q/k norms and NeoX RoPE, routed experts)
    let (gemma, qk_norm, moe) = match arch.as_str() {
        "llama" => (false, false, false),
        "gemma3" => (true, true, false),
        "qwen3" => (false, true, false),
        "qwen3moe" => (false, true, true),
        other => return Err(format!("reference forward does not know {other}")),
    };
    let a = arch.as_str();
    let k = |s: &str| format!("{a}.{s}");
    let n_layers = meta_u(f, &k("block_count"))?;
    let dim = meta_u(f, &k("embedding_length"))?;
    let n_heads = meta_u(f, &k("attention.head_count"))?;
    let n_kv = meta_u(f, &k("attention.head_count_kv"))?;
    let hd = meta_u(f, &k("attention.key_length")).unwrap_or(dim / n_heads);
    let eps = meta_f(f, &k("attention.layer_norm_rms_epsilon"), 1e-5);
    let base = meta_f(f, &k("rope.freq_base"), 10000.0);
    let window = meta_u(f, "gemma3.attention.sliding_window").ok();
    let period = meta_u(f, "gemma3.attention.sliding_window_pattern").unwrap_or(6);
    let base_local = meta_f(f, "gemma3.rope.freq_base_swa", 10000.0);

    let embed = Mat::load(f, "token_embd.weight")?;
    let output = if f.tensor("output.weight").is_some() {
        Mat::load(f, "output.weight")?
    } else {
        Mat::load(f, "token_embd.weight")?
    };
    let vec = |name: String| Mat::load(f, &name).map(|m| m.w);
    let out_norm = vec("output_norm.weight".into())?;

    let t_len = tokens.len();
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| {
            let scale = if gemma { (dim as f32).sqrt() } else { 1.0 };
            embed.row(t as usize).iter().map(|v| v * scale).collect()
        })
        .collect();
    for il in 0..n_layers {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        let (wq, wk, wv, wo) = (
            Mat::load(f, &n("attn_q"))?,
            Mat::load(f, &n("attn_k"))?,
            Mat::load(f, &n("attn_v"))?,
            Mat::load(f, &n("attn_output"))?,
        );
        let ffn = if moe {
            Ffn::Experts {
                router: Mat::load(f, &n("ffn_gate_inp"))?,
                gate: Mat::load(f, &n("ffn_gate_exps"))?,
                up: Mat::load(f, &n("ffn_up_exps"))?,
                down: Mat::load(f, &n("ffn_down_exps"))?,
                used: meta_u(f, &k("expert_used_count"))?,
            }
        } else {
            Ffn::Dense {
                gate: Mat::load(f, &n("ffn_gate"))?,
                up: Mat::load(f, &n("ffn_up"))?,
                down: Mat::load(f, &n("ffn_down"))?,
            }
        };
        let attn_norm = vec(n("attn_norm"))?;
        let ffn_norm = vec(n("ffn_norm"))?;
        let sliding = gemma && window.is_some() && il % period < period - 1;
        let layer_base = if sliding { base_local } else { base };
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rmsnorm(x, &attn_norm, eps);
            let (mut q, mut kk, v) = (wq.mul(&h), wk.mul(&h), wv.mul(&h));
            for (vecs, heads, norm) in [
                (&mut q, n_heads, "attn_q_norm"),
                (&mut kk, n_kv, "attn_k_norm"),
            ] {
                for head in 0..heads {
                    let s = &mut vecs[head * hd..(head + 1) * hd];
                    if qk_norm {
                        let normed = rmsnorm(s, &vec(n(norm))?, eps);
                        s.copy_from_slice(&normed);
                    }
                    rope(s, p, layer_base, qk_norm);
                }
            }
            qs.push(q);
            ks.push(kk);
            vs.push(v);
        }
        let scale = 1.0 / (hd as f64).sqrt();
        for p in 0..t_len {
            let mut att = vec![0f32; n_heads * hd];
            for h in 0..n_heads {
                let kvh = h / (n_heads / n_kv);
                let lo = match (sliding, window) {
                    (true, Some(w)) => (p + 1).saturating_sub(w),
                    _ => 0,
                };
                let q = &qs[p][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (lo..=p)
                    .map(|j| {
                        let kj = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter()
                            .zip(kj)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (idx, j) in (lo..=p).enumerate() {
                    let vj = &vs[j][kvh * hd..(kvh + 1) * hd];
                    for i in 0..hd {
                        att[h * hd + i] += (e[idx] / z * f64::from(vj[i])) as f32;
                    }
                }
            }
            let mut o = wo.mul(&att);
            if gemma {
                o = rmsnorm(&o, &vec(n("post_attention_norm"))?, eps);
            }
            for (x, v) in xs[p].iter_mut().zip(&o) {
                *x += v;
            }
            let h = rmsnorm(&xs[p], &ffn_norm, eps);
            let mut dn = ffn.apply(&h, if gemma { gelu } else { silu });
            if gemma {
                dn = rmsnorm(&dn, &vec(n("post_ffw_norm"))?, eps);
            }
            for (x, v) in xs[p].iter_mut().zip(&dn) {
                *x += v;
            }
        }
    }
    Ok(xs
        .iter()
        .map(|x| output.mul(&rmsnorm(x, &out_norm, eps)))
        .collect())
}
