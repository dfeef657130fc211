//! A `MemFs` seen through what a test changes in the file system's reports: one file's length (a
//! file longer than it is, so that a size limit's edges are reached without gigabytes of data, or
//! one that shrinks between its length and a read) and the random numbers (a script first, then
//! the `MemFs`'s own). Reads, writes and everything else go to the `MemFs`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use storage::{File, FileSystem, MemFile, MemFs};

/// The length reported for the altered file.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// This many bytes, whatever the file holds.
    Exactly(u64),
    /// This many bytes more than the file holds.
    Longer(u64),
}

#[derive(Clone)]
pub struct AlteredFs {
    inner: MemFs,
    /// The file whose length is reported otherwise (when opened; a file created is as it is).
    altered: Option<(PathBuf, Length)>,
    random: Arc<Mutex<VecDeque<u64>>>,
}

impl AlteredFs {
    /// `inner` as it is, until told otherwise.
    pub fn new(inner: MemFs) -> AlteredFs {
        AlteredFs {
            inner,
            altered: None,
            random: Arc::default(),
        }
    }

    /// The file at `path`, once opened, reports `length`.
    pub fn reporting(mut self, path: PathBuf, length: Length) -> AlteredFs {
        self.altered = Some((path, length));
        self
    }

    /// The next random numbers are these.
    pub fn scripted(self, random: impl IntoIterator<Item = u64>) -> AlteredFs {
        self.random.lock().unwrap().extend(random);
        self
    }
}

pub struct AlteredFile {
    inner: MemFile,
    length: Option<Length>,
}

impl FileSystem for AlteredFs {
    type File = AlteredFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<AlteredFile> {
        let inner = self.inner.create(path)?;
        Ok(AlteredFile {
            inner,
            length: None,
        })
    }
    fn open(&self, path: &Path) -> io::Result<AlteredFile> {
        let length = self
            .altered
            .as_ref()
            .filter(|(altered, _)| altered == path)
            .map(|(_, length)| *length);
        let inner = self.inner.open(path)?;
        Ok(AlteredFile { inner, length })
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn random_u64(&self) -> u64 {
        let scripted = self.random.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| self.inner.random_u64())
    }
}

impl File for AlteredFile {
    fn len(&self) -> io::Result<u64> {
        match self.length {
            None => self.inner.len(),
            Some(Length::Exactly(length)) => Ok(length),
            Some(Length::Longer(extra)) => Ok(self.inner.len()? + extra),
        }
    }
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buffer)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.inner.set_len(length)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
}
