//! A zip archive written as a stream in constant memory, for a folder's download.
//!
//! Entries are stored, not compressed (a folder download moves files, most of them compressed
//! already; storing keeps it at the speed of the disk). Each file's local header says its CRC-32
//! and sizes follow it, in a data descriptor, so a file is sent as it is read. Zip64 fields
//! appear where a size, an offset or the number of entries needs them (APPNOTE 6.3.10, 4.3.9
//! and 4.5.3). The central directory, one record per entry, must come last: it is kept in memory
//! up to [`HELD`] bytes and in an unnamed temporary file beyond, so a folder of millions of
//! files takes no more memory than a folder of ten (a general zip writer keeps several hundred
//! bytes per entry until the end).

use std::io::{self, Read, Seek, Write};

/// Bytes of central directory records kept in memory before they go to a temporary file.
pub const HELD: usize = 1 << 20;

/// Where a value no longer fits its 32- or 16-bit field and the zip64 one holds it.
const FULL_32: u64 = 0xFFFF_FFFF;
const FULL_16: u64 = 0xFFFF;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
const ZIP64_EXTRA: u16 = 0x0001;

/// General purpose flags: sizes and CRC in a data descriptor (bit 3), names in UTF-8 (bit 11).
const FLAGS_FILE: u16 = 0x0808;
const FLAGS_FOLDER: u16 = 0x0800;
/// Versions needed to extract: 2.0 (folders, plain files), 4.5 (zip64).
const VERSION_PLAIN: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Made by Unix (3), version 4.5: external attributes carry Unix modes.
const MADE_BY: u16 = 3 << 8 | VERSION_ZIP64;
/// `rw-r--r--` files and `rwxr-xr-x` folders (with the MS-DOS folder bit).
const MODE_FILE: u32 = 0o100_644 << 16;
const MODE_FOLDER: u32 = 0o040_755 << 16 | 0x10;

/// A time as a zip entry keeps it: MS-DOS time and date, local time in 2-second steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DosTime {
    pub time: u16,
    pub date: u16,
}

impl DosTime {
    /// `ns` since the epoch in the zone `tz`, clamped to what MS-DOS dates hold (1980–2107).
    pub fn from_ns(ns: i64, tz: &jiff::tz::TimeZone) -> Self {
        let Ok(t) = jiff::Timestamp::from_nanosecond(i128::from(ns)) else {
            return Self::default();
        };
        let d = t.to_zoned(tz.clone()).datetime();
        let (year, month, day, hour, minute, second) = if d.year() < 1980 {
            (1980, 1, 1, 0, 0, 0)
        } else if d.year() > 2107 {
            (2107, 12, 31, 23, 59, 58)
        } else {
            (
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second(),
            )
        };
        let field = |v: i8, shift: u16| (v as u16) << shift;
        Self {
            time: field(hour, 11) | field(minute, 5) | (second as u16 / 2),
            date: ((year - 1980) as u16) << 9 | field(month, 5) | day as u16,
        }
    }
}

/// The entry being written.
#[derive(Debug)]
struct Open {
    name: Box<str>,
    modified: DosTime,
    offset: u64,
    /// Whether its local header announced zip64 sizes (a file of 4 GiB or more).
    zip64: bool,
    crc: crc32fast::Hasher,
    size: u64,
}

/// One finished entry, as its central directory record says it.
#[derive(Debug)]
struct Finished<'a> {
    name: &'a str,
    modified: DosTime,
    folder: bool,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Where a central directory too large for memory goes: an unnamed file in `dir`, which may
/// take no more than `room` says is left (checked before each [`HELD`] bytes of it).
pub struct Spill {
    pub dir: std::path::PathBuf,
    pub room: Box<dyn Fn() -> u64 + Send>,
}

#[cfg(test)]
impl Spill {
    /// A spill into `dir` that never runs out of room.
    pub fn unbounded(dir: std::path::PathBuf) -> Spill {
        Spill {
            dir,
            room: Box::new(|| u64::MAX),
        }
    }
}

/// No room at all (what is left behind once a zip's directory has been written).
impl Default for Spill {
    fn default() -> Spill {
        Spill {
            dir: std::path::PathBuf::new(),
            room: Box::new(|| 0),
        }
    }
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill").field("dir", &self.dir).finish()
    }
}

/// The central directory as it grows: in memory, then in a temporary file in `spill`.
#[derive(Debug, Default)]
struct Central {
    spill: Spill,
    held: Vec<u8>,
    spilled: Option<io::BufWriter<std::fs::File>>,
    len: u64,
    /// Where the spill file may grow to before the room is asked again.
    checked_to: u64,
}

