//! The CPU backend: `gemm` (AVX-512 kernels chosen at run time) for matrix products, rayon for
//! everything else. Generic over the scalar so the gradient checks can run it in f64.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod layernorm;
pub mod linear_attention;
pub mod loss;
pub mod matmul;
pub mod ops;
pub mod rmsnorm;
pub mod rope;

use crate::backend::{Act, Backend, Soft};
use crate::real::Real;
use attention::AttnDims;
use gemm::Parallelism;
use ops::AdamW;
use std::marker::PhantomData;
use std::sync::Arc;

/// CPU backend over scalar `F` with its own thread pool.
pub struct Cpu<F: Real> {
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    _f: PhantomData<F>,
}

impl<F: Real> Clone for Cpu<F> {
    fn clone(&self) -> Self {
        Cpu {
            pool: self.pool.clone(),
            threads: self.threads,
            _f: PhantomData,
        }
    }
}

impl<F: Real> Cpu<F> {
    /// `threads` = 0 uses every core.
    pub fn new(threads: usize) -> Cpu<F> {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon thread pool");
        Cpu {
            pool: Arc::new(pool),
            threads,
            _f: PhantomData,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn par(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }
}

impl<F: Real> Backend for Cpu<F> {
    type Buf = Vec<F>;

    fn name(&self) -> String {
        format!(
            "cpu ({} thread{}, {})",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            std::any::type_name::<F>()
        )
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn zeros(&self, n: usize) -> Vec<F> {
        vec![F::ZERO; n]
    }
    fn upload(&self, host: &[f64]) -> Vec<F> {
        host.iter().map(|&x| F::from_f64(x)).collect()
    }
    fn upload_f32(&self, host: Vec<f32>) -> Vec<F> {
        F::vec_from_f32(host)
    }
    fn write_at(&self, buf: &mut Vec<F>, offset: usize, values: &[f64]) {
        for (d, &x) in buf[offset..offset + values.len()].iter_mut().zip(values) {
            *d = F::from_f64(x);
        }
    }
    fn download(&self, buf: &Vec<F>) -> Vec<f64> {
        buf.iter().map(|x| x.to_f64()).collect()
    }
    fn len(&self, buf: &Vec<F>) -> usize {
        buf.len()
    }
    fn value_bytes(&self) -> usize {
        std::mem::size_of::<F>()
    }
    fn with_host<R>(
        &self,
        buf: &Vec<F>,
        n: usize,
        f: impl FnOnce(crate::real::Host<'_>) -> R,
    ) -> R {
        f(F::host(&buf[..n]))
    }
    fn set_zero(&self, buf: &mut Vec<F>) {
        buf.fill(F::ZERO);
    }
    fn copy(&self, dst: &mut Vec<F>, src: &Vec<F>, n: usize) {
        dst[..n].copy_from_slice(&src[..n]);
    }
    fn copy_from(&self, dst: &mut Vec<F>, src: &Vec<F>, offset: usize, n: usize) {
        dst[..n].copy_from_slice(&src[offset..offset + n]);
    }

    fn embedding_forward(
        &self,
        out: &mut Vec<F>,
        tokens: &[u32],
        wte: &Vec<F>,
        wpe: Option<&Vec<F>>,
        btc: (usize, usize, usize),
    ) {
        embedding::embedding_forward(out, tokens, wte, wpe.map(Vec::as_slice), btc);
    }
    fn embedding_backward(
        &self,
        dwte: &mut Vec<F>,
        dwpe: Option<&mut Vec<F>>,
        dout: &Vec<F>,
        tokens: &[u32],
        btc: (usize, usize, usize),
    ) {
        embedding::embedding_backward(dwte, dwpe.map(Vec::as_mut_slice), dout, tokens, btc);
    }
    fn rmsnorm_forward(
        &self,
        out: &mut Vec<F>,
        rstd: &mut Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        nc: (usize, usize),
        eps: f64,
    ) {
        rmsnorm::rmsnorm_forward(out, rstd, inp, w, nc, eps);
    }
    fn rmsnorm_backward(
        &self,
        dinp: &mut Vec<F>,
        dw: &mut Vec<F>,
        dout: &Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        rstd: &Vec<F>,
        nc: (usize, usize),
    ) {
        rmsnorm::rmsnorm_backward(dinp, dw, dout, inp, w, rstd, nc);
    }
    fn qk_norm_forward(
        &self,
        qkv: &mut Vec<F>,
        pre: &mut Vec<F>,
        rstd: &mut Vec<F>,
        wq: &Vec<F>,
        wk: &Vec<F>,
        d: rmsnorm::HeadsDims,
    ) {
        rmsnorm::heads_forward(qkv, pre, rstd, wq, wk, d);
    }
    fn qk_norm_backward(
        &self,
        dqkv: &mut Vec<F>,
        dwq: &mut Vec<F>,
        dwk: &mut Vec<F>,
        pre: &Vec<F>,
        rstd: &Vec<F>,
        wq: &Vec<F>,
        wk: &Vec<F>,
        d: rmsnorm::HeadsDims,
    ) {
        rmsnorm::heads_backward(dqkv, dwq, dwk, pre, rstd, wq, wk, d);
    }
    fn rope(&self, qkv: &mut Vec<F>, d: rope::RopeDims, inverse: bool) {
        rope::rope(qkv, d, inverse);
    }
    fn layernorm_forward(
        &self,
        out: &mut Vec<F>,
        mean: &mut Vec<F>,
        rstd: &mut Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        b: &Vec<F>,
        nc: (usize, usize),
        eps: f64,
    ) {
        layernorm::layernorm_forward(out, mean, rstd, inp, w, b, nc, eps);
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Vec<F>,
        dw: &mut Vec<F>,
        db: &mut Vec<F>,
        dout: &Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        mean: &Vec<F>,
        rstd: &Vec<F>,
        nc: (usize, usize),
    ) {
        layernorm::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, nc);
    }
    fn matmul_forward(
        &self,
        out: &mut Vec<F>,
        accumulate: bool,
        inp: &Vec<F>,
        w: &Vec<F>,
        bias: Option<&Vec<F>>,
        d: (usize, usize, usize),
    ) {
        matmul::matmul_forward(
            out,
            accumulate,
            inp,
            w,
            bias.map(|b| b.as_slice()),
            d,
            self.par(),
        );
    }
    fn matmul_backward(
        &self,
        dinp: Option<&mut Vec<F>>,
        acc_inp: bool,
        dw: &mut Vec<F>,
        dbias: Option<&mut Vec<F>>,
        dout: &Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        d: (usize, usize, usize),
    ) {
        matmul::matmul_backward(
            dinp.map(|x| x.as_mut_slice()),
            acc_inp,
            dw,
            dbias.map(|x| x.as_mut_slice()),
            dout,
            inp,
            w,
            d,
            self.par(),
        );
    }
    fn attention_forward(&self, out: &mut Vec<F>, probs: &mut Vec<F>, qkv: &Vec<F>, d: AttnDims) {
        attention::attention_forward(out, probs, qkv, d);
    }
    fn attention_infer(&self, out: &mut Vec<F>, qkv: &Vec<F>, d: AttnDims) {
        attention::attention_infer(out, qkv, d);
    }
    fn attention_backward(
        &self,
        dqkv: &mut Vec<F>,
        dout: &Vec<F>,
        qkv: &Vec<F>,
        probs: &Vec<F>,
        d: AttnDims,
    ) {
        attention::attention_backward(dqkv, dout, qkv, probs, d);
    }
    fn linear_attention_forward(
        &self,
        out: &mut Vec<F>,
        den: &mut Vec<F>,
        qkv: &Vec<F>,
        d: (usize, usize, usize, usize),
    ) {
        linear_attention::linear_attention_forward(out, den, qkv, d);
    }
    fn linear_attention_backward(
        &self,
        dqkv: &mut Vec<F>,
        dout: &Vec<F>,
        qkv: &Vec<F>,
        out: &Vec<F>,
        den: &Vec<F>,
        d: (usize, usize, usize, usize),
    ) {
        linear_attention::linear_attention_backward(dqkv, dout, qkv, out, den, d);
    }
    fn act_forward(&self, act: Act, out: &mut Vec<F>, inp: &Vec<F>, n: usize) {
        match act {
            Act::Gelu => activation::gelu_forward(&mut out[..n], &inp[..n]),
            Act::GeluTanh => activation::gelu_tanh_forward(&mut out[..n], &inp[..n]),
            Act::Relu => activation::relu_forward(&mut out[..n], &inp[..n]),
        }
    }
    fn bias_act_forward(
        &self,
        act: Act,
        out: &mut Vec<F>,
        pre: &Vec<F>,
        bias: &Vec<F>,
        rows_width: (usize, usize),
    ) {
        activation::bias_act_forward(act, out, pre, bias, rows_width);
    }
    fn bias_act_backward(
        &self,
        act: Act,
        d: &mut Vec<F>,
        dbias: &mut Vec<F>,
        pre: &Vec<F>,
        out: &Vec<F>,
        bias: &Vec<F>,
        rows_width: (usize, usize),
    ) {
        activation::bias_act_backward(act, d, dbias, pre, out, bias, rows_width);
    }
    fn act_backward(&self, act: Act, d: &mut Vec<F>, inp: &Vec<F>, out: &Vec<F>, n: usize) {
        match act {
            Act::Gelu => activation::gelu_backward(&mut d[..n], &inp[..n], &out[..n]),
            Act::GeluTanh => activation::gelu_tanh_backward(&mut d[..n], &inp[..n]),
            Act::Relu => activation::relu_backward(&mut d[..n], &inp[..n]),
        }
    }
    fn swiglu_forward(&self, out: &mut Vec<F>, gate: &Vec<F>, up: &Vec<F>, n: usize) {
        activation::swiglu_forward(&mut out[..n], &gate[..n], &up[..n]);
    }
    fn swiglu_backward(
        &self,
        dgate: &mut Vec<F>,
        dup: &mut Vec<F>,
        gate: &Vec<F>,
        up: &Vec<F>,
        dout: &Vec<F>,
        n: usize,
    ) {
        activation::swiglu_backward(
            &mut dgate[..n],
            &mut dup[..n],
            &gate[..n],
            &up[..n],
            &dout[..n],
        );
    }
    fn loss(
        &self,
        dlogits: Option<&mut Vec<F>>,
        logits: &Vec<F>,
        targets: &[u32],
        teacher: Option<(&Soft<'_, Vec<F>>, f64, f64)>,
        nv: (usize, usize),
    ) -> (f64, f64) {
        let distill = teacher.map(|(soft, temperature, alpha)| loss::Distill {
            soft: match soft {
                Soft::Dense(p) => loss::SoftRef::Dense(p.as_slice()),
                Soft::TopK { k, index, prob } => loss::SoftRef::TopK { k: *k, index, prob },
            },
            temperature,
            alpha,
        });
        loss::loss_forward_backward(
            dlogits.map(|d| d.as_mut_slice()),
            logits,
            targets,
            distill.as_ref(),
            nv,
        )
    }
    fn mul_assign(&self, x: &mut Vec<F>, mask: &Vec<F>) {
        ops::mul_assign(x, mask);
    }
    fn axpy(&self, y: &mut Vec<F>, a: f64, x: &Vec<F>) {
        ops::axpy(y, F::from_f64(a), x);
    }
    /// With T > 1 threads, T single-threaded CPU backends: each trains on its share of the batch
    /// with no synchronisation between kernels.
    fn workers(&self) -> Vec<Self> {
        if self.threads > 1 {
            (0..self.threads).map(|_| Cpu::new(1)).collect()
        } else {
            Vec::new()
        }
    }
    fn sum_squares(&self, parts: &[&Vec<F>], weights: &[f64]) -> f64 {
        let parts: Vec<&[F]> = parts.iter().map(|p| &p[..]).collect();
        ops::sum_squares_of_sum(&parts, weights)
    }
    fn adamw(
        &self,
        param: &mut Vec<F>,
        grads: &[&Vec<F>],
        weights: &[f64],
        m: &mut Vec<F>,
        v: &mut Vec<F>,
        o: AdamW,
        decay: bool,
    ) {
        let grads: Vec<&[F]> = grads.iter().map(|g| &g[..]).collect();
        ops::adamw_update(param, &grads, weights, m, v, o, decay);
    }
}
