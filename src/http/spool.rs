//! The buffers between clients and workers: a [`Spool`] holds bytes in memory up to a size, then
//! in a temporary file, and [`Buffers`] counts what all spools hold against the totals.
//!
//! Why a thread-pool server needs them: a worker that reads a request body from the client, or
//! writes the answer to it, is held for as long as the client takes. A thousand clients that send
//! one byte a second (a "slow POST") or read nothing ("slow read") then hold every worker, the way
//! slowloris took down Apache's prefork servers. So the poller reads the whole body into a spool
//! before a worker sees the request (nginx's `proxy_request_buffering on`), and a worker writes
//! what the client does not take at once into the connection's outgoing spool, which the poller
//! finishes when the client is ready (nginx's `proxy_buffering`, Apache event MPM's "write
//! completion"). A slow client then costs a spool and a descriptor, never a thread.
//!
//! ```text
//! push ─▶ [ memory: up to `memory` bytes ] ─ full? ─▶ [ temporary file: up to `temp_file` ]
//!                                                         │ both full: push fails (Full)
//! drain ◀─ memory first, then the file, in the order pushed
//! ```
//!
//! The memory part is a ring buffer (a `VecDeque`): a drain takes bytes off its front, a push
//! adds them at its back, and its allocation never passes `memory` however many bytes go
//! through it. (A `Vec` drained from the front keeps its drained bytes allocated until it is
//! empty, and a client reading at the backend's pace never lets it be: a 1 GiB stream grew one
//! to 1 GiB while it held 64 KiB.)
//!
//! | limit | default | when reached | anchor |
//! | --- | --- | --- | --- |
//! | memory per spool (one direction of one connection) | 64 KiB | the rest goes to a file | nginx `client_body_buffer_size`, `proxy_buffers` |
//! | memory in all spools | 128 MiB | new bytes go to files | |
//! | largest temporary file | 1 GiB | [`Full`] | nginx `proxy_max_temp_file_size 1024m` |
//! | bytes in all temporary files | 4 GiB | [`Full`] | |
//!
//! Temporary files are unlinked from the start (Linux `O_TMPFILE`; elsewhere created and removed
//! at once), so nothing is left behind, even after `kill -9`: the kernel frees the space when
//! the descriptor closes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How much the spools may hold, and where their files go. [`BufferLimits::default`] gives the
/// defaults in the module table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// Bytes one spool keeps in memory before it uses a file. Default 64 KiB.
    pub memory: usize,
    /// Bytes all spools together keep in memory; past it, new bytes go to files. Default 128 MiB.
    pub memory_total: u64,
    /// Where temporary files are made. Default: the system's (`$TMPDIR`, else `/tmp`).
    pub temp_dir: PathBuf,
    /// Largest temporary file. Default 1 GiB.
    pub temp_file: u64,
    /// Bytes in all temporary files together. Default 4 GiB.
    pub temp_total: u64,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits {
            memory: 64 << 10,
            memory_total: 128 << 20,
            temp_dir: std::env::temp_dir(),
            temp_file: 1 << 30,
            temp_total: 4 << 30,
        }
    }
}

/// Why a spool could not take more bytes.
#[derive(Debug)]
pub enum Full {
    /// Its file would grow past `temp_file`.
    FileLimit,
    /// All files together would pass `temp_total`.
    TotalLimit,
    /// The file could not be made or written (a full disk, a missing directory).
    Disk(io::Error),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::FileLimit => f.write_str("largest temporary file reached (buffers temp_file=)"),
            Full::TotalLimit => f.write_str("temporary files full (buffers temp_total=)"),
            Full::Disk(e) => write!(f, "temporary file failed: {e}"),
        }
    }
}

/// How often a total reached is logged at most. 10 s.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What all spools hold, against the [`BufferLimits`]; shared by the poller and the workers.
#[derive(Debug)]
pub struct Buffers {
    limits: BufferLimits,
    memory: AtomicU64,
    files: AtomicU64,
    spilled: AtomicU64,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// A snapshot of [`Buffers`] for status pages (serialised, the `buffers` object of `/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Bytes held in memory by all spools now.
    pub memory_bytes: u64,
    /// Bytes held in temporary files now.
    pub file_bytes: u64,
    /// Times a spool started a temporary file, since start.
    pub spilled: u64,
    /// Times a spool was full (a file or disk total reached, or a disk error), since start.
    pub full: u64,
}

