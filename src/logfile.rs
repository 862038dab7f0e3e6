//! Log files beside stderr (v1's `LOG_MAX_SIZE` / `LOG_MAX_FILES`): `crs.log` in the log
//! directory, rotated when a write would take it past the size limit to `crs.log.1` (the
//! previous `.1` becomes `.2`, ...), keeping at most `max_files` rotated files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

pub const FILE_NAME: &str = "crs.log";

struct Current {
    file: File,
    len: u64,
}

/// A size-rotated log file; clones share it.
#[derive(Clone)]
pub struct RotatingFile {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    current: Arc<Mutex<Current>>,
}

fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o640);
    }
    o.open(path)
}

impl RotatingFile {
    /// Open (or continue) `dir/crs.log`, creating `dir`.
    pub fn open(dir: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = open(&dir.join(FILE_NAME))?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1),
            max_files,
            current: Arc::new(Mutex::new(Current { file, len })),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{FILE_NAME}.{n}"))
    }

    fn rotate(&self, cur: &mut Current) -> io::Result<()> {
        let live = self.dir.join(FILE_NAME);
        if self.max_files == 0 {
            let _ = std::fs::remove_file(&live);
        } else {
            let _ = std::fs::remove_file(self.rotated(self.max_files));
            for n in (1..self.max_files).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&live, self.rotated(1))?;
        }
        cur.file = open(&live)?;
        cur.len = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cur = self.current.lock();
        if cur.len > 0 && cur.len + buf.len() as u64 > self.max_bytes {
            self.rotate(&mut cur)?;
        }
        cur.file.write_all(buf)?;
        cur.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.lock().file.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_at_the_size_and_only_max_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 100, 2).unwrap();
        for i in 0..10 {
            f.write_all(format!("{i}{}\n", "x".repeat(38)).as_bytes())
                .unwrap();
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        // 40-byte lines, 100-byte files: two lines a file; 10 lines = 5 files, 3 kept.
        assert!(read("crs.log").starts_with('8'));
        assert!(read("crs.log.1").starts_with('6'));
        assert!(read("crs.log.2").starts_with('4'));
        assert!(!dir.path().join("crs.log.3").exists());
        assert!(read("crs.log").len() <= 100);
        // Reopened, it continues the current file.
        let mut g = RotatingFile::open(dir.path(), 100, 2).unwrap();
        g.write_all(b"more\n").unwrap();
        assert!(read("crs.log").ends_with("more\n"));
    }
}
