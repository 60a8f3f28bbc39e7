//! Memory-mapped safetensors checkpoints and a path-scoped, shape-checking loader.
//!
//! ```text
//! let ckpt = Checkpoint::open("model.safetensors")?;
//! let layer = ckpt.root().pp("encoder").pp("layer").pp(0);    // like `cd` into a folder
//! let w = layer.pp("attention.self.query").get2("weight", (768, 768))?;
//! ```
//! A missing tensor or a wrong shape is an error naming the full dotted name,
//! the expected and the actual shape.
//!
//! Weight matrices (`Linear`, `Embedding`, `lm_head`) are not copied: an f32
//! tensor is a [`Matrix`] over the mapped file's own bytes, so loading costs
//! the header parse and the weights' memory is the page cache's, counted once.
//! Only F16/BF16 tensors (and the small 1-D ones) are converted into owned f32.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::{SafeTensorError, SafeTensors};
use std::ops::Range;
use std::sync::Mutex;

use tensor::{Matrix, PackedType};
use transformer::{Embedding, LayerNorm, Linear, PackSlot};

/// What [`Weights::packed`] does with a float32 weight (bf16 ones are always packed at load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFloat32 {
    /// Packed by [`Checkpoint::pack_in_background`] after loading.
    Later,
    /// Left as mapped: read in place by the few-row kernels.
    Never,
}

/// A model's weights being packed in the background ([`Checkpoint::pack_in_background`]).
#[derive(Clone, Default)]
pub struct Packing(Arc<Mutex<Option<std::thread::JoinHandle<()>>>>);

impl Packing {
    /// Blocks until every weight is packed; at once if none were left to pack.
    /// Results are the same before and after (see `Linear::packed_later`):
    /// only benchmarks of the steady state need to wait.
    pub fn wait(&self) {
        let thread = self.0.lock().expect("not poisoned").take();
        if let Some(thread) = thread {
            // a panic in the packer leaves the layers on their per-call path
            let _ = thread.join();
        }
    }
}

/// Gives `pages` of `mmap` back to the kernel (`MADV_DONTNEED`); see `Checkpoint::release`.
fn give_back(mmap: &Mmap, pages: Range<usize>) {
    if pages.is_empty() {
        return;
    }
    #[cfg(unix)]
    // SAFETY: the map is read-only (memmap2 maps it shared, PROT_READ) and never
    // written, so after MADV_DONTNEED a read faults the file's unchanged bytes
    // back in from the page cache: every view of it stays valid.
    let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, pages.start, pages.len()) };
}

/// Checks that this CPU can run products with weights packed as `ty`.
///
/// # Errors
/// For bf16 without AVX-512F.
pub fn require_packed_type(ty: PackedType) -> Result<()> {
    if ty == PackedType::Bf16 && tensor::gemm::Kernel::detect() != Some(tensor::gemm::Kernel::Avx512) {
        bail!("--dtype bf16 needs a CPU with AVX-512F, which this one lacks; use --dtype f32");
    }
    Ok(())
}

/// The page size of x86-64 and most other Linux targets; [`Checkpoint::prefault`]
/// touches one byte per page, `Checkpoint::release` gives back whole pages.
/// (On a kernel with larger pages, `madvise` rounds out to its own pages, so a
/// neighbouring tensor's bytes may be released too: harmless, they fault back in.)
const PAGE: usize = 4096;

/// An open `model.safetensors`: the file is memory-mapped and only its header
/// is parsed up front; a weight matrix borrows its bytes from the map (which
/// lives as long as any matrix does), other tensors are read when fetched.
pub struct Checkpoint {
    path: PathBuf,
    mmap: Arc<Mmap>,
    /// Offset of the data section: 8 bytes of header length, then the JSON header.
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
    /// Byte ranges of the map handed back to the kernel by `Checkpoint::release`.
    released: Mutex<Vec<Range<usize>>>,
    /// Float32 weights to pack after loading, with their tensor names ([`Checkpoint::pack_in_background`]).
    pending: Mutex<Vec<(PackSlot, String)>>,
    /// How packed weights are stored ([`Checkpoint::packing_as`]).
    packed_type: PackedType,
}

