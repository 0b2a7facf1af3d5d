//! The faces in memory: one byte per pixel, a label and a usage per row, filled by the
//! FER2013 reader (or by a test) and read by training and evaluation.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::face::{FACE_PIXELS, NUM_CLASSES};
use crate::{FerError, Result};

/// Which split of the dataset a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Usage {
    Training,
    PublicTest,
    PrivateTest,
}

impl Usage {
    /// All usages, in [`Usage::index`] order.
    pub const ALL: [Usage; 3] = [Usage::Training, Usage::PublicTest, Usage::PrivateTest];

    /// The name as written in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Training => "Training",
            Usage::PublicTest => "PublicTest",
            Usage::PrivateTest => "PrivateTest",
        }
    }

    /// Position in [`Usage::ALL`], for per-usage arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The usage with exactly this name, ignoring ASCII case.
    pub fn from_name(s: &str) -> Option<Usage> {
        Self::from_name_bytes(s.as_bytes())
    }

    pub(super) fn from_name_bytes(name: &[u8]) -> Option<Usage> {
        Self::ALL.into_iter().find(|usage| usage.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

impl FromStr for Usage {
    type Err = FerError;

    fn from_str(s: &str) -> Result<Usage> {
        Usage::from_name(s).ok_or_else(|| FerError::Data(format!("unknown usage '{s}': expected Training, PublicTest or PrivateTest")))
    }
}

/// Faces as bytes, labels and usages, row-aligned.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// All faces back to back, [`FACE_PIXELS`] bytes each.
    faces_u8: Vec<u8>,
    labels: Vec<u8>,
    usages: Vec<Usage>,
}

impl Dataset {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a face of [`FACE_PIXELS`] bytes with its label (0..=6) and usage.
    pub fn push(&mut self, face_u8: &[u8], label: u8, usage: Usage) -> Result<()> {
        if face_u8.len() != FACE_PIXELS {
            return Err(FerError::Data(format!("a face has {FACE_PIXELS} pixels, got {}", face_u8.len())));
        }
        if usize::from(label) >= NUM_CLASSES {
            return Err(FerError::Data(format!("label {label} is not 0-{}", NUM_CLASSES - 1)));
        }
        self.push_validated(face_u8, label, usage);
        Ok(())
    }

    /// Makes room for `rows` more faces at once, so that loading a whole file does not grow
    /// (and, in wasm, keep) a buffer twice the size it needs.
    pub fn reserve(&mut self, rows: usize) {
        self.faces_u8.reserve_exact(rows * FACE_PIXELS);
        self.labels.reserve_exact(rows);
        self.usages.reserve_exact(rows);
    }

    pub(super) fn push_validated(&mut self, face_u8: &[u8], label: u8, usage: Usage) {
        self.faces_u8.extend_from_slice(face_u8);
        self.labels.push(label);
        self.usages.push(usage);
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of face `i`, row-major. Panics if `i >= len()`.
    pub fn face(&self, i: usize) -> &[u8] {
        &self.faces_u8[i * FACE_PIXELS..(i + 1) * FACE_PIXELS]
    }

    /// The label of face `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// The usage of face `i`. Panics if `i >= len()`.
    pub fn usage(&self, i: usize) -> Usage {
        self.usages[i]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The rows of one usage, in file order.
    pub fn indices_of(&self, usage: Usage) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.usages[i] == usage).collect()
    }

    /// How many of the given rows have each label. Panics if an index is out of range.
    pub fn class_counts(&self, indices: &[usize]) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &i in indices {
            counts[usize::from(self.labels[i])] += 1;
        }
        counts
    }
}

/// `count` of `rows` spread evenly through them (all of them when there are fewer).
pub fn spread_evenly(rows: &[usize], count: usize) -> Vec<usize> {
    let count = count.min(rows.len());
    (0..count).map(|i| rows[i * rows.len() / count]).collect()
}
