//! A bounded reader of the tar stream `restic dump SNAPSHOT DIR` writes, run by root on data
//! users wrote (their file names, their link targets): nothing in it may make root allocate
//! without bound or lose its place in the stream.
//!
//! The header block is parsed by the `tar` crate ([`tar::Header`]: ustar/GNU fields, the ustar
//! prefix, base-256 numbers, the checksum's fields); the entry loop is ours, because the crate's
//! own loop reads a GNU long name or a PAX header whole into memory whatever size it claims, and
//! its PAX record parser splits records at `\n` (a name holding a newline, which restic writes as
//! a PAX `path` when the name is also long or not ASCII, would be lost). Here:
//! - a GNU long name or link ('L', 'K') over [`MAX_NAME`] bytes, or a PAX header ('x', 'g') over
//!   [`MAX_PAX`], is read and thrown away, and the entry it describes comes out without a name
//!   (its data is skipped by the caller: an entry without a name matches nothing);
//! - PAX records are split by their length prefix, as POSIX defines them; `path`, `linkpath` and
//!   `size` are used, everything else (restic's xattrs and ACLs) ignored;
//! - a PAX `size` overrides the header's, as it must (restic writes files over 8 GiB so).
//!
//! What restic 0.14 and 0.18 write (checked on both): one entry per node below DIR, never DIR
//! itself, depth first in name order; names relative to `/` without a leading slash
//! (`home/a/f` for `/home/a/f`), directories with a trailing `/`; regular files as type '0', a
//! hard-linked file as another whole regular file (no type '1'), a fifo, socket or device as an
//! empty regular file (type '0', size 0), symlinks as '2' with their target; ustar headers,
//! PAX when a name is long or not ASCII, or for extended attributes; never GNU long names.

use std::io::{self, Read};

/// The longest GNU long name or link kept (the writer refuses longer record lines anyway).
pub const MAX_NAME: u64 = 64 * 1024;
/// The largest PAX header kept (restic puts a file's xattrs and ACLs there).
pub const MAX_PAX: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    HardLink,
    /// Devices, fifos, sparse files and anything else.
    Other,
}

/// One entry's header; its data follows through [`TarReader`]'s `Read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as the stream gives it, trailing `/` removed; `None` when it was over the bound.
    pub name: Option<Vec<u8>>,
    pub kind: EntryKind,
    pub size: u64,
    /// A symlink's (or hard link's) target.
    pub link: Option<Vec<u8>>,
}

/// Reads entries one by one; between two calls of [`TarReader::next`] the current entry's data
/// can be read (what is left unread is skipped).
pub struct TarReader<R> {
    inner: R,
    /// Data of the current entry not yet read, then its padding to the block.
    left: u64,
    pad: u64,
    ended: bool,
}

/// What the extension entries before an entry said about it.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    /// An extension was over its bound: the entry's name is not known.
    lost: bool,
    any: bool,
}

/// The zero bytes after `size` bytes of data that fill its last block: every entry's data, and
/// every extension header's, is followed by them.
fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("restic dump's tar stream: {msg}"),
    )
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            ended: false,
        }
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let got = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if got != n {
            return Err(bad("it ends in the middle of an entry"));
        }
        Ok(())
    }

    /// Reads `size` bytes (and the padding) when at most `cap`; skips them otherwise.
    fn read_bounded(&mut self, size: u64, cap: u64) -> io::Result<Option<Vec<u8>>> {
        let pad = padding(size);
        if size > cap {
            self.skip(size + pad)?;
            return Ok(None);
        }
        // `size` is at most `cap`, so it fits in usize.
        let mut v = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|_| bad("it ends in the middle of an extension header"))?;
        self.skip(pad)?;
        Ok(Some(v))
    }

    /// The next entry, or `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let rest = self.left + self.pad;
        self.skip(rest)?;
        (self.left, self.pad) = (0, 0);
        if self.ended {
            return Ok(None);
        }
        let mut p = Pending::default();
        loop {
            let mut block = [0u8; BLOCK as usize];
            self.inner
                .read_exact(&mut block)
                .map_err(|_| bad("it ends without its end-of-archive marker"))?;
            if block.iter().all(|b| *b == 0) {
                if p.any {
                    return Err(bad("an extension header describes no entry"));
                }
                self.ended = true;
                return Ok(None);
            }
            let h = tar::Header::from_byte_slice(&block);
            verify_checksum(h, &block)?;
            let et = h.entry_type();
            let size = h.entry_size()?;
            if et.is_gnu_longname() || et.is_gnu_longlink() {
                let v = self.read_bounded(size, MAX_NAME)?.map(|mut v| {
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    v
                });
                p.any = true;
                p.lost |= v.is_none();
                if et.is_gnu_longname() {
                    p.name = v;
                } else {
                    p.link = v;
                }
                continue;
            }
            if et.is_pax_local_extensions() || et.is_pax_global_extensions() {
                let v = self.read_bounded(size, MAX_PAX)?;
                if et.is_pax_local_extensions() {
                    p.any = true;
                    match v {
                        Some(v) => apply_pax(&v, &mut p)?,
                        None => p.lost = true,
                    }
                }
                continue;
            }
            let size = p.size.unwrap_or(size);
            let kind = kind_of(et);
            let name = if p.lost {
                None
            } else {
                let mut n = p.name.unwrap_or_else(|| h.path_bytes().into_owned());
                while n.len() > 1 && n.last() == Some(&b'/') {
                    n.pop();
                }
                Some(n)
            };
            let link = p
                .link
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()));
            self.left = size;
            self.pad = padding(size);
            return Ok(Some(Entry {
                name,
                kind,
                size,
                link,
            }));
        }
    }

    /// Reads whatever follows the end-of-archive marker (restic writes nothing more; a stream
    /// is drained so restic exits on its own rather than on a broken pipe).
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(&mut self.inner, &mut io::sink())
    }
}

