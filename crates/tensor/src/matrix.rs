//! [`Matrix`]: a read-only f32 matrix that either owns its values or borrows
//! them, without a copy, from bytes that outlive it (a memory-mapped checkpoint).
//!
//! Why it exists: converting every weight of a checkpoint into an owned array
//! costs a full pass over the file at load and a second copy in memory. A
//! safetensors file already stores f32 weights little-endian and 4-byte
//! aligned, so the mapped bytes *are* the matrix; a model built from mapped
//! matrices loads in the time it takes to parse the header, and its weights
//! are the page cache's pages, counted once.

use std::fmt;
use std::sync::Arc;

use ndarray::{Array2, ArrayView2, ShapeBuilder};

/// Bytes shared by every matrix that views them (a memory map), kept alive as
/// long as any of them is.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Clone)]
enum Storage {
    Owned(Arc<Vec<f32>>),
    /// `bytes[offset..]` starts the first element.
    Mapped {
        bytes: SharedBytes,
        offset: usize,
    },
}

/// A `(rows, cols)` f32 matrix with element `(r, c)` at
/// `r * row_stride + c * col_stride` floats from its start; cheap to clone
/// (the values are shared, never copied).
///
/// ```
/// use ndarray::array;
/// let m = tensor::Matrix::from(array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
/// assert_eq!(m.dim(), (2, 3));
/// // the transpose is the same values with swapped strides
/// assert_eq!(m.transposed().view(), array![[1.0f32, 4.0], [2.0, 5.0], [3.0, 6.0]]);
/// ```
#[derive(Clone)]
pub struct Matrix {
    storage: Storage,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Matrix {
    /// A row-major `(rows, cols)` matrix over `bytes[offset..offset + 4 * rows * cols]`,
    /// read as little-endian f32 in place; `None` if that range is outside
    /// `bytes`, not 4-byte aligned in memory, or the CPU is big-endian (the
    /// caller then converts the values into an owned matrix instead).
    pub fn mapped(bytes: SharedBytes, offset: usize, rows: usize, cols: usize) -> Option<Self> {
        let len = rows.checked_mul(cols)?.checked_mul(4)?;
        let slice = (*bytes).as_ref();
        let region = slice.get(offset..offset.checked_add(len)?)?;
        if cfg!(target_endian = "big") || region.as_ptr().align_offset(std::mem::align_of::<f32>()) != 0 {
            return None;
        }
        Some(Self { storage: Storage::Mapped { bytes, offset }, rows, cols, row_stride: cols, col_stride: 1 })
    }

    /// Whether the values are borrowed from mapped bytes rather than owned.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// `(rows, cols)`
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn ncols(&self) -> usize {
        self.cols
    }

    /// The transpose, `(cols, rows)`: the same values, strides swapped.
    pub fn transposed(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// The matrix as an ndarray view (no copy).
    pub fn view(&self) -> ArrayView2<'_, f32> {
        let ptr = match &self.storage {
            Storage::Owned(values) => values.as_ptr(),
            // `mapped` checked that this address is 4-byte aligned.
            Storage::Mapped { bytes, offset } => (**bytes).as_ref()[*offset..].as_ptr().cast::<f32>(),
        };
        let shape = (self.rows, self.cols).strides((self.row_stride, self.col_stride));
        // SAFETY: every element `r * row_stride + c * col_stride` (r < rows, c < cols)
        // lies inside the storage: owned values hold `rows * cols` floats in
        // row-major order (strides are that or its transpose), and `mapped`
        // checked that `4 * rows * cols` bytes from `offset` exist and are
        // aligned. The storage is immutable and lives as long as `self`.
        unsafe { ArrayView2::from_shape_ptr(shape, ptr) }
    }

    /// The transpose as a view, `(cols, rows)`, like `Array2::t`.
    pub fn t(&self) -> ArrayView2<'_, f32> {
        self.view().reversed_axes()
    }
}

impl From<Array2<f32>> for Matrix {
    /// Takes ownership of the values (copied only if `a` is not row-major).
    fn from(a: Array2<f32>) -> Self {
        let (rows, cols) = a.dim();
        let values = if a.is_standard_layout() {
            let (values, offset) = a.into_raw_vec_and_offset();
            assert!(offset.unwrap_or(0) == 0, "a standard-layout array starts at its first value");
            values
        } else {
            a.iter().copied().collect()
        };
        Self { storage: Storage::Owned(Arc::new(values)), rows, cols, row_stride: cols, col_stride: 1 }
    }
}

impl fmt::Debug for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Matrix({}x{}, {kind}, strides ({}, {}))", self.rows, self.cols, self.row_stride, self.col_stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn mapped_bytes_read_as_little_endian_rows() {
        let values = [1.5f32, -2.0, 3.25, 4.0, 0.5, -6.0];
        let mut bytes = vec![0u8; 4]; // one float of header before the data
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let shared: SharedBytes = Arc::new(bytes);
        let m = Matrix::mapped(shared.clone(), 4, 2, 3).expect("in range and aligned");
        assert!(m.is_mapped());
        assert_eq!(m.view(), array![[1.5f32, -2.0, 3.25], [4.0, 0.5, -6.0]]);
        assert_eq!(m.t(), array![[1.5f32, 4.0], [-2.0, 0.5], [3.25, -6.0]]);
        // past the end, or not on a float boundary
        assert!(Matrix::mapped(shared.clone(), 8, 2, 3).is_none());
        assert!(Matrix::mapped(shared, 2, 1, 1).is_none());
    }

    #[test]
    fn owned_matrices_keep_their_values_in_any_layout() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        assert_eq!(Matrix::from(a.clone()).view(), a);
        let m = Matrix::from(a.t().to_owned()); // not row-major: copied
        assert_eq!(m.view(), a.t());
        assert_eq!(m.transposed().view(), a);
    }
}
