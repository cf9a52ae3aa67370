//! Property tests for the parts that read what clients send: the head parser and the chunked
//! decoder, driven with random and mutated input from a seeded generator (so a failure can be
//! replayed). Properties:
//!
//! - Nothing panics, whatever the bytes.
//! - The parser's outcome is a complete head inside the buffer, "wait for more", or a refusal
//!   with an error status; fed the same bytes in random pieces (as reads deliver them) it comes
//!   to the same head, or refuses too.
//! - The decoder gives back exactly the data of a valid encoding, at any read size, leaving
//!   what follows the body unread; on mutated input it returns data or an error, never more
//!   than was sent, and the same at any read size.

use std::io::{self, BufRead, Read};
use std::net::Ipv4Addr;

use super::chunked::ChunkedDecoder;
use super::limits::Limits;
use super::parse::{parse_head, Parsed};

/// xorshift64*: small, seeded, good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that matter to HTTP framing, favoured by the mutations.
const SPECIAL: &[u8] = b"\r\n\0 \t:;,=-0123456789abcdefABCDEF\x7f\xff";

/// A copy of `seed` with a few random edits: flips, special bytes, cuts, repeats.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = *rng.pick(SPECIAL),
            2 => out.insert(at, *rng.pick(SPECIAL)),
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let piece = out[at.min(end)..end].to_vec();
                let times = 1 + rng.below(3);
                for _ in 0..times {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let n = rng.below(out.len() + 1);
                out.truncate(n);
            }
        }
    }
    out
}

const HEADS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a/b?c=d&e HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\n\n",
];

fn limits() -> Limits {
    Limits {
        max_request_line: 64,
        max_head: 256,
        max_headers: 8,
        ..Limits::default()
    }
}

/// The parser's verdict on `buf`, fed in pieces ending at `cuts` (then whole).
fn verdict(buf: &[u8], cuts: &[usize]) -> Result<Option<(usize, String, String)>, u16> {
    let limits = limits();
    let client = Ipv4Addr::LOCALHOST.into();
    let mut scanned = 0;
    for &cut in cuts.iter().chain(std::iter::once(&buf.len())) {
        match parse_head(&buf[..cut], scanned, client, &limits) {
            Ok(Parsed::Partial) => scanned = cut,
            Ok(Parsed::Complete { head, len, .. }) => {
                assert!(len <= cut, "a head longer than the bytes: {len} > {cut}");
                return Ok(Some((len, head.method, head.target)));
            }
            Err(refusal) => {
                assert!(
                    matches!(refusal.status, 400 | 414 | 431 | 505),
                    "status {} for {buf:?}",
                    refusal.status
                );
                assert!(!refusal.reason.is_empty());
                return Err(refusal.status);
            }
        }
    }
    Ok(None)
}

#[test]
fn the_head_parser_never_panics_and_reads_alike_in_any_pieces() {
    let mut rng = Rng(0x5eed_0001);
    for case in 0..20_000 {
        let seed = rng.pick(HEADS).as_bytes();
        let buf = if case % 10 == 0 {
            // Now and then pure noise, from the special bytes and anything else.
            (0..rng.below(300))
                .map(|_| {
                    if rng.below(2) == 0 {
                        *rng.pick(SPECIAL)
                    } else {
                        rng.next() as u8
                    }
                })
                .collect()
        } else {
            mutate(&mut rng, seed)
        };
        let whole = verdict(&buf, &[]);
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(buf.len() + 1))
            .collect();
        cuts.sort();
        let pieces = verdict(&buf, &cuts);
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "case {case}: {buf:?} cut at {cuts:?}"),
            (Err(_), Err(_)) => {}
            // A refusal for a too-long line can come before the rest shows a complete head
            // only if that head is itself over the limit, which the whole read refuses too.
            _ => panic!("case {case}: {whole:?} whole, {pieces:?} in pieces at {cuts:?}: {buf:?}"),
        }
    }
}

/// A source that hands out at most `step` bytes per fill, like short socket reads.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes `wire` with reads of `step` bytes and output pieces of `piece` bytes: the data and
/// what followed the body, or the error's kind. (The decoder's own tests use it too.)
pub(super) fn decode(
    wire: &[u8],
    step: usize,
    piece: usize,
) -> Result<(Vec<u8>, Vec<u8>), io::ErrorKind> {
    let mut source = io::BufReader::with_capacity(
        step,
        Trickle {
            data: wire,
            pos: 0,
            step,
        },
    );
    let mut decoder = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut out = vec![0u8; piece];
    loop {
        match decoder.read(&mut source, &mut out) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&out[..n]),
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ),
                    "{e}"
                );
                return Err(e.kind());
            }
        }
        assert!(data.len() <= wire.len(), "more data than bytes sent");
    }
    assert!(decoder.is_done());
    let mut rest = source.buffer().to_vec();
    source.consume(rest.len());
    source.read_to_end(&mut rest).unwrap();
    Ok((data, rest))
}

/// A valid chunked encoding of `data`, in random chunks with random extensions and trailers.
fn encode(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = (1 + rng.below(40)).min(data.len() - at);
        let size = if rng.below(2) == 0 {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        wire.extend_from_slice(size.as_bytes());
        match rng.below(3) {
            0 => wire.extend_from_slice(b";name=value"),
            1 => wire.extend_from_slice(b" \t;flag"),
            _ => {}
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&data[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    wire.extend_from_slice(b"0\r\n");
    for i in 0..rng.below(3) {
        wire.extend_from_slice(format!("Trailer-{i}: v\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

#[test]
fn the_chunked_decoder_gives_back_the_data_or_an_error_never_a_panic() {
    let mut rng = Rng(0x5eed_0002);
    let next_request = b"GET /next HTTP/1.1\r\n";
    for case in 0..5_000 {
        let data: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        let mut wire = encode(&mut rng, &data);
        wire.extend_from_slice(next_request);
        let (step, piece) = (1 + rng.below(64), 1 + rng.below(64));
        let (got, rest) = decode(&wire, step, piece)
            .unwrap_or_else(|e| panic!("case {case}: valid encoding refused: {e:?}"));
        assert_eq!(got, data, "case {case}");
        assert_eq!(rest, next_request, "case {case}");

        let mutated = mutate(&mut rng, &wire);
        let a = decode(&mutated, step, piece);
        let b = decode(&mutated, 1 + rng.below(64), 1 + rng.below(64));
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "case {case}: read sizes changed the data"),
            (Err(x), Err(y)) => assert_eq!(x, y, "case {case}"),
            _ => panic!("case {case}: {a:?} vs {b:?} for {mutated:?}"),
        }
    }
}