impl Central {
    fn push(&mut self, record: &[u8]) -> io::Result<()> {
        self.len += record.len() as u64;
        if self.spilled.is_some() && self.len > self.checked_to {
            self.check_room()?;
        }
        if let Some(file) = &mut self.spilled {
            return file.write_all(record);
        }
        self.held.extend_from_slice(record);
        if self.held.len() >= HELD {
            self.check_room()?;
            let mut file = io::BufWriter::new(tempfile::tempfile_in(&self.spill.dir)?);
            file.write_all(&self.held)?;
            self.held = Vec::new();
            self.spilled = Some(file);
        }
        Ok(())
    }

    /// Refuses to grow the spill file by another [`HELD`] bytes without that much room.
    fn check_room(&mut self) -> io::Result<()> {
        if (self.spill.room)() < HELD as u64 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the hub's disk has no room left (--keep-free) for this zip's list of files",
            ));
        }
        self.checked_to = self.len + HELD as u64;
        Ok(())
    }

    /// Writes the whole directory to `out`, through `buf`.
    fn copy_to(self, out: &mut impl Write, buf: &mut [u8]) -> io::Result<()> {
        if let Some(file) = self.spilled {
            let mut file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.rewind()?;
            loop {
                let n = file.read(buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
        }
        out.write_all(&self.held)
    }
}

/// A zip archive being written to `W`. Add folders with [`ZipStream::add_folder`]; for a file,
/// [`ZipStream::start_file`], write its bytes, then start the next or [`ZipStream::finish`].
#[derive(Debug)]
pub struct ZipStream<W: Write> {
    out: W,
    /// Bytes written to `out` so far: where the next entry starts.
    at: u64,
    entries: u64,
    open: Option<Open>,
    central: Central,
    scratch: Vec<u8>,
}

impl<W: Write> ZipStream<W> {
    /// A zip written to `out`, its central directory spilling past [`HELD`] bytes into an
    /// unnamed file (in the hub's state folder: on its disk, never a tmpfs).
    pub fn new(out: W, spill: Spill) -> Self {
        Self {
            out,
            at: 0,
            entries: 0,
            open: None,
            central: Central {
                spill,
                ..Central::default()
            },
            scratch: Vec::with_capacity(512),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        self.out.write_all(&self.scratch)?;
        self.at += self.scratch.len() as u64;
        self.scratch.clear();
        Ok(())
    }

    /// Adds folder `name`, which ends in `/`.
    pub fn add_folder(&mut self, name: &str, modified: DosTime) -> io::Result<()> {
        self.close_file()?;
        let offset = self.at;
        local_header(&mut self.scratch, name, modified, FLAGS_FOLDER, false);
        self.emit()?;
        self.record(&Finished {
            name,
            modified,
            folder: true,
            crc: 0,
            size: 0,
            offset,
        })
    }

    /// Starts file `name` of `size` bytes (what decides whether it needs zip64 sizes); its
    /// bytes are then written to `self`, exactly `size` of them.
    pub fn start_file(&mut self, name: &str, modified: DosTime, size: u64) -> io::Result<()> {
        self.close_file()?;
        let zip64 = size >= FULL_32;
        let offset = self.at;
        local_header(&mut self.scratch, name, modified, FLAGS_FILE, zip64);
        self.emit()?;
        self.open = Some(Open {
            name: name.into(),
            modified,
            offset,
            zip64,
            crc: crc32fast::Hasher::new(),
            size: 0,
        });
        Ok(())
    }

    /// Ends the open file, if any: its data descriptor, then its central record.
    fn close_file(&mut self) -> io::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if !open.zip64 && open.size >= FULL_32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} grew past 4 GiB while it was zipped", open.name),
            ));
        }
        let crc = open.crc.finalize();
        self.scratch
            .extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
        self.scratch.extend_from_slice(&crc.to_le_bytes());
        for _ in 0..2 {
            // Compressed and uncompressed sizes: the same, stored.
            if open.zip64 {
                self.scratch.extend_from_slice(&open.size.to_le_bytes());
            } else {
                self.scratch
                    .extend_from_slice(&(open.size as u32).to_le_bytes());
            }
        }
        self.emit()?;
        self.record(&Finished {
            name: &open.name,
            modified: open.modified,
            folder: false,
            crc,
            size: open.size,
            offset: open.offset,
        })
    }

    fn record(&mut self, f: &Finished<'_>) -> io::Result<()> {
        let mut record = std::mem::take(&mut self.scratch);
        central_record(&mut record, f);
        let pushed = self.central.push(&record);
        record.clear();
        self.scratch = record;
        self.entries += 1;
        pushed
    }

    /// Ends the archive: the open file, the central directory, the end records. Returns the
    /// writer.
    pub fn finish(mut self, buf: &mut [u8]) -> io::Result<W> {
        self.close_file()?;
        let start = self.at;
        let len = self.central.len;
        let central = std::mem::take(&mut self.central);
        central.copy_to(&mut self.out, buf)?;
        self.at += len;
        end_records(&mut self.scratch, self.entries, start, len, self.at);
        self.emit()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ZipStream<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(open) = &mut self.open else {
            return Err(io::Error::other("no file started in the zip"));
        };
        self.out.write_all(data)?;
        open.crc.update(data);
        open.size += data.len() as u64;
        self.at += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A 32-bit field, or all ones when the zip64 extra field holds the value.
fn field32(v: u64) -> u32 {
    if v >= FULL_32 {
        u32::MAX
    } else {
        v as u32
    }
}

/// A local file header. CRC and sizes are zero (they follow in the data descriptor); a file
/// announced as zip64 says so with all-ones sizes and a zip64 extra field of zeros.
fn local_header(out: &mut Vec<u8>, name: &str, modified: DosTime, flags: u16, zip64: bool) {
    put32(out, LOCAL_HEADER);
    put16(out, if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN });
    put16(out, flags);
    put16(out, 0); // stored
    put16(out, modified.time);
    put16(out, modified.date);
    put32(out, 0);
    let size = if zip64 { u32::MAX } else { 0 };
    put32(out, size);
    put32(out, size);
    put16(out, name.len() as u16);
    put16(out, if zip64 { 20 } else { 0 });
    out.extend_from_slice(name.as_bytes());
    if zip64 {
        put16(out, ZIP64_EXTRA);
        put16(out, 16);
        put64(out, 0);
        put64(out, 0);
    }
}

