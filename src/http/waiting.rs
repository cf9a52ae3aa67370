//! What the poller holds for a connection that waits on its client rather than on a worker:
//! an [`Upload`], a request whose body is still arriving, and a [`Flush`], an answer the client
//! has not taken all of yet. Both cost a buffer ([`Spool`]) and a descriptor, never a thread.

use std::io;
use std::time::Instant;

use super::chunked::ChunkedDecoder;
use super::connection::Conn;
use super::exchange::Fate;
use super::parse::Framing;
use super::spool::{Full, Spool};
use super::write::Refusal;
use super::{Notify, RefusalCause, Request};

/// A request whose body the poller is reading into a spool.
pub(super) struct Upload {
    pub conn: Box<Conn>,
    pub request: Request,
    spool: Spool,
    /// Bytes still to come (`Content-Length`).
    left: u64,
    /// The decoder of a chunked body.
    chunked: Option<ChunkedDecoder>,
    /// Most body bytes accepted (`limits max_body=`, if set).
    max: u64,
    /// When the head was complete: the body must be in by `timeouts body=` after.
    pub started: Instant,
    /// When the last bytes of it arrived: a pause of `timeouts client=` ends it too.
    pub last_read: Instant,
}

impl Upload {
    /// Starts reading the body of `request` (its framing is a length or chunked) into `spool`,
    /// accepting at most `max` bytes.
    pub fn new(conn: Box<Conn>, request: Request, spool: Spool, max: u64, now: Instant) -> Upload {
        Upload {
            left: match request.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: (request.framing == Framing::Chunked).then(ChunkedDecoder::new),
            spool,
            conn,
            request,
            max,
            started: now,
            last_read: now,
        }
    }

    /// True once the whole body has arrived.
    pub fn done(&self) -> bool {
        match &self.chunked {
            Some(decoder) => decoder.is_done(),
            None => self.left == 0,
        }
    }

    /// Takes what arrived of the body; returns how many bytes of `data` belong to it (the rest
    /// is what the client sends next), or the answer that refuses the request.
    pub fn take(&mut self, data: &[u8]) -> Result<usize, (Refusal, RefusalCause)> {
        let (spool, max) = (&mut self.spool, self.max);
        let mut refused = None;
        let used = match &mut self.chunked {
            Some(decoder) => decoder.feed(data, &mut |piece| {
                store(spool, max, piece).map_err(|r| {
                    refused = Some(r);
                    io::Error::other("refused")
                })
            }),
            None => {
                let n = data.len().min(self.left.min(usize::MAX as u64) as usize);
                store(spool, max, &data[..n])?;
                self.left -= n as u64;
                Ok(n)
            }
        };
        used.map_err(|e| {
            refused.unwrap_or_else(|| {
                let refusal = Refusal::new(400, e.to_string()).coded("bad_chunk");
                (refusal, RefusalCause::Malformed)
            })
        })
    }

    /// The whole request, once [`Upload::done`]: its connection with `rest` (what the client
    /// sent after the body) put back as the start of its next request, the request framed by
    /// the length of the body as buffered (a chunked body is decoded), and the body.
    pub fn finish(self, rest: &[u8], now: Instant) -> (Box<Conn>, Request, Spool) {
        let Upload {
            mut conn,
            mut request,
            spool,
            ..
        } = self;
        conn.put_back(rest);
        request.framing = match spool.len() {
            0 => Framing::None,
            n => Framing::Length(n),
        };
        request.received = now;
        (conn, request, spool)
    }
}

/// Refuses a body announced or found to be over `limits max_body=`.
pub(super) fn too_large() -> (Refusal, RefusalCause) {
    let refusal = Refusal::new(413, "request body too large").coded("body_too_large");
    (refusal, RefusalCause::BodyTooLarge)
}

/// Refuses a body larger than one temporary file may be (`buffers temp_file=`).
pub(super) fn too_large_for_buffers() -> (Refusal, RefusalCause) {
    let refusal = Refusal::new(413, "request body larger than the buffers allow");
    (refusal.coded("body_too_large"), RefusalCause::BodyTooLarge)
}

/// Adds a piece of body to `spool`, within `max` bytes and the buffers' limits.
fn store(spool: &mut Spool, max: u64, piece: &[u8]) -> Result<(), (Refusal, RefusalCause)> {
    if spool.len() + piece.len() as u64 > max {
        return Err(too_large());
    }
    spool.push(piece).map_err(|full| match full {
        Full::FileLimit => too_large_for_buffers(),
        Full::TotalLimit | Full::Disk(_) => (
            Refusal::retry_after(503, "no room to buffer the request body", 1).coded("buffer_full"),
            RefusalCause::NoBufferRoom,
        ),
    })
}

/// An answer the poller finishes for a client that did not take it all at once.
pub(super) struct Flush {
    pub conn: Box<Conn>,
    pub out: Spool,
    /// What happens once it is out.
    pub then: Fate,
    /// When the client last took a byte.
    pub progress: Instant,
    /// Told how the answer ended when this is dropped.
    pub notify: Notify,
}
