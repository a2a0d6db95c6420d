//! Follows the mod_jk log file like `tail -F`: hands out the complete lines appended to one
//! path, across rotation, truncation and the file being missing for a while.
//!
//! - Start: at the end of a file that exists when following starts (only new requests
//!   matter), at the beginning of one created later.
//! - Rotation (the path names another file, by device and inode): the new file is read
//!   from its start, and the old one is still read until it has been quiet for
//!   [`RETIRE_AFTER`], because Apache's children keep writing to it until the graceful
//!   reload that follows a rotation has replaced them.
//! - Truncation (`copytruncate`: the file is shorter than what was read): read again from
//!   0. Lines written between logrotate's copy and its truncation are lost; so is a
//!   truncation followed, within one poll, by more bytes than had been read, which polling
//!   cannot see.
//! - Missing path: retried every poll; an open file whose path vanished is still read.
//! - A line is handed out only with its newline; one longer than [`MAX_LINE`] is skipped to
//!   its newline and counted in [`Batch::cut`], as is a partial line abandoned at rotation
//!   or truncation.
//!
//! Polling (every `poll` given to [`LogFollower::open`]; 25 ms suits the agent) rather
//! than inotify: no extra dependency, it sees rotation by rename and by copytruncate alike,
//! and at a tenth of the quarter-second aggregation interval it costs one `read` and two
//! `stat`s per poll when idle. With data waiting it reads [`CHUNK`] bytes per call and
//! does not sleep.
//!
//! I/O goes through `tokio::fs` (blocking pool), so a slow disk never stalls the agent's
//! runtime. [`spawn`] runs the follower as a task feeding a bounded channel, with a shutdown.

use std::{
    io::{self, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

/// The longest line handed out, in bytes: a request line is under 200 bytes and a mod_jk
/// message rarely over 1 KiB, so a longer line is garbage, and the cap bounds memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes asked for per `read`.
const CHUNK: usize = 64 * 1024;

/// A batch is handed out once its lines reach this many bytes (about 4,000 request lines),
/// so a backlog is delivered in bounded pieces rather than one large allocation.
const BATCH_BYTES: usize = 256 * 1024;

/// How long a rotated-away file is still read after its last new byte. Apache's graceful
/// reload replaces its children about 1 s after it returns (webtier.md), and a child ends
/// its current requests first.
pub(crate) const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// Batches the [`spawn`]ed follower may queue before it stops reading: at most about
/// 4 × 320 KiB in memory; beyond that the log file itself is the buffer, and nothing is lost.
pub(crate) const CHANNEL_CAPACITY: usize = 4;

/// Complete lines, without their newlines, stored in one string to avoid an allocation
/// per line.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    text: String,
    /// End of each line in `text`; a line starts where the previous one ends.
    ends: Vec<usize>,
    cut: u64,
}

impl Batch {
    /// The lines, in file order (across a rotation, the old file's late lines may come
    /// between the new file's).
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            // Each end was pushed after a whole `str`, so both are char boundaries.
            let line = self.text.get(start..end).unwrap_or_default();
            start = end;
            line
        })
    }

    /// Number of complete lines.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// No lines and nothing cut.
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty() && self.cut == 0
    }

    /// Lines that could not be handed out whole (longer than [`MAX_LINE`], or a partial
    /// line abandoned at a rotation or truncation): malformed lines for the metrics.
    pub(crate) fn cut(&self) -> u64 {
        self.cut
    }

    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.cut = 0;
    }

    fn push(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // mod_jk writes ASCII; a stray byte becomes U+FFFD rather than losing the request.
        match std::str::from_utf8(line) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(line)),
        }
        self.ends.push(self.text.len());
    }

    fn bytes(&self) -> usize {
        self.text.len()
    }
}

/// A file's identity: the path may come to name another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// One open file and where its reading stands.
#[derive(Debug)]
struct Tail {
    file: File,
    id: FileId,
    /// Bytes consumed so far; the file's size dropping below it means truncation.
    offset: u64,
    /// The start of a line whose newline has not been read yet.
    partial: Vec<u8>,
    /// Dropping bytes up to the next newline: the line is too long (already counted as
    /// cut), or following started in its middle.
    skipping: bool,
}