/// A central directory record; its zip64 extra field holds, in the order APPNOTE gives, each
/// of the sizes and the offset that its 32-bit field cannot.
fn central_record(out: &mut Vec<u8>, f: &Finished<'_>) {
    let mut extra = Vec::new();
    for v in [f.size, f.size, f.offset] {
        if v >= FULL_32 {
            extra.extend_from_slice(&v.to_le_bytes());
        }
    }
    put32(out, CENTRAL_HEADER);
    put16(out, MADE_BY);
    put16(
        out,
        if extra.is_empty() {
            VERSION_PLAIN
        } else {
            VERSION_ZIP64
        },
    );
    put16(out, if f.folder { FLAGS_FOLDER } else { FLAGS_FILE });
    put16(out, 0);
    put16(out, f.modified.time);
    put16(out, f.modified.date);
    put32(out, f.crc);
    put32(out, field32(f.size));
    put32(out, field32(f.size));
    put16(out, f.name.len() as u16);
    put16(
        out,
        if extra.is_empty() {
            0
        } else {
            4 + extra.len() as u16
        },
    );
    put16(out, 0); // comment
    put16(out, 0); // disk
    put16(out, 0); // internal attributes
    put32(out, if f.folder { MODE_FOLDER } else { MODE_FILE });
    put32(out, field32(f.offset));
    out.extend_from_slice(f.name.as_bytes());
    if !extra.is_empty() {
        put16(out, ZIP64_EXTRA);
        put16(out, extra.len() as u16);
        out.extend_from_slice(&extra);
    }
}

