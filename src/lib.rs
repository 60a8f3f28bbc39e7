//! Workspace root: hosts the golden tests in `tests/` and the benches in `benches/`.
pub use models;
pub use tensor;
pub use transformer;