impl Tail {
    /// Opens `path` at its start, or at its end (then skipping a partial last line, which
    /// belongs to a request that is not ours).
    async fn open(path: &Path, at_end: bool) -> io::Result<Tail> {
        let file = File::open(path).await?;
        let meta = file.metadata().await?;
        let mut tail = Tail {
            file,
            id: FileId::of(&meta),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
        };
        if at_end && meta.len() > 0 {
            tail.file.seek(SeekFrom::Start(meta.len() - 1)).await?;
            let mut last = [0u8; 1];
            let n = tail.file.read(&mut last).await?;
            tail.offset = meta.len() - 1 + n as u64;
            tail.skipping = n == 1 && last[0] != b'\n';
        }
        Ok(tail)
    }

    /// Reads until the end of the file or until `batch` is full; returns the bytes read.
    async fn read(&mut self, chunk: &mut [u8], batch: &mut Batch) -> io::Result<usize> {
        let mut total = 0;
        while batch.bytes() < BATCH_BYTES {
            let n = self.file.read(chunk).await?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            total += n;
            self.feed(&chunk[..n], batch);
        }
        Ok(total)
    }

    /// Splits `data` into lines, carrying a partial last line to the next call.
    fn feed(&mut self, mut data: &[u8], batch: &mut Batch) {
        while !data.is_empty() {
            let Some(newline) = data.iter().position(|&b| b == b'\n') else {
                if !self.skipping {
                    self.partial.extend_from_slice(data);
                    if self.partial.len() > MAX_LINE {
                        self.partial.clear();
                        self.skipping = true;
                        batch.cut += 1;
                    }
                }
                return;
            };
            let line = &data[..newline];
            data = &data[newline + 1..];
            if self.skipping {
                self.skipping = false;
            } else if self.partial.len() + line.len() > MAX_LINE {
                self.partial.clear();
                batch.cut += 1;
            } else if self.partial.is_empty() {
                batch.push(line);
            } else {
                self.partial.extend_from_slice(line);
                batch.push(&self.partial);
                self.partial.clear();
            }
        }
    }

    /// Gives up the partial line, counting it as cut (a line that was being skipped has
    /// been counted already).
    fn abandon_partial(&mut self, batch: &mut Batch) {
        if !self.partial.is_empty() {
            batch.cut += 1;
            self.partial.clear();
        }
        self.skipping = false;
    }
}

/// A rotated-away file, still read while the writers that hold it finish.
#[derive(Debug)]
struct Retiring {
    tail: Tail,
    last_data: Instant,
}

/// Follows one path. Drive it from one task ([`spawn`]); [`LogFollower::next_batch`] is not
/// meant to be cancelled and resumed.
#[derive(Debug)]
pub(crate) struct LogFollower {
    path: PathBuf,
    poll: Duration,
    current: Option<Tail>,
    retiring: Option<Retiring>,
    /// The path existed when following started and has not been opened yet: open it at
    /// its end. Cleared by the first open, or by finding the path missing (whatever
    /// appears later is new).
    start_at_end: bool,
    /// The last problem logged, so a persisting one is logged once, not every poll.
    last_problem: Option<String>,
    retire_after: Duration,
    chunk: Vec<u8>,
}

