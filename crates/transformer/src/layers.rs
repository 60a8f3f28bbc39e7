//! Parameterised layers: `Linear`, `LayerNorm`, `Embedding`.

use std::fmt;
use std::sync::{Arc, OnceLock};

use ndarray::{Array1, Array2, ArrayView2, Axis};
use tensor::gemm::Kernel;
use tensor::{Matrix, PackedB, PackedType};

/// An affine map `y = x W^T + b`, with `W` stored `(out, in)` as in `torch.nn.Linear`.
///
/// (GPT-2's `Conv1D` stores its weight `(in, out)`; its loader keeps those
/// bytes where they are and makes `weight` their transposed view, so every
/// layer here reads `(out, in)`, whatever the file's orientation.)
#[derive(Clone)]
pub struct Linear {
    /// `(out, in)`, usually the checkpoint's own bytes (see [`Matrix`])
    pub weight: Matrix,
    /// `(out)`
    pub bias: Option<Array1<f32>>,
    /// `W^T (in, out)` packed for the GEMM kernel, made by [`Linear::packed`]
    /// now or through [`Linear::packed_later`]'s slot; once filled,
    /// [`Linear::forward`] multiplies by this instead of `weight`.
    packed: Option<Arc<OnceLock<PackedB>>>,
}

/// Where a background thread puts a [`Linear`]'s packed weight: see [`Linear::packed_later`].
pub struct PackSlot {
    kernel: Kernel,
    weight: Matrix,
    cell: Arc<OnceLock<PackedB>>,
}

impl PackSlot {
    /// Packs the layer's `W^T` as float32 and hands it to the layer.
    pub fn fill(self) {
        let packed = tensor::matmul::pack_weight(self.kernel, PackedType::F32, self.weight.t());
        // the slot is filled once: only this thread holds it
        let _ = self.cell.set(packed);
    }
}

impl fmt::Debug for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linear")
            .field("weight", &self.weight)
            .field("bias", &self.bias)
            .field("packed", &self.packed.as_ref().is_some_and(|p| p.get().is_some()))
            .finish()
    }
}

impl Linear {
    /// A layer over `weight` `(out, in)` and an optional `bias` `(out)`.
    pub fn new(weight: Matrix, bias: Option<Array1<f32>>) -> Self {
        Self { weight, bias, packed: None }
    }

    /// The same layer with `W^T` packed once for the GEMM kernel, stored as
    /// `ty`, when this CPU has a kernel (see [`tensor::gemm::PackedB`] for why);
    /// unchanged otherwise. Loaders call it for weights stored as bf16 (in
    /// float32 they use [`Linear::packed_later`]), then let go of the
    /// checkpoint's pages of `weight`, which the forward pass no longer reads.
    ///
    /// # Panics
    /// If `ty` is bf16 and the CPU has no AVX-512 (loaders check first).
    pub fn packed(mut self, ty: PackedType) -> Self {
        if let Some(kernel) = Kernel::detect() {
            let w = self.weight.t();
            self.packed = Some(Arc::new(OnceLock::from(tensor::matmul::pack_weight(kernel, ty, w))));
        }
        self
    }

    /// The same layer, with a slot through which another thread can pack
    /// `W^T` as float32 later ([`PackSlot::fill`]); `None` for the slot when
    /// this CPU has no GEMM kernel. Until the slot is filled, [`Linear::forward`]
    /// multiplies through the same kernel with `W` packed on the fly
    /// ([`tensor::matmul_blocked`]), which gives the packed product bit for bit:
    /// the output does not depend on when the packing finishes.
    ///
    /// Why: packing every weight at load took DistilBERT's load from 30 to
    /// 100-230 ms and distilbart's from 100 ms to 0.3-2 s (fresh memory is
    /// slow to fault in on a VM), for a one-sentence call of 12 ms.
    pub fn packed_later(mut self) -> (Self, Option<PackSlot>) {
        let Some(kernel) = Kernel::detect() else { return (self, None) };
        let cell = Arc::new(OnceLock::new());
        self.packed = Some(Arc::clone(&cell));
        let slot = PackSlot { kernel, weight: self.weight.clone(), cell };
        (self, Some(slot))
    }

    /// Whether the weight is packed (now, not pending).
    pub fn is_packed(&self) -> bool {
        self.packed.as_ref().is_some_and(|p| p.get().is_some())
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// `y = x W^T + b`.
    ///
    /// # Shapes
    /// `(N, in) -> (N, out)`
    pub fn forward(&self, x: ArrayView2<f32>) -> Array2<f32> {
        // (N, in) x (in, out) -> (N, out); W^T is packed panels, or a strided view (not a copy)
        let mut y = match self.packed.as_deref().map(OnceLock::get) {
            Some(Some(packed)) => tensor::matmul_packed(x, packed),
            Some(None) => tensor::matmul_blocked(x, self.weight.t()),
            None => tensor::matmul(x, self.weight.t()),
        };
        if let Some(bias) = &self.bias {
            y += bias;
        }
        y
    }
}

/// Layer normalisation with learned scale and shift; see [`tensor::layer_norm`].
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// `(C)`, the scale (PyTorch's `weight`, older checkpoints' `gamma`)
    pub weight: Array1<f32>,
    /// `(C)`, the shift (PyTorch's `bias`, older checkpoints' `beta`)
    pub bias: Array1<f32>,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl LayerNorm {
    /// # Shapes
    /// `(N, C) -> (N, C)`
    pub fn forward(&self, x: ArrayView2<f32>) -> Array2<f32> {
        tensor::layer_norm(x, self.weight.view(), self.bias.view(), self.eps)
    }
}

/// A lookup table: row `i` is the vector for id `i`.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `(V, C)`
    pub weight: Matrix,
}

impl Embedding {
    /// Number of rows (ids) in the table.
    pub fn len(&self) -> usize {
        self.weight.nrows()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.weight.nrows() == 0
    }

    /// Gathers one row per id.
    ///
    /// # Shapes
    /// `(N) ids -> (N, C)`
    ///
    /// # Panics
    /// If an id is out of range; loaders check the tokenizer's vocabulary
    /// against the table so that user input cannot reach this.
    pub fn forward(&self, ids: &[u32]) -> Array2<f32> {
        let rows = self.weight.nrows();
        let idx: Vec<usize> = ids
            .iter()
            .map(|&id| {
                assert!((id as usize) < rows, "embedding: id {id} out of range for a table of {rows} rows");
                id as usize
            })
            .collect();
        self.weight.view().select(Axis(0), &idx)
    }
}