/// The end of the archive: zip64's end record and locator when the count, the directory's
/// size or its offset needs them, then the classic end record.
fn end_records(out: &mut Vec<u8>, entries: u64, start: u64, len: u64, here: u64) {
    let zip64 = entries >= FULL_16 || start >= FULL_32 || len >= FULL_32;
    if zip64 {
        put32(out, ZIP64_END);
        put64(out, 44);
        put16(out, MADE_BY);
        put16(out, VERSION_ZIP64);
        put32(out, 0);
        put32(out, 0);
        put64(out, entries);
        put64(out, entries);
        put64(out, len);
        put64(out, start);
        put32(out, ZIP64_LOCATOR);
        put32(out, 0);
        put64(out, here);
        put32(out, 1);
    }
    let count = entries.min(FULL_16) as u16;
    put32(out, END);
    put16(out, 0);
    put16(out, 0);
    put16(out, count);
    put16(out, count);
    put32(out, field32(len));
    put32(out, field32(start));
    put16(out, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An entry to zip: a folder, or a file and its bytes.
    #[derive(Debug, Clone)]
    enum Item {
        Folder(String),
        File(String, Vec<u8>),
    }

    fn zipped(items: &[Item]) -> Vec<u8> {
        let mut z = ZipStream::new(Vec::new(), Spill::unbounded(std::env::temp_dir()));
        let t = DosTime::from_ns(1_700_000_000_000_000_000, &jiff::tz::TimeZone::UTC);
        for item in items {
            match item {
                Item::Folder(name) => z.add_folder(name, t).unwrap(),
                Item::File(name, data) => {
                    z.start_file(name, t, data.len() as u64).unwrap();
                    // In uneven pieces, as a file is read.
                    for chunk in data.chunks(7) {
                        z.write_all(chunk).unwrap();
                    }
                }
            }
        }
        z.finish(&mut [0u8; 4096]).unwrap()
    }

    /// What a general zip reader finds: each entry's name and bytes, in order.
    fn read_back(bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(io::Cursor::new(bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut e = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                // Reading to the end checks the CRC-32.
                e.read_to_end(&mut data).unwrap();
                (e.name().to_owned(), data)
            })
            .collect()
    }

    fn item() -> impl Strategy<Value = Item> {
        let name = "[a-z0-9 çã%]{1,12}(/[a-z0-9]{1,8}){0,2}";
        prop_oneof![
            name.prop_map(|n| Item::Folder(format!("{n}/"))),
            (name, proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(n, d)| Item::File(n, d)),
        ]
    }

    proptest! {
        #[test]
        fn any_folder_reads_back_whole(items in proptest::collection::vec(item(), 0..20)) {
            // A folder's names are unique.
            let items: Vec<Item> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Item::Folder(n) => Item::Folder(format!("{i}{n}")),
                    Item::File(n, d) => Item::File(format!("{i}{n}"), d),
                })
                .collect();
            let got = read_back(zipped(&items));
            let want: Vec<(String, Vec<u8>)> = items
                .iter()
                .map(|i| match i {
                    Item::Folder(n) => (n.clone(), Vec::new()),
                    Item::File(n, d) => (n.clone(), d.clone()),
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn more_than_65535_entries_take_zip64_end_records_and_spill_the_directory() {
        let items: Vec<Item> = (0..70_000)
            .map(|i| Item::File(format!("f/{i:05}.txt"), i.to_string().into_bytes()))
            .collect();
        let bytes = zipped(&items);
        assert!(
            bytes.windows(4).any(|w| w == ZIP64_END.to_le_bytes()),
            "a zip64 end record"
        );
        let got = read_back(bytes);
        assert_eq!(got.len(), 70_000);
        assert_eq!(got[69_999], ("f/69999.txt".to_owned(), b"69999".to_vec()));
    }

    /// The directory's spill file grows only while the disk has room for its next MiB: asked
    /// before it is made, and again each MiB after.
    #[test]
    fn a_spilled_directory_stops_at_the_room_left() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let zip_of = |rooms: Vec<u64>| {
            let asked = std::sync::Arc::new(AtomicU64::new(0));
            let counted = std::sync::Arc::clone(&asked);
            let room = move || {
                let i = counted.fetch_add(1, Ordering::Relaxed) as usize;
                rooms.get(i).copied().unwrap_or(0)
            };
            let spill = Spill {
                dir: std::env::temp_dir(),
                room: Box::new(room),
            };
            let mut z = ZipStream::new(io::sink(), spill);
            let t = DosTime::default();
            let made = (0..70_000).try_for_each(|i| z.add_folder(&format!("f/{i:05}/"), t));
            let finished = made.and_then(|()| z.finish(&mut [0u8; 4096]).map(drop));
            (finished, asked.load(Ordering::Relaxed))
        };
        let (full, asked) = zip_of(vec![0]);
        assert_eq!(full.unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(asked, 1, "refused before the spill file was made");
        let (later, asked) = zip_of(vec![u64::MAX, 0]);
        assert_eq!(later.unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(asked, 2, "refused a MiB later");
        let (whole, asked) = zip_of(vec![u64::MAX; 10]);
        whole.unwrap();
        assert!(
            (2..10).contains(&asked),
            "asked {asked} times for a few MiB"
        );
    }

    #[test]
    fn dos_times_are_local_in_two_second_steps_and_clamped() {
        let utc = jiff::tz::TimeZone::UTC;
        // 2026-12-05 13:45:59 UTC.
        let t = DosTime::from_ns(1_796_478_359_000_000_000, &utc);
        assert_eq!(t.date, (46 << 9) | (12 << 5) | 5);
        assert_eq!(t.time, (13 << 11) | (45 << 5) | 29);
        assert_eq!(DosTime::from_ns(0, &utc).date, (1 << 5) | 1, "1980-01-01");
    }

    #[test]
    fn a_file_that_grows_past_what_its_header_said_is_refused() {
        let mut z = ZipStream::new(io::sink(), Spill::unbounded(std::env::temp_dir()));
        z.start_file("a", DosTime::default(), 1).unwrap();
        z.open.as_mut().unwrap().size = FULL_32;
        let err = z.finish(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