impl LogFollower {
    /// Starts following `path`, checking for new data every `poll`. Never fails: a missing
    /// or unreadable file is retried every poll (and logged once).
    pub(crate) async fn open(path: impl Into<PathBuf>, poll: Duration) -> LogFollower {
        let path = path.into();
        let exists = tokio::fs::metadata(&path).await.is_ok();
        let mut follower = LogFollower {
            path,
            poll,
            current: None,
            retiring: None,
            start_at_end: exists,
            last_problem: None,
            retire_after: RETIRE_AFTER,
            chunk: vec![0; CHUNK],
        };
        follower.try_open().await;
        follower
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends new complete lines to `batch`, waiting (polling) until there is at least one
    /// line or cut line. Returns at once while a backlog remains.
    pub(crate) async fn next_batch(&mut self, batch: &mut Batch) {
        loop {
            self.step(batch).await;
            if !batch.is_empty() {
                return;
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One poll: the retiring file's late lines, then the current file's new lines, then
    /// (at its end) the checks for truncation and rotation.
    async fn step(&mut self, batch: &mut Batch) {
        self.step_retiring(batch).await;
        if batch.bytes() >= BATCH_BYTES {
            return;
        }
        if self.current.is_none() && !self.try_open().await {
            return;
        }
        let Some(tail) = self.current.as_mut() else {
            return;
        };
        match tail.read(&mut self.chunk, batch).await {
            Ok(0) => {}
            Ok(_) => self.last_problem = None, // a problem seen again is news again
            Err(error) => {
                self.problem("cannot read the log", &error);
                return;
            }
        }
        if batch.bytes() >= BATCH_BYTES {
            return; // not at the end yet: the checks below wait for the next step
        }
        let id = tail.id;
        match tail.file.metadata().await {
            Ok(meta) if meta.len() < tail.offset => {
                info!(
                    path = %self.path.display(),
                    size = meta.len(),
                    offset = tail.offset,
                    "log truncated, reading it from the start"
                );
                tail.abandon_partial(batch);
                match tail.file.seek(SeekFrom::Start(0)).await {
                    Ok(_) => tail.offset = 0,
                    Err(error) => {
                        // Reopen from the start rather than read from an unknown place.
                        self.current = None;
                        self.problem("cannot rewind the log", &error);
                    }
                }
                return;
            }
            Ok(_) => {}
            Err(error) => self.problem("cannot stat the open log", &error),
        }
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) if FileId::of(&meta) != id => self.rotate(batch).await,
            Ok(_) => {}
            // Renamed away and not yet replaced: keep reading the open file meanwhile.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => self.problem("cannot stat the log path", &error),
        }
    }

    /// The path names a new file: the current one retires, the new one is read from 0.
    async fn rotate(&mut self, batch: &mut Batch) {
        if let Some(mut old) = self.retiring.take() {
            // Rotated twice within RETIRE_AFTER: the oldest is done.
            old.tail.abandon_partial(batch);
        }
        if let Some(tail) = self.current.take() {
            info!(path = %self.path.display(), "log rotated, following the new file");
            self.retiring = Some(Retiring {
                tail,
                last_data: Instant::now(),
            });
        }
        self.try_open().await;
    }

    async fn step_retiring(&mut self, batch: &mut Batch) {
        let Some(old) = self.retiring.as_mut() else {
            return;
        };
        match old.tail.read(&mut self.chunk, batch).await {
            Ok(0) if old.last_data.elapsed() >= self.retire_after => {
                debug!(path = %self.path.display(), "rotated-away log closed");
                old.tail.abandon_partial(batch);
                self.retiring = None;
            }
            Ok(0) => {}
            Ok(_) => old.last_data = Instant::now(),
            Err(error) => {
                old.tail.abandon_partial(batch);
                self.retiring = None;
                self.problem("cannot read the rotated-away log", &error);
            }
        }
    }

    /// Opens the path (at its end on the very first open of a file that existed at start);
    /// returns whether a file is now open.
    async fn try_open(&mut self) -> bool {
        match Tail::open(&self.path, self.start_at_end).await {
            Ok(tail) => {
                info!(path = %self.path.display(), offset = tail.offset, "following log");
                self.start_at_end = false;
                self.last_problem = None;
                self.current = Some(tail);
                true
            }
            Err(error) => {
                if error.kind() == io::ErrorKind::NotFound {
                    self.start_at_end = false;
                }
                self.problem("cannot open the log", &error);
                false
            }
        }
    }

    /// Logs a problem once per change, not every poll.
    fn problem(&mut self, what: &str, error: &io::Error) {
        let text = format!("{what}: {error}");
        if self.last_problem.as_deref() != Some(text.as_str()) {
            warn!(path = %self.path.display(), "{text}; retrying every {:?}", self.poll);
            self.last_problem = Some(text);
        }
    }
}

/// Runs `follower` as a task that sends each batch into a channel of
/// [`CHANNEL_CAPACITY`] and stops when `stop` turns true (or its sender is dropped).
/// Batches already queued stay readable after the stop; the receiver then sees the end.
pub(crate) fn spawn(
    follower: LogFollower,
    stop: watch::Receiver<bool>,
) -> (mpsc::Receiver<Batch>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    (receiver, tokio::spawn(run(follower, sender, stop)))
}

async fn run(
    mut follower: LogFollower,
    batches: mpsc::Sender<Batch>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut batch = Batch::default();
        // Cancelling next_batch on stop loses at most the lines of that step: we are
        // stopping anyway.
        tokio::select! {
            _ = follower.next_batch(&mut batch) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        tokio::select! {
            sent = batches.send(batch) => if sent.is_err() {
                return; // nobody reads any more
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write};

    use super::*;

    /// Real time (file I/O runs on the blocking pool): a short poll keeps tests quick.
    const POLL: Duration = Duration::from_millis(10);
    const PATIENCE: Duration = Duration::from_secs(5);

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Collects lines until `want` lines and `cut` cut lines have come.
    async fn expect(rx: &mut mpsc::Receiver<Batch>, want: usize, cut: u64) -> Vec<String> {
        let mut lines = Vec::new();
        let mut cuts = 0;
        while lines.len() < want || cuts < cut {
            let batch = tokio::time::timeout(PATIENCE, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out with {lines:?}, {cuts} cut"))
                .expect("follower ended");
            lines.extend(batch.lines().map(str::to_owned));
            cuts += batch.cut();
        }
        assert_eq!((lines.len(), cuts), (want, cut), "{lines:?}");
        lines
    }

    /// Asserts nothing arrives for a while (20 polls).
    async fn expect_quiet(rx: &mut mpsc::Receiver<Batch>) {
        if let Ok(Some(batch)) = tokio::time::timeout(POLL * 20, rx.recv()).await {
            panic!(
                "unexpected {:?}, {} cut",
                batch.lines().collect::<Vec<_>>(),
                batch.cut()
            );
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
        rx: mpsc::Receiver<Batch>,
    }

    async fn follow(setup: impl FnOnce(&Path)) -> Fixture {
        follow_with(setup, RETIRE_AFTER).await
    }

    async fn follow_with(setup: impl FnOnce(&Path), retire_after: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mod_jk.log");
        setup(&path);
        let mut follower = LogFollower::open(&path, POLL).await;
        follower.retire_after = retire_after;
        let (stop, stopped) = watch::channel(false);
        let (rx, task) = spawn(follower, stopped);
        Fixture {
            _dir: dir,
            path,
            stop,
            task,
            rx,
        }
    }

    #[tokio::test]
    async fn starts_at_the_end_of_an_existing_file() {
        let mut f = follow(|p| append(p, "old 1\nold 2\nhalf of old")).await;
        append(&f.path, " 3\nnew 1\nnew 2\n");
        assert_eq!(expect(&mut f.rx, 2, 0).await, ["new 1", "new 2"]);
    }

    #[tokio::test]
    async fn appended_lines_in_order_across_batches() {
        let mut f = follow(|p| append(p, "")).await;
        let lines: Vec<String> = (0..20_000).map(|i| format!("line {i:05}")).collect();
        append(&f.path, &(lines.join("\n") + "\n"));
        assert_eq!(expect(&mut f.rx, lines.len(), 0).await, lines);
    }

    #[tokio::test]
    async fn partial_line_waits_for_its_newline() {
        let mut f = follow(|p| append(p, "")).await;
        append(&f.path, "[s] lb worker1 ");
        expect_quiet(&mut f.rx).await;
        append(&f.path, "h 0.05 200\r\nnext");
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["[s] lb worker1 h 0.05 200"]);
    }

    #[tokio::test]
    async fn overlong_line_is_cut_and_skipped() {
        let mut f = follow(|p| append(p, "")).await;
        // One long line in one write, and one that arrives in pieces.
        append(&f.path, &format!("{}\nafter 1\n", "x".repeat(MAX_LINE + 1)));
        assert_eq!(expect(&mut f.rx, 1, 1).await, ["after 1"]);
        for _ in 0..3 {
            append(&f.path, &"y".repeat(MAX_LINE / 2));
            tokio::time::sleep(POLL * 3).await;
        }
        append(&f.path, "tail of y\nafter 2\n");
        assert_eq!(expect(&mut f.rx, 1, 1).await, ["after 2"]);
        // Exactly MAX_LINE is still a line.
        let longest = "z".repeat(MAX_LINE);
        append(&f.path, &format!("{longest}\n"));
        assert_eq!(expect(&mut f.rx, 1, 0).await, [longest]);
    }

    #[tokio::test]
    async fn missing_file_is_read_from_its_start_once_created() {
        let mut f = follow(|_| {}).await;
        expect_quiet(&mut f.rx).await;
        append(&f.path, "first\nsecond\n");
        assert_eq!(expect(&mut f.rx, 2, 0).await, ["first", "second"]);
    }

    #[tokio::test]
    async fn rotation_by_rename_reads_old_late_lines_and_the_new_file() {
        let mut f = follow(|p| append(p, "before start\n")).await;
        append(&f.path, "a\n");
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["a"]);
        // logrotate renames; Apache still holds the old file until its graceful reload.
        let rotated = f.path.with_extension("log.1");
        let mut old = OpenOptions::new().append(true).open(&f.path).unwrap();
        std::fs::rename(&f.path, &rotated).unwrap();
        old.write_all(b"b (old file, path gone)\n").unwrap();
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["b (old file, path gone)"]);
        append(&f.path, "c (new file)\n");
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["c (new file)"]);
        old.write_all(b"d (old file, late)\n").unwrap();
        append(&f.path, "e (new file)\n");
        let mut got = expect(&mut f.rx, 2, 0).await;
        got.sort();
        assert_eq!(got, ["d (old file, late)", "e (new file)"]);
    }

    #[tokio::test]
    async fn rotated_file_retires_after_quiet_and_its_partial_line_is_cut() {
        let retire = POLL * 5;
        let mut f = follow_with(|p| append(p, ""), retire).await;
        let mut old = OpenOptions::new().append(true).open(&f.path).unwrap();
        old.write_all(b"a\nhalf").unwrap();
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["a"]);
        std::fs::remove_file(&f.path).unwrap();
        append(&f.path, "b\n");
        assert_eq!(expect(&mut f.rx, 1, 1).await, ["b"]);
        // Closed: a later write to the old file is not read.
        old.write_all(b" more\n").unwrap();
        expect_quiet(&mut f.rx).await;
    }

    #[tokio::test]
    async fn copytruncate_restarts_from_zero() {
        let mut f = follow(|p| append(p, "")).await;
        append(&f.path, "one\ntwo\nthree\n");
        assert_eq!(expect(&mut f.rx, 3, 0).await.len(), 3);
        OpenOptions::new()
            .write(true)
            .open(&f.path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&f.path, "four\n");
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["four"]);
        append(&f.path, "five\n");
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["five"]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_dropped() {
        let mut f = follow(|p| append(p, "")).await;
        let mut file = OpenOptions::new().append(true).open(&f.path).unwrap();
        file.write_all(b"caf\xe9\n").unwrap();
        assert_eq!(expect(&mut f.rx, 1, 0).await, ["caf\u{fffd}"]);
    }

    #[tokio::test]
    async fn shutdown_ends_the_task_and_queued_batches_drain() {
        let mut f = follow(|p| append(p, "")).await;
        append(&f.path, "a\n");
        // Let the follower queue the batch, then stop it without reading.
        tokio::time::sleep(POLL * 10).await;
        f.stop.send(true).unwrap();
        tokio::time::timeout(PATIENCE, f.task)
            .await
            .expect("follower did not stop")
            .unwrap();
        let batch = f.rx.recv().await.expect("queued batch lost");
        assert_eq!(batch.lines().collect::<Vec<_>>(), ["a"]);
        assert!(f.rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn stops_when_the_reader_is_gone() {
        let f = follow(|p| append(p, "")).await;
        drop(f.rx);
        append(&f.path, "a\n");
        tokio::time::timeout(PATIENCE, f.task)
            .await
            .expect("follower did not stop")
            .unwrap();
    }

    #[test]
    fn feed_splits_carries_and_cuts() {
        // The pure line splitter, without a file: feed() does not touch `file`.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            append(&path, "");
            let mut tail = Tail::open(&path, false).await.unwrap();
            let mut batch = Batch::default();
            for piece in ["ab", "c\nd", "\n\n", "e\r\n"] {
                tail.feed(piece.as_bytes(), &mut batch);
            }
            let lines: Vec<_> = batch.lines().collect();
            assert_eq!(lines, ["abc", "d", "", "e"]);
            tail.feed(b"partial", &mut batch);
            tail.abandon_partial(&mut batch);
            assert_eq!(batch.cut(), 1);
            batch.clear();
            assert!(batch.is_empty());
        });
    }
}
