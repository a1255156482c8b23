//! Progress events from long library operations. The library only reports;
//! the CLI decides whether to draw a bar.

/// Receives progress of a long operation, measured in bytes of input.
pub trait Progress {
    /// A phase begins; `total` is the expected amount of work, if known.
    fn start(&mut self, _label: &str, _total: Option<u64>) {}
    /// `n` more units of work are done.
    fn advance(&mut self, _n: u64) {}
    /// The phase is over.
    fn finish(&mut self) {}
}

/// Reports nowhere.
pub struct Silent;

impl Progress for Silent {}
