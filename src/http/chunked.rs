//! Decoding a chunked request body (RFC 9112 §7.1).
//!
//! ```text
//! 5\r\nhello\r\n        a chunk: its size in hex, the line end, the data, the line end
//! 6;ext=1\r\n world\r\n  extensions after `;` are allowed and ignored
//! 0\r\n                 the last chunk
//! Trailer: x\r\n        trailer fields (dropped: the balancer does not forward trailers)
//! \r\n                  the end
//! ```
//! decodes to `hello world`.
//!
//! Strict where lenience has been a request-smuggling vector: every line ends in CRLF (a bare
//! LF is an error), a size is hex digits that fit 64 bits (leading zeros allowed, as RFC 9112
//! §7.1's `1*HEXDIG` does; no sign, no `0x`, no overflow), only spaces or tabs may stand
//! between the size and `;`, and the data must be followed by exactly CRLF.
//! A size line over [`MAX_LINE`] bytes or trailers over [`MAX_TRAILERS`] bytes are errors too,
//! so a client cannot make the balancer buffer without limit.

use std::io::{self, BufRead};

/// Longest chunk-size line, extensions included. 4 KiB.
pub const MAX_LINE: usize = 4 << 10;

/// Most bytes of trailer fields. 16 KiB (the head limit's default).
pub const MAX_TRAILERS: usize = 16 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, reading trailer lines; this many trailer bytes so far.
    Trailers(usize),
    /// The body ended.
    Done,
}

/// Decodes a chunked body, stopping at the body's end: what follows it (a pipelined request) is
/// left unread. Two ways to drive it: [`ChunkedDecoder::read`] pulls from a `BufRead` it is
/// handed on each call (a worker streaming the body from the client), and
/// [`ChunkedDecoder::feed`] is given whatever bytes have arrived (the poller buffering a body).
/// A line cut between two arrivals is kept until the rest comes.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad chunked body: {why}"),
    )
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
        }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads one CRLF-terminated line of at most `max` bytes into `self.line`, without the CRLF,
    /// adding to what an earlier call that ran out of input left there. The caller clears
    /// `self.line` once it has used the line.
    fn read_line(&mut self, inner: &mut impl BufRead, max: usize) -> io::Result<()> {
        loop {
            let buf = inner.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed inside a chunked body",
                ));
            }
            let (take, found) = match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > max {
                return Err(invalid("line too long"));
            }
            self.line.extend_from_slice(&buf[..take]);
            inner.consume(take);
            if found {
                return match self.line.strip_suffix(b"\r\n") {
                    Some(content) => {
                        let len = content.len();
                        self.line.truncate(len);
                        Ok(())
                    }
                    None => Err(invalid("line not ended by CRLF")),
                };
            }
        }
    }
}

/// Parses a chunk-size line (without its CRLF): hex digits, then optionally spaces or tabs
/// and `;` extensions. Leading zeros do not count towards the 16 digits a 64-bit size has
/// (the line's length is bounded by [`MAX_LINE`]).
fn parse_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let zeros = line[..digits].iter().take_while(|&&b| b == b'0').count();
    if digits == 0 || digits - zeros > 16 {
        return Err(invalid("bad chunk size"));
    }
    let rest = &line[digits..];
    let after_ws = rest.iter().position(|&b| b != b' ' && b != b'\t');
    match after_ws.map(|i| rest[i]) {
        None | Some(b';') => {}
        Some(_) => return Err(invalid("bad chunk size")),
    }
    if line.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(invalid("control character in a chunk extension"));
    }
    let hex = std::str::from_utf8(&line[zeros..digits]).map_err(|_| invalid("bad chunk size"))?;
    if hex.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))
}