impl<R: Read> Read for TarReader<R> {
    /// The current entry's data (0 at its end).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("it ends in the middle of a file"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record) split by their length, so a
/// value may hold `\n`.
fn apply_pax(mut data: &[u8], p: &mut Pending) -> io::Result<()> {
    let malformed = || bad("a PAX header is malformed");
    while !data.is_empty() {
        let sp = data.iter().position(|b| *b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or_else(malformed)?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        match key {
            b"path" => p.name = Some(value.to_vec()),
            b"linkpath" => p.link = Some(value.to_vec()),
            b"size" => {
                p.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(malformed)?,
                )
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}

/// Checks a header block's checksum (its own 8 bytes counted as spaces).
fn verify_checksum(h: &tar::Header, block: &[u8; BLOCK as usize]) -> io::Result<()> {
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * 32;
    if h.cksum()? != sum {
        return Err(bad("a header's checksum is wrong"));
    }
    Ok(())
}

/// What an entry of type `et` is.
fn kind_of(et: tar::EntryType) -> EntryKind {
    if et.is_dir() {
        EntryKind::Dir
    } else if et.is_file() || et.is_contiguous() {
        EntryKind::File
    } else if et.is_symlink() {
        EntryKind::Symlink
    } else if et.is_hard_link() {
        EntryKind::HardLink
    } else {
        EntryKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream the `tar` crate's builder writes (GNU long names for long paths).
    fn build(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn all(bytes: &[u8]) -> Vec<(Entry, Vec<u8>)> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            let mut d = Vec::new();
            r.read_to_end(&mut d).unwrap();
            out.push((e, d));
        }
        out
    }

    #[test]
    fn files_dirs_links_and_gnu_long_names() {
        let long = format!("d/{}/{}", "L".repeat(150), "n".repeat(200));
        let bytes = build(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, "d/", &[][..]).unwrap();
            file(b, "d/a", b"hello");
            file(b, &long, &[9u8; 1000]);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "d/l", "../a").unwrap();
        });
        let got = all(&bytes);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0.name.as_deref(), Some(&b"d"[..]));
        assert_eq!(got[0].0.kind, EntryKind::Dir);
        assert_eq!(
            (got[1].0.kind, got[1].1.as_slice()),
            (EntryKind::File, &b"hello"[..])
        );
        assert_eq!(got[2].0.name.as_deref(), Some(long.as_bytes()));
        assert_eq!(got[2].1, vec![9u8; 1000]);
        assert_eq!(got[3].0.kind, EntryKind::Symlink);
        assert_eq!(got[3].0.link.as_deref(), Some(&b"../a"[..]));
    }

    #[test]
    fn pax_path_with_a_newline_and_pax_size_are_honoured() {
        let name = "d/new\nline-caf\u{e9}";
        let bytes = build(|b| {
            b.append_pax_extensions([
                ("path", name.as_bytes()),
                ("SCHILY.xattr.user.x", &b"v\nw"[..]),
            ])
            .unwrap();
            file(b, "placeholder", b"abc");
        });
        let got = all(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.name.as_deref(), Some(name.as_bytes()));
        assert_eq!(got[0].1, b"abc");
    }

    #[test]
    fn oversized_long_names_and_pax_headers_are_skipped_not_kept() {
        let huge = "x".repeat(MAX_NAME as usize + 10);
        let bytes = build(|b| {
            file(b, &huge, b"skipped data");
            b.append_pax_extensions([(
                "SCHILY.xattr.user.big",
                vec![1u8; MAX_PAX as usize].as_slice(),
            )])
            .unwrap();
            file(b, "d/after-pax", b"also nameless");
            file(b, "d/ok", b"ok");
        });
        let got = all(&bytes);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.name, None);
        assert_eq!(got[1].0.name, None);
        // The stream stays in step: the next entry is read right.
        assert_eq!(got[2].0.name.as_deref(), Some(&b"d/ok"[..]));
        assert_eq!(got[2].1, b"ok");
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let bytes = build(|b| file(b, "d/a", &[5u8; 2000]));
        // Cut in the middle of the data.
        let mut r = TarReader::new(&bytes[..1200]);
        r.next_entry().unwrap().unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        // Cut before the end marker.
        let mut r = TarReader::new(&bytes[..512 + 2048]);
        r.next_entry().unwrap().unwrap();
        assert!(r.next_entry().is_err());
        // A flipped byte in a header.
        let mut b2 = bytes.clone();
        b2[10] ^= 1;
        assert!(TarReader::new(&b2[..]).next_entry().is_err());
    }

    #[test]
    fn padding_fills_the_last_block_and_no_more() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(700), 324);
    }

    #[test]
    fn a_pax_size_overrides_the_header() {
        // A header claiming 0 bytes with a PAX size of 700: the reader must take 700.
        let bytes = build(|b| {
            b.append_pax_extensions([("size", &b"700"[..])]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path("d/big").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        // Splice 700 bytes (+ padding) of data after the last header by hand.
        let end = bytes.len() - 1024;
        let mut s = bytes[..end].to_vec();
        s.extend(vec![3u8; 700]);
        s.extend(vec![0u8; 1024 - 700 % 512 + 1024 - 512]);
        let mut r = TarReader::new(&s[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.size, 700);
        let mut d = Vec::new();
        r.read_to_end(&mut d).unwrap();
        assert_eq!(d, vec![3u8; 700]);
        assert_eq!(r.next_entry().unwrap(), None);
    }
}