impl Checkpoint {
    /// Opens and validates a safetensors file.
    ///
    /// # Errors
    /// If the file cannot be read, its header is not valid safetensors, or it
    /// is shorter than its header says (a truncated download).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the map is read-only; a checkpoint rewritten while we run is
        // outside what an inference process can guard against.
        let mmap = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot memory-map {}", path.display()))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| match e {
            SafeTensorError::MetadataIncompleteBuffer => {
                anyhow::anyhow!("{} is truncated: it is shorter than its header says; re-download it", path.display())
            }
            e => anyhow::anyhow!(
                "{} is not a valid safetensors file ({e:?}); re-download or re-save the checkpoint",
                path.display()
            ),
        })?;
        let data_start = 8 + header_len;
        let tensors: HashMap<String, TensorInfo> =
            metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
        let data_end = tensors.values().map(|t| t.data_offsets.1).max().unwrap_or(0);
        if data_start + data_end > mmap.len() {
            bail!(
                "{} is truncated: its header describes {} bytes of tensor data but the file holds {}; re-download it",
                path.display(),
                data_end,
                mmap.len().saturating_sub(data_start)
            );
        }
        Ok(Self {
            path,
            mmap: Arc::new(mmap),
            data_start,
            tensors,
            released: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            packed_type: PackedType::F32,
        })
    }

    /// Maps every page of the file in now, rather than during the first
    /// forward pass (which reads nearly every weight): loading runs this
    /// while the tokenizer is parsed on another thread, so the first token
    /// does not wait for page faults.
    ///
    /// One read per 4 KiB page; the kernel maps the neighbouring pages of a
    /// file on each fault too ("fault-around"), so this takes a few thousand
    /// faults for GPT-2. (`MADV_POPULATE_READ` maps them one by one: measured
    /// slower, 150 ms against about 50 for GPT-2's 475 MB.)
    ///
    /// Pages given back by `Checkpoint::release` are skipped (those the
    /// background packer gives back later are not known yet: it starts after this).
    pub fn prefault(&self) {
        let bytes: &[u8] = &self.mmap;
        let mut released = self.released.lock().expect("no panic while holding the lock").clone();
        released.sort_by_key(|r| r.start);
        // the released ranges in order, walked once beside the pages
        let mut next = released.iter().peekable();
        let mut sum = 0u8;
        for i in (0..bytes.len()).step_by(PAGE) {
            while next.peek().is_some_and(|r| r.end <= i) {
                next.next();
            }
            if !next.peek().is_some_and(|r| r.contains(&i)) {
                sum = sum.wrapping_add(bytes[i]);
            }
        }
        std::hint::black_box(sum);
    }

    /// Gives this process's pages of tensor `name` back to the kernel
    /// (`MADV_DONTNEED`), for a weight the model has packed into its own copy:
    /// without this, the packed copy and the mapped original would both count
    /// in the resident memory. The pages stay in the page cache, and reading
    /// the tensor again (the walk-through reads the original weights) faults
    /// them back in from there. Only whole pages inside the tensor are released.
    fn release(&self, name: &str) {
        let pages = self.whole_pages(name);
        give_back(&self.mmap, pages.clone());
        self.released.lock().expect("no panic while holding the lock").push(pages);
    }

    /// The whole pages inside tensor `name`'s bytes (empty if it has none, or no such tensor).
    fn whole_pages(&self, name: &str) -> Range<usize> {
        let Some(info) = self.tensors.get(name) else { return 0..0 };
        let first = (self.data_start + info.data_offsets.0).div_ceil(PAGE) * PAGE;
        let last = (self.data_start + info.data_offsets.1) / PAGE * PAGE;
        first..last.max(first)
    }

    /// Packs, on a thread of its own, every float32 weight [`Weights::linear`]
    /// left for later ([`Linear::packed_later`]), one after the other, and gives
    /// each one's mapped pages back once it is packed. Until a layer's turn
    /// comes, it multiplies with the same results at per-call packing's speed.
    /// The thread ends when all are packed, or with the process; the returned
    /// handle waits for it.
    pub fn pack_in_background(&self) -> Packing {
        let jobs: Vec<(PackSlot, Range<usize>)> = std::mem::take(&mut *self.pending.lock().expect("not poisoned"))
            .into_iter()
            .map(|(slot, name)| (slot, self.whole_pages(&name)))
            .collect();
        if jobs.is_empty() {
            return Packing::default();
        }
        let mmap = Arc::clone(&self.mmap);
        let thread = std::thread::spawn(move || {
            // a pool of one thread of its own, so that packing does not queue
            // work in front of the forward passes on the shared pool
            let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(1).build() else { return };
            pool.install(|| {
                for (slot, pages) in jobs {
                    slot.fill();
                    give_back(&mmap, pages);
                }
            });
        });
        Packing(Arc::new(Mutex::new(Some(thread))))
    }

    /// The checkpoint with its weight matrices to be packed as `ty`
    /// ([`Weights::linear`]): float32 by default, or bfloat16 for half the
    /// bytes per weight (`--dtype bf16`; needs AVX-512, see [`require_packed_type`]).
    pub fn packing_as(mut self, ty: PackedType) -> Self {
        self.packed_type = ty;
        self
    }

    /// The file this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor of this full name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The scope at the root of the name space.
    pub fn root(&self) -> Weights<'_> {
        Weights { ckpt: self, prefix: String::new() }
    }

    /// The tensor's header entry, after checking its shape.
    fn info(&self, name: &str, expected: &[usize]) -> Result<&TensorInfo> {
        let Some(info) = self.tensors.get(name) else {
            bail!("tensor `{name}` not found in {} (is this the right architecture?)", self.path.display());
        };
        if info.shape != expected {
            bail!("tensor `{name}` has shape {:?}, expected {:?} from config.json", info.shape, expected);
        }
        Ok(info)
    }

    /// A 2-D weight: the mapped bytes themselves when the tensor is F32 (and,
    /// as safetensors writes it, 4-byte aligned), else converted to owned f32.
    fn matrix(&self, name: &str, (rows, cols): (usize, usize)) -> Result<Matrix> {
        let info = self.info(name, &[rows, cols])?;
        if info.dtype == Dtype::F32 {
            let bytes: tensor::matrix::SharedBytes = self.mmap.clone();
            if let Some(m) = Matrix::mapped(bytes, self.data_start + info.data_offsets.0, rows, cols) {
                return Ok(m);
            }
        }
        let t = self.tensor(name, &[rows, cols])?;
        Ok(Matrix::from(t.into_dimensionality::<ndarray::Ix2>().expect("rank checked")))
    }

    /// Reads a tensor into owned f32 after checking its shape.
    fn tensor(&self, name: &str, expected: &[usize]) -> Result<ArrayD<f32>> {
        let info = self.info(name, expected)?;
        let bytes = &self.mmap[self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1];
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
            other => {
                bail!("tensor `{name}` is {other:?}; only F32, F16 and BF16 weights are supported")
            }
        };
        let numel: usize = expected.iter().product();
        if values.len() != numel {
            bail!("tensor `{name}` holds {} values, its shape {:?} needs {numel}", values.len(), expected);
        }
        Ok(ArrayD::from_shape_vec(IxDyn(expected), values).expect("length checked above"))
    }
}