impl ChunkedDecoder {
    /// Reads decoded data from `inner` into `out`; `Ok(0)` once the body has ended.
    pub fn read(&mut self, inner: &mut impl BufRead, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Data(left) => {
                    if out.is_empty() {
                        return Ok(0);
                    }
                    let buf = inner.fill_buf()?;
                    if buf.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "client closed inside a chunk",
                        ));
                    }
                    let n = buf
                        .len()
                        .min(out.len())
                        .min(left.min(usize::MAX as u64) as usize);
                    out[..n].copy_from_slice(&buf[..n]);
                    inner.consume(n);
                    self.data_taken(left, n);
                    return Ok(n);
                }
                _ => self.line_step(inner)?,
            }
        }
    }

    /// Decodes the bytes that have arrived, handing each piece of data to `sink`, and returns
    /// how many of them it used: all, unless the body ended among them (the rest is what the
    /// client sent next). A line cut off at the end of `input` waits in the decoder for the
    /// next call; [`ChunkedDecoder::is_done`] tells when the body has ended.
    pub fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<usize> {
        let mut rest = input;
        while !rest.is_empty() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let n = rest.len().min(left.min(usize::MAX as u64) as usize);
                    sink(&rest[..n])?;
                    rest = &rest[n..];
                    self.data_taken(left, n);
                }
                _ => match self.line_step(&mut rest) {
                    Ok(()) => {}
                    // Out of input inside a line: the part read waits in `self.line`.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && rest.is_empty() => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(input.len() - rest.len())
    }

    fn data_taken(&mut self, left: u64, n: usize) {
        let left = left - n as u64;
        self.state = if left == 0 {
            State::DataEnd
        } else {
            State::Data(left)
        };
    }

    /// Reads the one line the state expects (a size, the end of a chunk's data, or a trailer)
    /// and moves on.
    fn line_step(&mut self, inner: &mut impl BufRead) -> io::Result<()> {
        match self.state {
            State::Size => {
                self.read_line(inner, MAX_LINE)?;
                let n = parse_size(&self.line)?;
                self.state = if n == 0 {
                    State::Trailers(0)
                } else {
                    State::Data(n)
                };
            }
            State::DataEnd => {
                self.read_line(inner, 2)?;
                if !self.line.is_empty() {
                    return Err(invalid("chunk data longer than its size"));
                }
                self.state = State::Size;
            }
            State::Trailers(seen) => {
                self.read_line(inner, MAX_TRAILERS - seen)?;
                let seen = seen + self.line.len() + 2;
                if self.line.is_empty() {
                    self.state = State::Done;
                } else if seen >= MAX_TRAILERS {
                    return Err(invalid("trailers too large"));
                } else {
                    self.state = State::Trailers(seen);
                }
            }
            State::Data(_) | State::Done => {}
        }
        self.line.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` read `step` bytes at a time: the data and what followed the body, or the
    /// error's kind.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), io::ErrorKind> {
        crate::http::fuzz::decode(wire, step, 7)
    }

    #[test]
    fn decodes_the_example_at_any_read_size() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n";
        for step in 1..wire.len() {
            let (data, rest) = decode(wire, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n", "step {step}");
        }
        let (data, _) = decode(b"A \t;x\r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn feeding_pieces_of_any_size_gives_the_same_body() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n";
        for step in 1..wire.len() {
            let mut d = ChunkedDecoder::new();
            let mut data = Vec::new();
            let mut used = 0;
            for piece in wire.chunks(step) {
                if d.is_done() {
                    break;
                }
                used += d
                    .feed(piece, &mut |p| {
                        data.extend_from_slice(p);
                        Ok(())
                    })
                    .unwrap();
            }
            assert!(d.is_done(), "step {step}");
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(&wire[used..], b"GET / HTTP/1.1\r\n", "step {step}");
        }
        let mut d = ChunkedDecoder::new();
        let e = d.feed(b"5\r\nhelloXYZ", &mut |_| Ok(())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn leading_zeros_do_not_count_towards_the_size_limit() {
        let wire = b"0000000000000000000005\r\nhello\r\n00000000000000000000\r\n\r\n";
        assert_eq!(decode(wire, 64).unwrap().0, b"hello");
        assert_eq!(parse_size(b"00").unwrap(), 0);
        assert_eq!(parse_size(b"0000ffffffffffffffff").unwrap(), u64::MAX);
        // 17 significant digits overflow 64 bits, leading zeros or not.
        assert!(parse_size(b"00010000000000000000").is_err());
        assert!(parse_size(b"10000000000000000").is_err());
    }

    #[test]
    fn refuses_what_could_be_read_two_ways() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"0\r\nTrailer: x\n\r\n",
        ] {
            let e = decode(bad, 64).unwrap_err();
            assert_eq!(
                e,
                io::ErrorKind::InvalidData,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_early_end_is_an_unexpected_eof() {
        for cut in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n",
            b"5",
        ] {
            let e = decode(cut, 64).unwrap_err();
            assert_eq!(e, io::ErrorKind::UnexpectedEof, "{cut:?}");
        }
    }

    #[test]
    fn long_lines_and_trailers_are_refused() {
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_LINE));
        assert_eq!(
            decode(long_ext.as_bytes(), 512).unwrap_err(),
            io::ErrorKind::InvalidData
        );
        let trailers: String = (0..2000).map(|i| format!("T{i}: vvvvvvvv\r\n")).collect();
        let wire = format!("0\r\n{trailers}\r\n");
        assert_eq!(
            decode(wire.as_bytes(), 512).unwrap_err(),
            io::ErrorKind::InvalidData
        );
        // The largest size parses; the body then ends early.
        let max = format!("{}\r\n", "f".repeat(16));
        assert_eq!(
            decode(max.as_bytes(), 64).unwrap_err(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