impl Buffers {
    /// Accounting for spools within `limits`.
    pub fn new(limits: BufferLimits) -> Arc<Buffers> {
        Arc::new(Buffers {
            limits,
            memory: AtomicU64::new(0),
            files: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &BufferLimits {
        &self.limits
    }

    /// What is held now.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            memory_bytes: self.memory.load(Relaxed),
            file_bytes: self.files.load(Relaxed),
            spilled: self.spilled.load(Relaxed),
            full: self.refused.load(Relaxed),
        }
    }

    /// Adds `n` to `counter` unless that passes `max`.
    fn reserve(counter: &AtomicU64, n: u64, max: u64) -> bool {
        counter
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(n).filter(|&total| total <= max)
            })
            .is_ok()
    }

    /// Logs `what` at most every [`WARN_EVERY`], so that a flood of full spools is one line.
    fn warn(&self, what: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut last = self.last_warning.lock();
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            log::warn!("{}", what());
        }
    }

    fn full(&self, why: Full) -> Full {
        self.refused.fetch_add(1, Relaxed);
        self.warn(|| format!("client buffers: {why}"));
        why
    }
}

/// Opens a temporary file in `dir` that has no name from the start, so that nothing is left
/// behind however the process ends.
fn open_temp(dir: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(file) => return Ok(file),
            // A file system without O_TMPFILE: fall back to a name removed at once.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
            Err(e) => return Err(e),
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Relaxed);
        let path = dir.join(format!(".loadbalancer-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// A queue of bytes in memory, then in a temporary file (see the module documentation). Owned
/// by one thread at a time, moving with its connection; what it holds is given back to the
/// [`Buffers`] totals when it drains or is dropped.
#[derive(Debug)]
pub struct Spool {
    buffers: Arc<Buffers>,
    /// The memory part: a ring buffer of at most `memory` bytes, allocated as it fills.
    mem: VecDeque<u8>,
    file: Option<File>,
    /// `file[file_start..file_end]` is held; the rest has been drained or never written.
    file_start: u64,
    file_end: u64,
}

impl Spool {
    /// An empty spool counted in `buffers`.
    pub fn new(buffers: &Arc<Buffers>) -> Spool {
        Spool {
            buffers: Arc::clone(buffers),
            mem: VecDeque::new(),
            file: None,
            file_start: 0,
            file_end: 0,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64 + (self.file_end - self.file_start)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in the temporary file (not drained yet).
    pub fn in_file(&self) -> u64 {
        self.file_end - self.file_start
    }

    /// Appends `data`: to memory while this spool and the total have room and nothing waits in
    /// the file (the order must be kept), otherwise to the file. Fails, holding nothing more,
    /// when the file is at its limit, the files' total is reached, or the disk fails.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Full> {
        if data.is_empty() {
            return Ok(());
        }
        let n = data.len() as u64;
        let limits = &self.buffers.limits;
        let fits = self.in_file() == 0 && self.mem.len() + data.len() <= limits.memory;
        if fits && Buffers::reserve(&self.buffers.memory, n, limits.memory_total) {
            self.make_room(data.len());
            self.mem.extend(data);
            return Ok(());
        }
        if fits {
            let total = limits.memory_total;
            self.buffers.warn(|| {
                format!(
                    "client buffers: memory total of {} MiB reached (buffers memory_total=): \
                     new bytes go to temporary files",
                    total >> 20
                )
            });
        }
        self.push_to_file(data)
    }

    /// Makes room in the memory part for `n` more bytes, which fit within `memory`. The ring's
    /// allocation doubles as a `Vec`'s does (so that growing costs one copy per byte at most),
    /// but stops at `memory`: with the 64 KiB default, a spool that held 40 KiB and takes 10 KiB
    /// more grows to 64 KiB, not 80.
    fn make_room(&mut self, n: usize) {
        let needed = self.mem.len() + n;
        if needed > self.mem.capacity() {
            let most = self.buffers.limits.memory.max(needed);
            let target = (2 * self.mem.capacity()).clamp(needed, most);
            self.mem.reserve_exact(target - self.mem.len());
        }
    }

    fn push_to_file(&mut self, data: &[u8]) -> Result<(), Full> {
        let n = data.len() as u64;
        let limits = &self.buffers.limits;
        // A file counts with all it has taken until it is drained to its end: its drained
        // front is on the disk still.
        if self.file_end + n > limits.temp_file {
            return Err(self.buffers.full(Full::FileLimit));
        }
        if !Buffers::reserve(&self.buffers.files, n, limits.temp_total) {
            return Err(self.buffers.full(Full::TotalLimit));
        }
        if self.file.is_none() {
            match open_temp(&limits.temp_dir) {
                Ok(file) => {
                    self.buffers.spilled.fetch_add(1, Relaxed);
                    self.file = Some(file);
                }
                Err(e) => {
                    self.buffers.files.fetch_sub(n, Relaxed);
                    let dir = limits.temp_dir.display();
                    let e = io::Error::new(e.kind(), format!("{dir}: {e}"));
                    return Err(self.buffers.full(Full::Disk(e)));
                }
            }
        }
        let file = self.file.as_ref().expect("opened above");
        if let Err(e) = file.write_all_at(data, self.file_end) {
            self.buffers.files.fetch_sub(n, Relaxed);
            return Err(self.buffers.full(Full::Disk(e)));
        }
        self.file_end += n;
        Ok(())
    }

    /// Writes from the front of the spool into `out` until it is empty or `out` would block,
    /// dropping what was written; `scratch` carries the file's bytes. Returns the bytes written;
    /// `WouldBlock` from `out` ends the call without an error.
    pub fn drain_into(&mut self, out: &mut impl Write, scratch: &mut [u8]) -> io::Result<u64> {
        let mut written = 0u64;
        loop {
            let result = if !self.mem.is_empty() {
                // The ring's bytes are in one or two pieces: both go in one system call.
                let (front, back) = self.mem.as_slices();
                let result = out.write_vectored(&[IoSlice::new(front), IoSlice::new(back)]);
                if let Ok(n) = result {
                    self.mem.drain(..n);
                    self.buffers.memory.fetch_sub(n as u64, Relaxed);
                }
                result
            } else if self.file_start < self.file_end {
                let file = self.file.as_ref().expect("bytes in the file");
                let want = (self.file_end - self.file_start).min(scratch.len() as u64) as usize;
                let got = file.read_at(&mut scratch[..want], self.file_start)?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "temporary file shorter than written",
                    ));
                }
                out.write(&scratch[..got])
                    .inspect(|&n| self.file_start += n as u64)
            } else {
                self.reset();
                return Ok(written);
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if self.file_start == self.file_end && self.file_end > 0 {
                self.release_file();
            }
        }
    }

    /// Frees the drained memory part, and gives the file's space back once it is drained.
    fn reset(&mut self) {
        if self.mem.is_empty() {
            self.mem = VecDeque::new();
        }
        if self.file_start == self.file_end && self.file_end > 0 {
            self.release_file();
        }
    }

    /// Empties the drained file: it stays open for the next spill, its blocks go back now.
    fn release_file(&mut self) {
        self.buffers.files.fetch_sub(self.file_end, Relaxed);
        if let Some(file) = &self.file {
            let _ = file.set_len(0);
        }
        self.file_start = 0;
        self.file_end = 0;
    }

    /// Reads held bytes from offset `pos` (0 is the oldest byte held) into `out`, draining
    /// nothing: a request body can be read again for a retry. `Ok(0)` at the end.
    pub fn read_at(&self, pos: u64, out: &mut [u8]) -> io::Result<usize> {
        let (front, back) = self.mem.as_slices();
        if pos < self.mem.len() as u64 {
            let pos = pos as usize;
            let from = match pos.checked_sub(front.len()) {
                None => &front[pos..],
                Some(in_back) => &back[in_back..],
            };
            let n = from.len().min(out.len());
            out[..n].copy_from_slice(&from[..n]);
            return Ok(n);
        }
        let in_file = pos - self.mem.len() as u64;
        let left = self.in_file().saturating_sub(in_file);
        if left == 0 || out.is_empty() {
            return Ok(0);
        }
        let file = self.file.as_ref().expect("bytes in the file");
        let want = left.min(out.len() as u64) as usize;
        file.read_at(&mut out[..want], self.file_start + in_file)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.buffers
            .memory
            .fetch_sub(self.mem.len() as u64, Relaxed);
        self.buffers.files.fetch_sub(self.file_end, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(memory: usize, memory_total: u64, temp_file: u64, temp_total: u64) -> Arc<Buffers> {
        Buffers::new(BufferLimits {
            memory,
            memory_total,
            temp_dir: std::env::temp_dir(),
            temp_file,
            temp_total,
        })
    }

    /// A writer that takes at most `room` bytes, then would block.
    struct Slow {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_first_then_a_file_in_order_and_everything_given_back() {
        let b = buffers(8, 1 << 20, 1 << 20, 1 << 20);
        let mut s = Spool::new(&b);
        s.push(b"hello").unwrap();
        s.push(b" wor").unwrap(); // 9 > 8: to the file
        s.push(b"ld").unwrap(); // the file has bytes: after them, to keep the order
        assert_eq!((b.stats().memory_bytes, b.stats().file_bytes), (5, 6));
        assert_eq!(b.stats().spilled, 1);
        let mut all = Vec::new();
        let mut piece = [0u8; 4];
        loop {
            match s.read_at(all.len() as u64, &mut piece).unwrap() {
                0 => break,
                n => all.extend_from_slice(&piece[..n]),
            }
        }
        assert_eq!(all, b"hello world");

        let mut out = Slow {
            got: Vec::new(),
            room: 7,
        };
        let mut scratch = [0u8; 3];
        assert_eq!(s.drain_into(&mut out, &mut scratch).unwrap(), 7);
        assert_eq!(s.len(), 4);
        out.room = 100;
        assert_eq!(s.drain_into(&mut out, &mut scratch).unwrap(), 4);
        assert_eq!(out.got, b"hello world");
        assert!(s.is_empty());
        assert_eq!((b.stats().memory_bytes, b.stats().file_bytes), (0, 0));
        // Drained: memory again.
        s.push(b"again").unwrap();
        assert_eq!((b.stats().memory_bytes, b.stats().file_bytes), (5, 0));
        drop(s);
        assert_eq!(
            b.stats(),
            BufferStats {
                spilled: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_memory_part_stays_within_its_size_however_much_goes_through() {
        // A client that takes about as much as the backend gives: the spool never drains
        // completely, while 100 times its memory size goes through it.
        const MEMORY: usize = 64 << 10;
        let b = buffers(MEMORY, 1 << 30, 1 << 30, 1 << 30);
        let mut s = Spool::new(&b);
        let mut stream = (0..).map(|i: u64| (i % 251) as u8);
        let mut piece = |len: usize| -> Vec<u8> { stream.by_ref().take(len).collect() };
        s.push(&piece(40 << 10)).unwrap();
        let mut out = Slow {
            got: Vec::new(),
            room: 0,
        };
        let mut scratch = [0u8; 16];
        for i in 0..2000 {
            let p = piece(3000 + i % 4000);
            s.push(&p).unwrap();
            out.room = p.len() + i % 7 - 3;
            s.drain_into(&mut out, &mut scratch).unwrap();
            assert!(!s.is_empty() && s.in_file() == 0, "round {i}");
            assert!(
                s.mem.capacity() <= MEMORY,
                "round {i}: {}",
                s.mem.capacity()
            );
        }
        assert!(out.got.len() > 100 * MEMORY);
        // What is held reads back in order across the ring's end, and drains in order too.
        let held = s.len() as usize;
        let mut read = vec![0u8; held];
        let mut at = 0;
        while at < held {
            at += s.read_at(at as u64, &mut read[at..]).unwrap();
        }
        out.room = usize::MAX;
        s.drain_into(&mut out, &mut scratch).unwrap();
        assert!(out.got.ends_with(&read));
        let expected = (0..out.got.len() as u64).map(|i| (i % 251) as u8);
        assert!(out.got.iter().copied().eq(expected), "the bytes changed");
        assert_eq!(b.stats().memory_bytes, 0);
    }

    #[test]
    fn totals_and_the_file_limit_are_kept() {
        // Memory total 4: a second spool's bytes go to its file.
        let b = buffers(8, 4, 10, 12);
        let mut a = Spool::new(&b);
        a.push(b"abcd").unwrap();
        let mut c = Spool::new(&b);
        c.push(b"xy").unwrap();
        assert_eq!((b.stats().memory_bytes, b.stats().file_bytes), (4, 2));
        // The file limit (10) and the files' total (12).
        assert!(matches!(c.push(&[0; 9]), Err(Full::FileLimit)));
        c.push(&[0; 8]).unwrap();
        let mut d = Spool::new(&b);
        d.push(&[0; 8]).unwrap_err();
        assert!(matches!(d.push(&[0; 3]), Err(Full::TotalLimit)));
        assert_eq!(b.stats().full, 3);
        drop((a, c, d));
        assert_eq!((b.stats().memory_bytes, b.stats().file_bytes), (0, 0));
    }

    #[test]
    fn a_missing_directory_is_a_disk_error_not_a_panic() {
        let b = Buffers::new(BufferLimits {
            memory: 1,
            temp_dir: "/nonexistent/loadbalancer".into(),
            ..BufferLimits::default()
        });
        let mut s = Spool::new(&b);
        match s.push(b"ab") {
            Err(Full::Disk(e)) => assert!(e.to_string().contains("/nonexistent/loadbalancer")),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.stats().file_bytes, 0);
    }

    #[test]
    fn temporary_files_have_no_name() {
        let dir = std::env::temp_dir().join(format!("lb-spool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = Buffers::new(BufferLimits {
            memory: 1,
            temp_dir: dir.clone(),
            ..BufferLimits::default()
        });
        let mut s = Spool::new(&b);
        s.push(&[7; 100_000]).unwrap();
        assert_eq!(s.in_file(), 100_000);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        drop(s);
        std::fs::remove_dir(&dir).unwrap();
    }
}