/// bfloat16 is the top half of an f32.
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// IEEE half precision (1 sign, 5 exponent, 10 mantissa bits) to f32.
fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let mant = (bits & 0x3ff) as u32;
    let magnitude = match (exp, mant) {
        (0, 0) => 0,
        // subnormal: mant * 2^-24
        (0, _) => (mant as f32 * 2f32.powi(-24)).to_bits(),
        // infinity or NaN
        (0x1f, _) => 0x7f80_0000 | (mant << 13),
        // normal: rebias the exponent from 15 to 127
        _ => ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// A scope inside a checkpoint's dotted name space, like a current directory.
#[derive(Clone)]
pub struct Weights<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
}

impl<'a> Weights<'a> {
    /// Descends into a sub-scope: `w.pp("encoder").pp(3)` is `encoder.3.`.
    pub fn pp(&self, name: impl Display) -> Weights<'a> {
        Weights { ckpt: self.ckpt, prefix: format!("{}{}.", self.prefix, name) }
    }

    /// The full dotted name of `name` in this scope.
    pub fn full_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Whether `name` exists in this scope.
    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.contains(&self.full_name(name))
    }

    /// A 1-D tensor of `n` elements.
    pub fn get1(&self, name: &str, n: usize) -> Result<Array1<f32>> {
        let t = self.ckpt.tensor(&self.full_name(name), &[n])?;
        Ok(t.into_dimensionality().expect("rank checked"))
    }

    /// A 2-D weight matrix of shape `(rows, cols)`, borrowed from the file where it can be.
    pub fn matrix(&self, name: &str, shape: (usize, usize)) -> Result<Matrix> {
        self.ckpt.matrix(&self.full_name(name), shape)
    }

    /// A 2-D tensor of shape `(rows, cols)`, as an owned array.
    pub fn get2(&self, name: &str, (rows, cols): (usize, usize)) -> Result<Array2<f32>> {
        let t = self.ckpt.tensor(&self.full_name(name), &[rows, cols])?;
        Ok(t.into_dimensionality().expect("rank checked"))
    }

    /// `torch.nn.Linear(in, out)` in this scope: `weight` `(out, in)`, `bias` `(out)`,
    /// packed as [`Weights::packed`] says ([`InFloat32::Later`]).
    pub fn linear(&self, in_features: usize, out_features: usize) -> Result<Linear> {
        let linear =
            Linear::new(self.matrix("weight", (out_features, in_features))?, Some(self.get1("bias", out_features)?));
        Ok(self.packed(linear, "weight", InFloat32::Later))
    }

    /// `linear`, whose weight is tensor `name` in this scope, packed as this
    /// checkpoint asks ([`Checkpoint::packing_as`]): in bf16 now
    /// ([`Linear::packed`]), the map's pages of `name` then given back (see
    /// `Checkpoint::release`); in float32 as `in_f32` says.
    pub fn packed(&self, linear: Linear, name: &str, in_f32: InFloat32) -> Linear {
        match (self.ckpt.packed_type, in_f32) {
            (PackedType::F32, InFloat32::Never) => linear,
            (PackedType::F32, InFloat32::Later) => {
                let (linear, slot) = linear.packed_later();
                if let Some(slot) = slot {
                    self.ckpt.pending.lock().expect("not poisoned").push((slot, self.full_name(name)));
                }
                linear
            }
            (ty, _) => {
                let linear = linear.packed(ty);
                if linear.is_packed() {
                    self.ckpt.release(&self.full_name(name));
                }
                linear
            }
        }
    }

    /// A language-model head over `weight` `(V, C)` (its own `lm_head.weight`, or
    /// the tied token embedding), tensor `name` in this scope, without bias.
    /// Packed only with bf16 weights ([`InFloat32::Never`]): in float32 the
    /// few-row kernel reads the mapped matrix in place as fast as packed
    /// panels, and packing GPT-2's 154 MB head would add to loading; in bf16 it
    /// halves the largest single read of each decoding step.
    pub fn lm_head(&self, weight: Matrix, name: &str) -> Linear {
        self.packed(Linear::new(weight, None), name, InFloat32::Never)
    }

    /// `torch.nn.LayerNorm(c, eps)` in this scope: `weight` and `bias`, both `(c)`.
    ///
    /// Checkpoint quirk: BERT checkpoints converted from TensorFlow name these
    /// `gamma` and `beta`; transformers renames them on load, and so do we.
    pub fn layer_norm(&self, c: usize, eps: f32) -> Result<LayerNorm> {
        let (w, b) =
            if !self.contains("weight") && self.contains("gamma") { ("gamma", "beta") } else { ("weight", "bias") };
        Ok(LayerNorm { weight: self.get1(w, c)?, bias: self.get1(b, c)?, eps })
    }

    /// `torch.nn.Embedding(n, c)` in this scope: `weight` `(n, c)`.
    pub fn embedding(&self, n: usize, c: usize) -> Result<Embedding> {
        Ok(Embedding { weight: self.matrix("weight", (n, c))? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions_by_hand() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn f32_matrices_are_the_files_own_bytes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/bert-tiny/model.safetensors");
        let ckpt = Checkpoint::open(path).expect("the bert-tiny fixture");
        let w = ckpt.root().pp("embeddings.word_embeddings");
        let mapped = w.matrix("weight", (30522, 32)).expect("word embeddings");
        assert!(mapped.is_mapped(), "an f32 tensor should be borrowed from the map, not copied");
        assert_eq!(mapped.view(), w.get2("weight", (30522, 32)).expect("the same tensor, converted"));
        let err = w.matrix("weight", (32, 30522)).unwrap_err().to_string();
        assert!(err.contains("embeddings.word_embeddings.weight") && err.contains("[30522, 32]"), "{err}");
    }
}
