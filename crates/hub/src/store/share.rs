//! Where remote names meet the filesystem. Names arrive already checked by
//! [`RemoteName::parse`]; this module adds what a string check cannot see: symbolic links, and
//! folders swapped for links while a request is in flight.
//!
//! Every operation is relative to descriptors, never a path string resolved twice: the shared
//! folder is held open, every lookup beneath it is one `openat2(RESOLVE_BENEATH)` (the kernel
//! refuses any step that would leave the folder, including through a link swapped in meanwhile),
//! and uploads and deletes act with `renameat2`/`unlinkat`/`mkdirat` on the parent folder's
//! descriptor obtained the same way. Links that stay inside the share are followed; the state
//! folder is never reached, through a link or otherwise.

use super::{FindQuery, ListPage, ListQuery, Matches};
use crate::error::HubError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use troca_proto::msg::Entry;
use troca_proto::RemoteName;

/// How deep [`Share::list`] descends. Deeper files are still served by name.
pub const MAX_LIST_DEPTH: usize = 128;

/// Resolution beneath the root that may follow links (inside the root only).
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);
/// The same, refusing links: one call settles the common case without asking for the real path.
const BENEATH_NO_LINKS: ResolveFlags = BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// The shared folder.
#[derive(Debug)]
pub struct Share {
    root: PathBuf,
    state: PathBuf,
    /// The state folder relative to the root, when it is inside it.
    state_rel: Option<String>,
    /// The root, held open: every lookup starts here.
    root_dir: OwnedFd,
    /// Names kept out of sight (`serve --hide`): a link that leads to one is not listed.
    hidden: std::sync::Arc<crate::hidden::Hidden>,
}

/// A descriptor opened beneath the root, with the real path it had when opened.
#[derive(Debug)]
struct Opened {
    fd: OwnedFd,
    path: PathBuf,
}

/// Where a name lives: its parent folder, held open, and its last component. Uploads and deletes
/// act on the folder's descriptor, so swapping a folder on the way for a link after the lookup
/// changes nothing.
#[derive(Debug)]
pub struct Slot {
    /// Shared by the slots of one folder within a batch ([`Slot::sibling`]).
    dir: std::sync::Arc<OwnedFd>,
    dir_path: PathBuf,
    last: String,
}

impl Slot {
    /// The real path of the entry (for tests; never used to reach the file).
    #[cfg(test)]
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.last)
    }

    /// What is at the name now, without following a link: `None` if nothing.
    pub fn kind(&self) -> io::Result<Option<FileType>> {
        Ok(self.seen()?.map(|(kind, _)| kind))
    }

    /// The size and modification time of what the name holds (not following a link).
    pub fn version(&self) -> io::Result<super::Version> {
        let st = rustix::fs::statat(&self.dir, self.last.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(version_of_stat(&st))
    }

    /// What is at the name now, without following a link, and the version of a regular file
    /// there, in one look.
    pub fn seen(&self) -> io::Result<Option<(FileType, Option<super::Version>)>> {
        match rustix::fs::statat(&self.dir, self.last.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let kind = FileType::from_raw_mode(st.st_mode);
                let version = (kind == FileType::RegularFile).then(|| version_of_stat(&st));
                Ok(Some((kind, version)))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the entry (a link itself, not what it points to).
    pub fn remove(&self) -> io::Result<()> {
        rustix::fs::unlinkat(&self.dir, self.last.as_str(), AtFlags::empty())?;
        Ok(())
    }

    /// Moves the finished file at `part` (in the hub's state folder) under this name, durably:
    /// without replacing an existing entry unless `replace`, then fsyncs the folder. When the
    /// state folder is on another filesystem, the data is first copied to a temporary name beside
    /// the target and fsync'd, so the last step is still a rename.
    pub fn place(&self, part: &Path, replace: bool) -> io::Result<()> {
        match self.rename_in(rustix::fs::CWD, part.as_os_str(), replace) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => self.copy_in(part, replace)?,
            other => other?,
        }
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }

    /// [`Slot::place`] without the folder's fsync, for a batch that fsyncs each folder once
    /// ([`Slot::sync_dir`]) after all its renames.
    pub fn place_unsynced(&self, part: &Path, replace: bool) -> io::Result<()> {
        match self.rename_in(rustix::fs::CWD, part.as_os_str(), replace) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => self.copy_in(part, replace),
            other => other,
        }
    }

    /// A new file without a name (`O_TMPFILE`) in this name's folder, for [`Slot::link_unnamed`]
    /// to name once it is durable. Until then no entry exists, so nothing half-written can be
    /// seen, and one that is dropped simply vanishes. Fails where the filesystem has no such
    /// files (callers then write under a temporary name).
    pub fn create_unnamed(&self) -> io::Result<File> {
        troca_net::durable::create_unnamed_at(&*self.dir, ".")
    }

    /// Gives `file`, from [`Slot::create_unnamed`], this name; refuses a taken name
    /// (`AlreadyExists`). The folder's entry is not fsync'd ([`Slot::sync_dir`]).
    pub fn link_unnamed(&self, file: &File) -> io::Result<()> {
        troca_net::durable::link_unnamed_at(file, &*self.dir, self.last.as_str())
    }

    /// Makes the folder's entries durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }

    /// The slot of another name `last` (one component) in the same folder, without a lookup.
    pub fn sibling(&self, last: &str) -> Slot {
        Slot {
            dir: std::sync::Arc::clone(&self.dir),
            dir_path: self.dir_path.clone(),
            last: last.to_owned(),
        }
    }

    /// The real path of the folder that holds the name.
    pub fn dir_path(&self) -> &Path {
        &self.dir_path
    }

    fn rename_in(&self, from_dir: impl AsFd, from: &OsStr, replace: bool) -> io::Result<()> {
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        match rustix::fs::renameat_with(&from_dir, from, &self.dir, self.last.as_str(), flags) {
            // Filesystems without RENAME_NOREPLACE: a hard link also refuses an existing name.
            Err(Errno::INVAL) if !replace => {
                rustix::fs::linkat(
                    &from_dir,
                    from,
                    &self.dir,
                    self.last.as_str(),
                    AtFlags::empty(),
                )?;
                rustix::fs::unlinkat(&from_dir, from, AtFlags::empty())?;
                Ok(())
            }
            other => Ok(other?),
        }
    }

    fn copy_in(&self, part: &Path, replace: bool) -> io::Result<()> {
        let tmp = format!(".{}.troca-tmp", self.last);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let copied = (|| {
            let fd = rustix::fs::openat(
                &self.dir,
                tmp.as_str(),
                flags | OFlags::CLOEXEC,
                Mode::from(0o644),
            )?;
            let mut out = File::from(fd);
            io::copy(&mut File::open(part)?, &mut out)?;
            out.sync_all()?;
            self.rename_in(&self.dir, OsStr::new(&tmp), replace)
        })();
        match copied {
            Ok(()) => {
                let _ = std::fs::remove_file(part);
                Ok(())
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.dir, tmp.as_str(), AtFlags::empty());
                Err(e)
            }
        }
    }
}

impl Share {
    /// Whether the shared folder is still there: a folder deleted (or its disk gone) under a
    /// running hub keeps its descriptor, with no links left.
    pub fn health(&self) -> Result<(), HubError> {
        let st = rustix::fs::fstat(&self.root_dir)
            .map_err(|e| HubError::io("the shared folder", std::io::Error::from(e)))?;
        if st.st_nlink == 0 {
            return Err(HubError::Backend(format!(
                "the shared folder {} was deleted",
                self.root.display()
            )));
        }
        Ok(())
    }
    /// Opens (creating if needed) the shared folder and the state folder (mode 0700: it holds
    /// the history, owners and token hashes).
    pub fn open(root: &Path, state: &Path) -> Result<Self, HubError> {
        std::fs::create_dir_all(root)
            .map_err(|e| HubError::io(format!("cannot create {}", root.display()), e))?;
        make_private_dir(state)?;
        let canon = |p: &Path| {
            p.canonicalize()
                .map_err(|e| HubError::io(format!("cannot resolve {}", p.display()), e))
        };
        let (root, state) = (canon(root)?, canon(state)?);
        let root_dir = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| HubError::io(format!("cannot open {}", root.display()), e.into()))?;
        // Every lookup depends on openat2 (Linux 5.6): refuse to serve rather than serve unsafely.
        rustix::fs::openat2(&root_dir, ".", OFlags::PATH, Mode::empty(), BENEATH).map_err(|e| {
            HubError::io(
                "this kernel does not offer openat2 (Linux 5.6 or later is needed to confine \
                 requests to the shared folder)"
                    .to_owned(),
                e.into(),
            )
        })?;
        Ok(Self {
            state_rel: state
                .strip_prefix(&root)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_owned),
            root,
            state,
            root_dir,
            hidden: std::sync::Arc::default(),
        })
    }

    /// Lists no link that leads to a name `hidden` covers (the hub refuses to serve those
    /// anyway: a listing that showed them would show what is not there to take).
    pub fn hiding(mut self, hidden: std::sync::Arc<crate::hidden::Hidden>) -> Self {
        self.hidden = hidden;
        self
    }

    /// Whether a link that reached real path `path` leads to a hidden name.
    fn leads_to_hidden(&self, path: &Path) -> bool {
        self.hidden.any() && self.hidden.covering_beneath(&self.root, path).is_some()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn contains(&self, resolved: &Path) -> bool {
        resolved.starts_with(&self.root) && !resolved.starts_with(&self.state)
    }

    /// Is `rel` the state folder or inside it (by name, before any lookup)?
    fn in_state(&self, rel: &str) -> bool {
        self.state_rel.as_deref().is_some_and(|s| {
            s.is_empty() || rel == s || rel.strip_prefix(s).is_some_and(|r| r.starts_with('/'))
        })
    }

    /// Opens `rel` beneath the root. Without a link on the way the real path is the root joined
    /// with `rel`; through links (inside the root: the kernel refuses the rest) it is asked of
    /// the descriptor, and refused if it is the state folder.
    fn open_beneath(&self, rel: &str, flags: OFlags) -> io::Result<Opened> {
        let flags = flags | OFlags::CLOEXEC;
        match retry(|| {
            rustix::fs::openat2(&self.root_dir, rel, flags, Mode::empty(), BENEATH_NO_LINKS)
        }) {
            Ok(fd) => {
                return Ok(Opened {
                    fd,
                    path: self.root.join(rel),
                })
            }
            Err(Errno::LOOP) => {}
            Err(e) => return Err(e.into()),
        }
        let (fd, path) =
            match retry(|| rustix::fs::openat2(&self.root_dir, rel, flags, Mode::empty(), BENEATH))
            {
                Ok(fd) => {
                    let path = real_path(&fd)?;
                    (fd, path)
                }
                // An absolute link: the kernel refuses them all, even those that point inside.
                Err(Errno::XDEV) => {
                    let o = self.resolve_by_hand(rel, flags)?;
                    (o.fd, o.path)
                }
                Err(e) => return Err(e.into()),
            };
        if !self.contains(&path) && path != self.root {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        Ok(Opened { fd, path })
    }

    /// Resolves `rel` one component at a time from the root's descriptor, following links
    /// itself: absolute links are taken relative to the root if they point inside it, `..` never
    /// climbs above the root, and the kernel never follows a link on the way (`O_NOFOLLOW`).
    fn resolve_by_hand(&self, rel: &str, flags: OFlags) -> io::Result<Opened> {
        let mut folders: Vec<(OwnedFd, String)> = Vec::new();
        let mut todo: VecDeque<String> = rel.split('/').map(str::to_owned).collect();
        let mut links = 0;
        while let Some(component) = todo.pop_front() {
            match component.as_str() {
                "" | "." => continue,
                ".." => {
                    folders
                        .pop()
                        .ok_or_else(|| io::Error::from_raw_os_error(libc::EXDEV))?;
                    continue;
                }
                _ => {}
            }
            let here = folders
                .last()
                .map_or(self.root_dir.as_fd(), |f| f.0.as_fd());
            let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(
                here,
                component.as_str(),
                OFlags::PATH | nofollow,
                Mode::empty(),
            )?;
            let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
            if kind == FileType::Symlink {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                let rest = if target.is_absolute() {
                    folders.clear();
                    target
                        .strip_prefix(&self.root)
                        .map_err(|_| io::Error::from_raw_os_error(libc::EXDEV))?
                        .to_path_buf()
                } else {
                    target
                };
                let rest = rest
                    .to_str()
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                for c in rest.split('/').rev() {
                    todo.push_front(c.to_owned());
                }
                continue;
            }
            if todo.iter().all(|c| c.is_empty() || c == ".") {
                let fd =
                    rustix::fs::openat(here, component.as_str(), flags | nofollow, Mode::empty())?;
                let mut path = self.root.clone();
                path.extend(folders.iter().map(|f| f.1.as_str()));
                path.push(component);
                return Ok(Opened { fd, path });
            }
            if kind != FileType::Directory {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            folders.push((fd, component));
        }
        // The root itself (a link to it, say): never an answer.
        Err(io::Error::from_raw_os_error(libc::EXDEV))
    }

    /// Opens an existing file for reading. Anything that does
    /// not exist, leaves the share or is in the state folder is `NotFound` (not told apart, so a
    /// client cannot probe the rest of the disk).
    pub fn open_existing(&self, name: &RemoteName) -> Result<File, HubError> {
        if self.in_state(name.as_str()) {
            return Err(HubError::NotFound(name.to_string()));
        }
        // Non-blocking so that a FIFO cannot hold the request; the caller refuses non-files.
        match self.open_beneath(name.as_str(), OFlags::RDONLY | OFlags::NONBLOCK) {
            Ok(o) => Ok(File::from(o.fd)),
            Err(e) if is_gone(&e) => Err(HubError::NotFound(name.to_string())),
            Err(e) => Err(HubError::io(format!("cannot open {name}"), e)),
        }
    }

    /// The folder that holds `name`, opened beneath the root, creating missing folders if
    /// `create`. `NotFound` if a folder on the way is missing (and not `create`), leaves the
    /// share or is the state folder.
    pub fn slot(&self, name: &RemoteName, create: bool) -> Result<Slot, HubError> {
        if self.in_state(name.as_str()) {
            return Err(HubError::NotFound(name.to_string()));
        }
        let last = name.file_name().to_owned();
        let Some((parent, _)) = name.as_str().rsplit_once('/') else {
            let dir = self
                .root_dir
                .try_clone()
                .map_err(|e| HubError::io("cannot open the shared folder".to_owned(), e))?;
            return Ok(Slot {
                dir: dir.into(),
                dir_path: self.root.clone(),
                last,
            });
        };
        let opened = match self.open_beneath(parent, OFlags::RDONLY | OFlags::DIRECTORY) {
            Err(e) if is_not_found(&e) && create => self.make_folders(name, parent),
            other => other.map_err(|e| folder_error(name, e, create)),
        }?;
        Ok(Slot {
            dir: opened.fd.into(),
            dir_path: opened.path,
            last,
        })
    }

    /// Creates the missing folders of `parent`, each with `mkdirat` in the folder before it.
    fn make_folders(&self, name: &RemoteName, parent: &str) -> Result<Opened, HubError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let mut dir = self
            .root_dir
            .try_clone()
            .map_err(|e| HubError::io("cannot open the shared folder".to_owned(), e))?;
        let mut opened = None;
        for (end, component) in component_ends(parent) {
            let prefix = &parent[..end];
            let o = match self.open_beneath(prefix, flags) {
                Err(e) if is_not_found(&e) => {
                    match rustix::fs::mkdirat(&dir, component, Mode::from(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(HubError::io(
                                format!("cannot create folder {prefix}"),
                                e.into(),
                            ))
                        }
                    }
                    self.open_beneath(prefix, flags)
                }
                other => other,
            }
            .map_err(|e| folder_error(name, e, true))?;
            dir = o.fd.try_clone().map_err(|e| folder_error(name, e, true))?;
            opened = Some(o);
        }
        opened.ok_or_else(|| HubError::NotFound(name.to_string()))
    }

    /// A page of the files whose names start with `query.prefix`, and of the folders among them
    /// that hold none as `NAME/` (size 0), in byte order of those names. Blocking: walks the
    /// disk folder by folder through descriptors, entering only the folders that can hold names
    /// of the page, so a page costs about the same wherever it starts.
    pub fn list(&self, query: ListQuery<'_>) -> ListPage {
        let limit = query.limit.max(1);
        let mut walk = ListWalk {
            prefix: query.prefix,
            out: Vec::new(),
            limit,
            children: query.children,
        };
        self.list_folder(&self.root_dir, "", query.after, 0, &mut walk);
        ListPage::from_collected(walk.out, limit)
    }
    /// The first files and folders by name that `query` asks for (see [`FindQuery`]).
    /// Blocking, like [`Share::list`].
    pub fn find(&self, query: FindQuery<'_>) -> Matches {
        let want = Want::new(query.text, query.limit.max(1));
        let mut found = Found {
            want: &want,
            kept: std::collections::BTreeMap::new(),
            left: query.budget,
            cut: false,
        };
        match query.within {
            None => self.search(&self.root_dir, "", 0, &mut found),
            Some(folder) => self.search_within(folder, &mut found),
        }
        found.done()
    }

    /// Searches folder `folder` (found itself if it matches) and what it holds, reached as a
    /// listing reaches it: through links inside the share, never into the state folder.
    fn search_within(&self, folder: &str, found: &mut Found) {
        let folder = folder.trim_end_matches('/');
        if folder.is_empty() || self.in_state(folder) || RemoteName::parse(folder).is_err() {
            return;
        }
        let Ok(o) = self.open_beneath(folder, OFlags::RDONLY | OFlags::DIRECTORY) else {
            return;
        };
        // Reached through a link, the state folder inside it would go by another name, which
        // the walk could not tell: such a folder is not searched (nor listed).
        if o.path != self.root.join(folder) && self.state.starts_with(&o.path) {
            return;
        }
        self.search_opened(&o.fd, folder, folder.split('/').count(), found);
    }

    /// Creates folder `name` (and any missing folders on the way); `false` if it was there.
    pub fn make_folder(&self, name: &RemoteName) -> Result<bool, HubError> {
        let slot = self.slot(name, true)?;
        let created = match rustix::fs::mkdirat(&slot.dir, slot.last.as_str(), Mode::from(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => match slot.kind() {
                Ok(Some(FileType::Directory)) => false,
                _ => return Err(HubError::FolderOverFile(name.to_string())),
            },
            Err(e) => {
                return Err(HubError::io(
                    format!("cannot create folder {name}"),
                    e.into(),
                ))
            }
        };
        rustix::fs::fsync(&slot.dir)
            .map_err(|e| HubError::io(format!("cannot create folder {name}"), e.into()))?;
        Ok(created)
    }

    /// Calls `each` with every file beneath folder `name` (links as entries, not followed)
    /// until it fails, reading each folder an entry at a time: for a policy check before the
    /// whole folder is moved or deleted, in constant memory whatever it holds. Blocking.
    pub fn each_file_beneath(
        &self,
        name: &RemoteName,
        each: &mut dyn FnMut(&str) -> Result<(), HubError>,
    ) -> Result<(), HubError> {
        let dir = self.open_folder(name)?;
        walk_files(&dir, name.as_str(), 0, each)
    }

    fn open_folder(&self, name: &RemoteName) -> Result<OwnedFd, HubError> {
        if self.in_state(name.as_str()) {
            return Err(HubError::NotFound(name.to_string()));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match self.open_beneath(name.as_str(), flags | OFlags::NOFOLLOW) {
            Ok(o) => Ok(o.fd),
            Err(e) if is_gone(&e) || e.raw_os_error() == Some(libc::ELOOP) => {
                Err(HubError::NotFound(name.to_string()))
            }
            Err(e) => Err(HubError::io(format!("cannot open folder {name}"), e)),
        }
    }

    /// Deletes folder `name` and everything in it (links themselves, never what they point to),
    /// deepest first. Blocking. Stops at the first error, having deleted what came before.
    pub fn remove_tree(&self, name: &RemoteName) -> Result<u64, HubError> {
        let slot = self.slot(name, false)?;
        let dir = self.open_folder(name)?;
        let mut removed = 0;
        let gone = |e: io::Error| HubError::io(format!("cannot delete {name}"), e);
        empty_folder(&dir, 0, &mut removed).map_err(gone)?;
        rustix::fs::unlinkat(&slot.dir, slot.last.as_str(), AtFlags::REMOVEDIR)
            .map_err(|e| gone(e.into()))?;
        rustix::fs::fsync(&slot.dir).map_err(|e| gone(e.into()))?;
        Ok(removed)
    }

    /// Moves `from` (a file, a link or a folder) to `to`, making missing folders on the way;
    /// replaces a file at `to` only if `replace` (a folder never). Both folders are fsync'd.
    pub fn rename(&self, from: &Slot, to: &Slot, replace: bool) -> io::Result<()> {
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(
            &from.dir,
            from.last.as_str(),
            &to.dir,
            to.last.as_str(),
            flags,
        )?;
        rustix::fs::fsync(&to.dir)?;
        rustix::fs::fsync(&from.dir)?;
        Ok(())
    }

    /// Lists folder `dir` (at `rel`) into `walk`, only names after `after` (`None`: all).
    fn list_folder(
        &self,
        dir: &OwnedFd,
        rel: &str,
        after: Option<&str>,
        depth: usize,
        walk: &mut ListWalk<'_>,
    ) {
        let prefix = walk.prefix;
        // Only what the page can hold is kept (and sorted): the names after `after`, and the
        // folder `after` is in.
        let keep = |key: &str, kind: FileType| {
            if kind == FileType::Directory {
                enter(key, prefix, after).is_some()
            } else {
                key.starts_with(prefix) && after.is_none_or(|a| key > a)
            }
        };
        // A page holds a few of a large folder's entries: the folder is read for the first
        // of them only, and read again if the page has room for more.
        let mut from: Option<String> = None;
        loop {
            let room = (walk.limit + 1).saturating_sub(walk.out.len()) + FIRST_SLACK;
            let link = |name: &str| self.link_kind(name);
            let first = first_children(dir, rel, &keep, from.as_deref(), room, &link);
            // Where the next read of this folder starts, if the page has room after these.
            let last = first.children.last().map(|c| c.key.clone());
            for child in first.children {
                if walk.full() {
                    return;
                }
                self.list_child(dir, rel, child, after, depth, walk);
            }
            if !first.more || walk.full() {
                return;
            }
            from = last;
        }
    }

    /// [`Share::list_folder`] of one entry of `dir`: a file, or a folder entered.
    fn list_child(
        &self,
        dir: &OwnedFd,
        rel: &str,
        child: Child,
        after: Option<&str>,
        depth: usize,
        walk: &mut ListWalk<'_>,
    ) {
        if self.in_state(child.name()) {
            return;
        }
        match child.kind {
            FileType::Directory if walk.lists_as_child(&child.key) => {
                self.list_as_child(dir, rel, child, after, walk);
            }
            // A link to a folder is entered only when the listing is of what is inside it.
            FileType::Directory if child.linked && !walk.prefix.starts_with(&child.key) => {
                let listed = after.is_none_or(|a| child.key.as_str() > a);
                if let Some(sub) = self.open_linked_folder(child.name()).filter(|_| listed) {
                    if child.key.starts_with(walk.prefix) && RemoteName::parse(child.name()).is_ok()
                    {
                        walk.out.push(folder_entry(child.key, &sub));
                    }
                }
            }
            FileType::Directory if depth + 1 < MAX_LIST_DEPTH => {
                let Some(inner_after) = enter(&child.key, walk.prefix, after) else {
                    return;
                };
                let sub = self.open_listed_folder(dir, rel, &child);
                let Some(sub) = sub else {
                    return;
                };
                let before = walk.out.len();
                self.list_folder(&sub, child.name(), inner_after, depth + 1, walk);
                let listed = after.is_none_or(|a| child.key.as_str() > a);
                // A listing of children lists what is in the folder, never the folder itself.
                if listed
                    && !walk.children
                    && walk.out.len() == before
                    && child.key.starts_with(walk.prefix)
                    && RemoteName::parse(child.name()).is_ok()
                {
                    walk.out.push(folder_entry(child.key, &sub));
                }
            }
            FileType::RegularFile | FileType::Symlink => {
                if let Some(st) = self.file_stat(dir, rel, &child) {
                    push_entry(&mut walk.out, child.key, &st);
                }
            }
            _ => {}
        }
    }

    /// Folder `child` of a listing of children: itself, never entered.
    fn list_as_child(
        &self,
        dir: &OwnedFd,
        rel: &str,
        child: Child,
        after: Option<&str>,
        walk: &mut ListWalk<'_>,
    ) {
        if after.is_some_and(|a| child.key.as_str() <= a)
            || RemoteName::parse(child.name()).is_err()
        {
            return;
        }
        let sub = self.open_listed_folder(dir, rel, &child);
        if let Some(sub) = sub {
            walk.out.push(folder_entry(child.key, &sub));
        }
    }

    /// Folder `child` of `dir` (at `rel`), opened for a listing: through its link, if it is one.
    fn open_listed_folder(&self, dir: &OwnedFd, rel: &str, child: &Child) -> Option<OwnedFd> {
        if child.linked {
            self.open_linked_folder(child.name())
        } else {
            open_child_folder(dir, child.own(rel)).ok()
        }
    }

    /// What link `name` reaches, for a listing: `Directory` for a folder that may be listed
    /// (inside the share, not holding the state folder), else `Symlink` (a file, or nothing).
    fn link_kind(&self, name: &str) -> FileType {
        match self.linked_folder(name, OFlags::PATH) {
            Some(_) => FileType::Directory,
            None => FileType::Symlink,
        }
    }

    /// Whether link `name` reaches a file or a folder that may be listed.
    fn link_serves(&self, name: &str) -> bool {
        let Ok(o) = self.open_beneath(name, OFlags::PATH) else {
            return false;
        };
        match rustix::fs::fstat(&o.fd).map(|st| FileType::from_raw_mode(st.st_mode)) {
            Ok(FileType::RegularFile) => true,
            Ok(FileType::Directory) => !self.state.starts_with(&o.path),
            _ => false,
        }
    }

    /// Opens the folder link `name` reaches, if it may be listed.
    fn open_linked_folder(&self, name: &str) -> Option<OwnedFd> {
        self.linked_folder(name, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// The folder link `name` reaches, opened with `flags`: never one that holds the state
    /// folder (the share itself, say), whose walk would show it under another name.
    fn linked_folder(&self, name: &str, flags: OFlags) -> Option<OwnedFd> {
        let o = self.open_beneath(name, flags).ok()?;
        let st = rustix::fs::fstat(&o.fd).ok()?;
        let folder = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let shown = !self.state.starts_with(&o.path) && !self.leads_to_hidden(&o.path);
        (folder && shown).then_some(o.fd)
    }

    /// What a file of a listing is: a link is followed beneath the root only, and listed only
    /// if it reaches a regular file (checked by [`push_entry`]).
    fn file_stat(&self, dir: &OwnedFd, rel: &str, child: &Child) -> Option<rustix::fs::Stat> {
        if child.kind == FileType::Symlink {
            let o = self.open_beneath(child.name(), OFlags::PATH).ok()?;
            if self.leads_to_hidden(&o.path) {
                return None;
            }
            return rustix::fs::fstat(&o.fd).ok();
        }
        rustix::fs::statat(dir, child.own(rel), AtFlags::SYMLINK_NOFOLLOW).ok()
    }

    /// Searches folder `dir` (at `rel`) in the order it reads, keeping the first matches by
    /// name in `found`. A link to a folder may be found, never searched: what it holds is found
    /// where it is.
    fn search(&self, dir: &OwnedFd, rel: &str, depth: usize, found: &mut Found) {
        let Ok(read) = entries(dir) else {
            return;
        };
        for (own, kind) in read.filter_map(Result::ok) {
            if !found.looks() {
                return;
            }
            let Some(own) = own.to_str() else {
                continue;
            };
            let name = whole_name(rel, own);
            if self.in_state(&name) {
                continue;
            }
            match kind {
                FileType::Directory if depth + 1 < MAX_LIST_DEPTH => {
                    self.search_folder(dir, own, name, depth, found);
                }
                FileType::RegularFile if found.takes(&name) => {
                    let st = rustix::fs::statat(dir, own, AtFlags::SYMLINK_NOFOLLOW);
                    if let Some(e) = st.ok().and_then(|st| file_entry(name, &st)) {
                        found.add(e);
                    }
                }
                FileType::Symlink => self.found_link(name, found),
                _ => {}
            }
        }
    }

    /// Folder `own` of `dir` (whole name `name`): found if it matches, then searched, unless
    /// every name in it comes after the matches already found.
    fn search_folder(&self, dir: &OwnedFd, own: &str, name: String, depth: usize, f: &mut Found) {
        let key = format!("{name}/");
        if !f.could_take(&key) {
            // What it holds might have matched.
            f.cut = true;
            return;
        }
        let Ok(sub) = open_child_folder(dir, own) else {
            return;
        };
        self.search_opened(&sub, &name, depth + 1, f);
    }

    /// Folder `name`, open as `dir` at `depth`: found if it matches, then searched.
    fn search_opened(&self, dir: &OwnedFd, name: &str, depth: usize, f: &mut Found) {
        let key = format!("{name}/");
        if f.takes(&key) && RemoteName::parse(name).is_ok() {
            f.add(folder_entry(key, dir));
        }
        if depth < MAX_LIST_DEPTH {
            self.search(dir, name, depth, f);
        }
    }

    /// Link `name`, found as the folder or the file it reaches. What it reaches is asked only
    /// when either would be kept.
    fn found_link(&self, name: String, found: &mut Found) {
        let key = format!("{name}/");
        if !found.takes(&name) && !found.takes(&key) {
            return;
        }
        if let Some(folder) = self.linked_folder(&name, OFlags::PATH) {
            if found.takes(&key) && RemoteName::parse(&name).is_ok() {
                found.add(folder_entry(key, &folder));
            }
        } else if found.takes(&name) {
            let Ok(o) = self.open_beneath(&name, OFlags::PATH) else {
                return;
            };
            if self.leads_to_hidden(&o.path) {
                return;
            }
            if let Some(e) = rustix::fs::fstat(&o.fd)
                .ok()
                .and_then(|st| file_entry(name, &st))
            {
                found.add(e);
            }
        }
    }
}

/// The matches of a search: the first `limit` by name of all it has seen, walking folders in
/// the order they read (kept sorted, the last dropped past the limit). A search holds its
/// answer and one open folder a level, never a folder's names; each folder is read once, and
/// one whose names all come after the last match kept (once there are `limit`) is not read at
/// all. Since a folder's whole names all start with its own, the first by name are the ones a
/// walk in name order would find first.
struct Found<'a> {
    want: &'a Want,
    kept: std::collections::BTreeMap<String, Entry>,
    /// How many more names it may look at.
    left: u64,
    /// Whether it left names out: dropped a match past the limit, or stopped at its budget.
    cut: bool,
}

impl Found<'_> {
    /// Takes one name from the budget; `false` (and the answer cut) once there is none left.
    fn looks(&mut self) -> bool {
        if self.left == 0 {
            self.cut = true;
            return false;
        }
        self.left -= 1;
        true
    }

    /// Whether a name starting with `key` could still be kept.
    fn could_take(&self, key: &str) -> bool {
        self.kept.len() < self.want.limit
            || self
                .kept
                .last_key_value()
                .is_some_and(|(last, _)| key < last.as_str())
    }

    /// Whether the entry named `key` (`NAME/` for a folder) would be kept. A match that would
    /// not cuts the answer.
    fn takes(&mut self, key: &str) -> bool {
        if !self.want.matches(key) {
            return false;
        }
        let takes = self.could_take(key);
        self.cut |= !takes;
        takes
    }

    /// Keeps `e`, dropping the last by name past the limit.
    fn add(&mut self, e: Entry) {
        self.kept.insert(e.name.clone(), e);
        if self.kept.len() > self.want.limit {
            self.kept.pop_last();
            self.cut = true;
        }
    }

    fn done(self) -> Matches {
        Matches {
            entries: self.kept.into_values().collect(),
            cut: self.cut,
        }
    }
}

/// What a walk of the share found that the hub cannot serve, so the person sharing hears of
/// it: names that are not UTF-8 or that the name rule refuses (control characters, say), and
/// entries that are neither files, folders nor links (FIFOs, sockets, devices).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unserved {
    /// Entries whose names cannot be served.
    pub names: u64,
    /// Entries of another kind than files, folders and links.
    pub special: u64,
    /// Links that lead out of the share, to the share itself (or a folder holding its state),
    /// or nowhere.
    pub links: u64,
    /// A few of them, as quoted paths (escapes shown, never raw bytes).
    pub examples: Vec<String>,
    /// Whether the walk stopped at its budget before the end.
    pub partial: bool,
}

impl Unserved {
    /// How many examples are kept.
    const EXAMPLES: usize = 5;

    fn note(&mut self, rel: &str, name: &OsStr, what: Unservable) {
        *match what {
            Unservable::Name => &mut self.names,
            Unservable::Special => &mut self.special,
            Unservable::Link => &mut self.links,
        } += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples
                .push(format!("{:?}", Path::new(rel).join(name)));
        }
    }
}

/// Why an entry cannot be served.
#[derive(Debug, Clone, Copy)]
enum Unservable {
    Name,
    Special,
    Link,
}

impl Share {
    /// Walks the share (at most `budget` entries) for what cannot be served.
    pub fn unserved(&self, budget: u64) -> Unserved {
        let mut found = Unserved::default();
        let mut left = budget;
        self.find_unserved(&self.root_dir, "", 0, &mut left, &mut found);
        found
    }

    fn find_unserved(
        &self,
        dir: &OwnedFd,
        rel: &str,
        depth: usize,
        left: &mut u64,
        out: &mut Unserved,
    ) {
        let Ok(read) = entries(dir) else {
            return;
        };
        // Read as it goes (one open folder a level), so a folder of any size costs no memory.
        for (name, kind) in read.filter_map(Result::ok) {
            if *left == 0 {
                out.partial = true;
                return;
            }
            *left -= 1;
            let path = name.to_str().map(|n| whole_name(rel, n));
            if path.as_deref().is_some_and(|p| self.in_state(p)) {
                continue;
            }
            let Some(path) = path.filter(|p| RemoteName::parse(p).is_ok()) else {
                out.note(rel, &name, Unservable::Name);
                continue;
            };
            match kind {
                FileType::Directory if depth + 1 < MAX_LIST_DEPTH => {
                    if let Ok(sub) = open_child_folder(dir, &*name) {
                        self.find_unserved(&sub, &path, depth + 1, left, out);
                    }
                }
                FileType::Symlink => {
                    if !self.link_serves(&path) {
                        out.note(rel, &name, Unservable::Link);
                    }
                }
                FileType::Directory | FileType::RegularFile => {}
                _ => out.note(rel, &name, Unservable::Special),
            }
        }
    }
}

/// The whole name of entry `own` of the folder named `rel` (`""`: the share itself).
fn whole_name(rel: &str, own: &str) -> String {
    match rel {
        "" => own.to_owned(),
        _ => format!("{rel}/{own}"),
    }
}

/// Folder `name` (`NAME/`, open as `dir`) as an entry of its own.
fn folder_entry(name: String, dir: &OwnedFd) -> Entry {
    Entry {
        name,
        size: 0,
        modified_ns: rustix::fs::fstat(dir).map_or(0, |st| stat_mtime_ns(&st)),
        blake3: None,
    }
}

fn push_entry(out: &mut Vec<Entry>, rel: String, st: &rustix::fs::Stat) {
    out.extend(file_entry(rel, st));
}

/// File `rel` as an entry, if it is a regular file whose name may be served.
fn file_entry(rel: String, st: &rustix::fs::Stat) -> Option<Entry> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    // Files whose names could never be requested (control characters, say) are not listed.
    let name = RemoteName::parse(&rel).ok()?;
    Some(Entry {
        blake3: None,
        name: name.to_string(),
        size: st.st_size as u64,
        modified_ns: stat_mtime_ns(st),
    })
}

/// What a search of the share collects: files and folders whose names contain `text` (already
/// lower case), up to `limit`.
struct Want {
    text: String,
    /// The text names a path (it holds a `/`): it is looked for in whole names, not only in
    /// each entry's own name.
    whole: bool,
    limit: usize,
}

impl Want {
    fn new(text: &str, limit: usize) -> Want {
        Want {
            text: text.to_lowercase(),
            whole: text.contains('/'),
            limit,
        }
    }

    /// Whether the file or folder named `name` (`NAME/` for a folder) is found.
    fn matches(&self, name: &str) -> bool {
        let name = if self.whole {
            name
        } else {
            let own = name.trim_end_matches('/');
            own.rsplit('/').next().unwrap_or(own)
        };
        name.to_lowercase().contains(self.text.as_str())
    }
}

/// A page of a listing being collected: up to `limit + 1` entries, the last only saying that
/// there are more.
struct ListWalk<'a> {
    prefix: &'a str,
    out: Vec<Entry>,
    limit: usize,
    /// Only what is directly in folder `prefix` ([`ListQuery::children`]).
    children: bool,
}

impl ListWalk<'_> {
    fn full(&self) -> bool {
        self.out.len() > self.limit
    }

    /// Whether folder `key` (`NAME/`) is one to list as itself, not enter: one directly in
    /// the folder a listing of children lists.
    fn lists_as_child(&self, key: &str) -> bool {
        self.children
            && key
                .strip_prefix(self.prefix)
                .and_then(|rest| rest.strip_suffix('/'))
                .is_some_and(|own| !own.is_empty() && !own.contains('/'))
    }
}

/// Whether a listing enters folder `key` (`NAME/`), and if so after which name inside it:
/// `Some(None)` when all of it comes after `after`, `Some(after)` when `after` is inside it,
/// `None` when none of it can be listed (outside the prefix, or all of it before `after`).
fn enter<'a>(key: &str, prefix: &str, after: Option<&'a str>) -> Option<Option<&'a str>> {
    if !(key.starts_with(prefix) || prefix.starts_with(key)) {
        return None;
    }
    match after {
        None => Some(None),
        // Every name beneath `key` starts with it, so compares with `after` as `key` does,
        // unless `after` itself is beneath it.
        Some(a) if key > a => Some(None),
        Some(a) if a.starts_with(key) => Some(Some(a)),
        Some(_) => None,
    }
}

/// An entry of a folder being listed, with its whole name.
struct Child {
    /// Its whole name, a folder's followed by `/`: the key a listing sorts by, since every
    /// name inside a folder starts so, which makes a walk in this order list whole names in
    /// byte order.
    key: String,
    kind: FileType,
    /// A link that reaches a folder inside the share: listed as a folder, entered only by a
    /// listing of what is inside it, so that a walk never loops or lists a folder twice.
    linked: bool,
}

impl Child {
    /// Its whole name.
    fn name(&self) -> &str {
        if self.kind == FileType::Directory {
            &self.key[..self.key.len() - 1]
        } else {
            &self.key
        }
    }

    /// Its name inside its folder.
    fn own<'a>(&'a self, rel: &str) -> &'a str {
        let name = self.name();
        if rel.is_empty() {
            name
        } else {
            &name[rel.len() + 1..]
        }
    }
}

/// Entries a listing's read of a folder keeps beyond the room left on its page: some may add
/// nothing to it (the state folder, a name the hub refuses, a link that leads nowhere), and
/// the folder is then read again. None in tests, so that the property tests' small pages read
/// folders again and again.
const FIRST_SLACK: usize = if cfg!(test) { 0 } else { 16 };

/// The first entries of a folder, in key order, and whether it holds more.
struct FirstChildren {
    children: Vec<Child>,
    more: bool,
}

impl PartialEq for Child {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Child {}
impl PartialOrd for Child {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Child {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The first `cap` entries of `dir` (at `rel`) by key, of those `keep` accepts whose keys come
/// after `from`: a bounded heap, so a page of a large folder holds its page, not the folder.
/// `link` says what a link (by whole name) reaches, asked only of links the page could hold.
fn first_children(
    dir: &OwnedFd,
    rel: &str,
    keep: &dyn Fn(&str, FileType) -> bool,
    from: Option<&str>,
    cap: usize,
    link: &dyn Fn(&str) -> FileType,
) -> FirstChildren {
    let mut firsts = Firsts {
        heap: std::collections::BinaryHeap::with_capacity(cap.min(4096) + 1),
        cap,
        more: false,
        keep,
        from,
    };
    let Ok(reader) = rustix::fs::Dir::read_from(dir) else {
        return firsts.done();
    };
    let mut key = String::new();
    for e in reader.filter_map(Result::ok) {
        let Ok(own) = std::str::from_utf8(e.file_name().to_bytes()) else {
            continue;
        };
        if own == "." || own == ".." {
            continue;
        }
        let kind = kind_of(dir, &e).unwrap_or(FileType::Unknown);
        key.clear();
        if !rel.is_empty() {
            key.push_str(rel);
            key.push('/');
        }
        key.push_str(own);
        match kind {
            FileType::Directory => {
                key.push('/');
                firsts.offer(&key, kind, false);
            }
            FileType::Symlink => firsts.offer_link(&mut key, link),
            _ => firsts.offer(&key, kind, false),
        }
    }
    firsts.done()
}

/// [`first_children`] collecting.
struct Firsts<'a> {
    heap: std::collections::BinaryHeap<Child>,
    cap: usize,
    more: bool,
    keep: &'a dyn Fn(&str, FileType) -> bool,
    from: Option<&'a str>,
}

/// Whether [`Firsts`] would take an entry.
#[derive(PartialEq)]
enum Taken {
    /// Not for this listing at all.
    No,
    /// For this listing, beyond what the page holds.
    Beyond,
    Yes,
}

impl Firsts<'_> {
    fn takes(&self, key: &str, kind: FileType) -> Taken {
        if self.from.is_some_and(|f| key <= f) || !(self.keep)(key, kind) {
            Taken::No
        } else if self.heap.len() == self.cap
            && self
                .heap
                .peek()
                .is_some_and(|last| key >= last.key.as_str())
        {
            Taken::Beyond
        } else {
            Taken::Yes
        }
    }

    fn offer(&mut self, key: &str, kind: FileType, linked: bool) {
        match self.takes(key, kind) {
            Taken::No => return,
            Taken::Beyond => {
                self.more = true;
                return;
            }
            Taken::Yes => {}
        }
        if self.heap.len() == self.cap {
            self.more = true;
            self.heap.pop();
        }
        let key = key.to_owned();
        self.heap.push(Child { key, kind, linked });
    }

    /// A link's key depends on what it reaches (a folder's ends with `/`): it is asked only if
    /// the page could take it either way, so a folder of many links costs a page's worth.
    fn offer_link(&mut self, key: &mut String, link: &dyn Fn(&str) -> FileType) {
        let folder = format!("{key}/");
        let as_file = self.takes(key, FileType::Symlink);
        let as_folder = self.takes(&folder, FileType::Directory);
        if as_file != Taken::Yes && as_folder != Taken::Yes {
            self.more |= as_file == Taken::Beyond || as_folder == Taken::Beyond;
            return;
        }
        match link(key) {
            FileType::Directory => self.offer(&folder, FileType::Directory, true),
            kind => self.offer(key, kind, false),
        }
    }

    fn done(self) -> FirstChildren {
        FirstChildren {
            children: self.heap.into_sorted_vec(),
            more: self.more,
        }
    }
}

/// What entry `e` of folder `dir` is, without following a link (asked of the disk when the
/// folder's listing does not say).
fn kind_of(dir: &OwnedFd, e: &rustix::fs::DirEntry) -> io::Result<FileType> {
    Ok(match e.file_type() {
        FileType::Unknown => FileType::from_raw_mode(
            rustix::fs::statat(dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
        ),
        k => k,
    })
}

/// The first `limit` entries of a folder as it reads, as [`entries`] gives them.
fn some_children(dir: &OwnedFd, limit: usize) -> io::Result<Vec<(std::ffi::OsString, FileType)>> {
    entries(dir)?.take(limit).collect()
}

/// A folder's entries one at a time as it reads (without `.` and `..`), kinds resolved
/// without following links.
fn entries(
    dir: &OwnedFd,
) -> io::Result<impl Iterator<Item = io::Result<(std::ffi::OsString, FileType)>> + '_> {
    let read = rustix::fs::Dir::read_from(dir)?;
    Ok(read.filter_map(move |e| {
        let e = match e {
            Ok(e) => e,
            Err(e) => return Some(Err(e.into())),
        };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            return None;
        }
        let name = OsStr::from_bytes(name).to_owned();
        Some(kind_of(dir, &e).map(|kind| (name, kind)))
    }))
}

/// [`Share::each_file_beneath`] from folder `dir`, named `rel`.
fn walk_files(
    dir: &OwnedFd,
    rel: &str,
    depth: usize,
    each: &mut dyn FnMut(&str) -> Result<(), HubError>,
) -> Result<(), HubError> {
    let unread = |e: io::Error| HubError::io(format!("cannot read folder {rel}"), e);
    if depth >= MAX_LIST_DEPTH {
        return Err(unread(io::Error::other("folders nested too deep")));
    }
    for entry in entries(dir).map_err(unread)? {
        let (name, kind) = entry.map_err(unread)?;
        let child = format!("{rel}/{}", name.to_string_lossy());
        if kind == FileType::Directory {
            let sub = open_child_folder(dir, &*name).map_err(unread)?;
            walk_files(&sub, &child, depth + 1, each)?;
        } else {
            each(&child)?;
        }
    }
    Ok(())
}

/// Opens sub-folder `name` of `dir`, never through a link.
fn open_child_folder(dir: &OwnedFd, name: impl rustix::path::Arg) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Entries read, then deleted, at a time when a folder is emptied: a folder of any size costs
/// that much memory (a folder is not read on while its entries are deleted).
const EMPTY_BATCH: usize = 4096;

/// Deletes everything inside `dir`, deepest first, counting the files.
fn empty_folder(dir: &OwnedFd, depth: usize, removed: &mut u64) -> io::Result<()> {
    if depth >= MAX_LIST_DEPTH {
        return Err(io::Error::other("folders nested too deep"));
    }
    loop {
        // Read from the start each time: what was read is gone.
        let batch = some_children(dir, EMPTY_BATCH)?;
        let last = batch.len() < EMPTY_BATCH;
        for (name, kind) in batch {
            if kind == FileType::Directory {
                let sub = open_child_folder(dir, &name)?;
                empty_folder(&sub, depth + 1, removed)?;
                rustix::fs::unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
            } else {
                rustix::fs::unlinkat(dir, &name, AtFlags::empty())?;
                *removed += 1;
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// The version (size and modification time) `st` describes.
pub fn version_of_stat(st: &rustix::fs::Stat) -> super::Version {
    super::Version {
        size: st.st_size as u64,
        modified_ns: stat_mtime_ns(st),
    }
}

/// The mtime of `st` in ns since the epoch, as [`troca_net::transfer::mtime_ns`] gives it.
pub fn stat_mtime_ns(st: &rustix::fs::Stat) -> i64 {
    #[allow(clippy::unnecessary_cast)] // The field types differ between targets.
    let (s, ns) = (st.st_mtime as i64, st.st_mtime_nsec as i64);
    if s < 0 {
        return 0;
    }
    s.saturating_mul(1_000_000_000).saturating_add(ns)
}

/// Creates `dir` (and its parents) and makes it readable by its owner only.
fn make_private_dir(dir: &Path) -> Result<(), HubError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HubError::io(format!("cannot make {} private", dir.display()), e))
}

/// Runs an `openat2` again when the kernel saw a rename during the lookup (`EAGAIN`, its way of
/// refusing to guess); a few tries, then the error stands.
fn retry(mut f: impl FnMut() -> rustix::io::Result<OwnedFd>) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// The path a descriptor refers to now, as the kernel keeps it.
fn real_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `(end, component)` for each component of `path`: `parent[..end]` is the path up to it.
fn component_ends(path: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    path.split('/').map(move |c| {
        let end = start + c.len();
        start = end + 1;
        (end, c)
    })
}

/// The error for a folder on the way to `name` that could not be opened.
fn folder_error(name: &RemoteName, e: io::Error, storing: bool) -> HubError {
    match e.raw_os_error() {
        Some(libc::ENOTDIR) if storing => HubError::BadRequest(format!(
            "cannot use {name:?}: a folder on the way is a file"
        )),
        _ if is_gone(&e) => HubError::NotFound(name.to_string()),
        _ => HubError::io(format!("cannot reach {name}"), e),
    }
}

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Not found, or not reachable from the share (a link out: `EXDEV`; a loop: `ELOOP`).
fn is_gone(e: &io::Error) -> bool {
    is_not_found(e) || matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn share() -> (tempfile::TempDir, Share) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let share = Share::open(&root, &root.join(".troca")).unwrap();
        (dir, share)
    }

    fn name(s: &str) -> RemoteName {
        RemoteName::parse(s).unwrap()
    }

    #[test]
    fn an_unnamed_file_has_no_entry_until_it_is_linked_and_never_takes_a_taken_name() {
        let (_dir, share) = share();
        share.make_folder(&name("docs")).unwrap();
        let slot = share.slot(&name("docs/a.txt"), false).unwrap();
        let mut file = slot.create_unnamed().unwrap();
        io::Write::write_all(&mut file, b"hello").unwrap();
        let folder = share.root().join("docs");
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
        slot.link_unnamed(&file).unwrap();
        assert_eq!(std::fs::read(folder.join("a.txt")).unwrap(), b"hello");
        let mut other = slot.create_unnamed().unwrap();
        io::Write::write_all(&mut other, b"other").unwrap();
        let taken = slot.link_unnamed(&other).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(folder.join("a.txt")).unwrap(), b"hello");
        drop(other);
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);
    }

    #[test]
    fn links_out_of_the_share_are_not_followed() {
        let (dir, share) = share();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, b"secret").unwrap();
        symlink(&outside, share.root().join("leak.txt")).unwrap();
        symlink(dir.path(), share.root().join("up")).unwrap();
        assert!(matches!(
            share.open_existing(&name("leak.txt")),
            Err(HubError::NotFound(_))
        ));
        assert!(matches!(
            share.open_existing(&name("up/secret.txt")),
            Err(HubError::NotFound(_))
        ));
        assert!(share.slot(&name("up/new.txt"), false).is_err());
        assert!(share.slot(&name("up/new.txt"), true).is_err());
        assert!(
            share.list(ListQuery::first("")).entries.is_empty(),
            "{:?}",
            share.list(ListQuery::first("")).entries
        );
    }

    #[test]
    fn links_inside_the_share_work() {
        let (_dir, share) = share();
        std::fs::write(share.root().join("a.txt"), b"a").unwrap();
        symlink(share.root().join("a.txt"), share.root().join("b.txt")).unwrap();
        let listed: Vec<_> = share
            .list(ListQuery::first(""))
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(listed, ["a.txt", "b.txt"]);
        let read = |n| std::io::read_to_string(share.open_existing(&name(n)).unwrap()).unwrap();
        assert_eq!(read("b.txt"), "a", "the link reaches the file it names");
    }

    #[test]
    fn the_state_folder_is_never_listed_or_resolved() {
        let (_dir, share) = share();
        std::fs::write(share.state_dir().join("x"), b"x").unwrap();
        symlink(share.state_dir(), share.root().join("st")).unwrap();
        assert!(share.list(ListQuery::first("")).entries.is_empty());
        assert!(share.open_existing(&name("st/x")).is_err());
        assert!(share.slot(&name("st/y"), true).is_err());
    }

    #[test]
    fn open_existing_takes_the_fast_path_and_still_refuses_links_out_and_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        // A state folder configured inside the share under another name than .troca.
        let share = Share::open(&root, &root.join("private")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("private/secret"), b"s").unwrap();
        std::fs::write(dir.path().join("outside"), b"o").unwrap();
        symlink(dir.path().join("outside"), root.join("out")).unwrap();
        symlink(root.join("a.txt"), root.join("in")).unwrap();
        let read = |n| std::io::read_to_string(share.open_existing(&name(n)).unwrap()).unwrap();
        assert_eq!(read("a.txt"), "a");
        assert_eq!(read("in"), "a", "a link inside resolves");
        assert!(share.open_existing(&name("out")).is_err());
        assert!(share.open_existing(&name("private/secret")).is_err());
        assert!(share.open_existing(&name("missing")).is_err());
    }

    #[test]
    fn make_parent_creates_folders_and_refuses_files_in_the_way() {
        let (_dir, share) = share();
        let t = share.slot(&name("a/b/c.txt"), true).unwrap();
        assert_eq!(t.path(), share.root().join("a/b/c.txt"));
        assert!(share.root().join("a/b").is_dir());
        std::fs::write(share.root().join("f"), b"").unwrap();
        assert!(matches!(
            share.slot(&name("f/x"), true),
            Err(HubError::BadRequest(_))
        ));
        let folder = share.slot(&name("a/b"), false).unwrap();
        assert_eq!(folder.kind().unwrap(), Some(FileType::Directory));
    }

    #[test]
    fn list_filters_by_prefix_and_sorts() {
        let (_dir, share) = share();
        for n in ["b.txt", "a.txt", "sub/c.txt", "sub/d.txt"] {
            let p = share.slot(&name(n), true).unwrap().path();
            std::fs::write(p, n).unwrap();
        }
        let all: Vec<_> = share
            .list(ListQuery::first(""))
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(all, ["a.txt", "b.txt", "sub/c.txt", "sub/d.txt"]);
        let sub: Vec<_> = share
            .list(ListQuery::first("sub/"))
            .entries
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(sub, ["sub/c.txt", "sub/d.txt"]);
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;

    /// A tree: files and empty folders, with names whose characters sort on both sides of `/`
    /// (`-` and `.` before it, letters after), where a folder-by-folder walk and byte order
    /// part ways unless the walk is careful.
    fn tree() -> impl Strategy<Value = (BTreeSet<String>, BTreeSet<String>)> {
        let part = proptest::sample::select(vec!["a", "b", "a-c", "a.d", "b0", "z"]);
        let path = proptest::collection::vec(part, 1..4).prop_map(|p| p.join("/"));
        (
            proptest::collection::btree_set(path.clone(), 0..24),
            proptest::collection::btree_set(path, 0..6),
        )
    }

    /// Makes the tree on disk; returns what a listing must show: every file, and each folder
    /// with nothing beneath it as `NAME/`, in byte order.
    fn make(root: &Path, files: &BTreeSet<String>, folders: &BTreeSet<String>) -> Vec<String> {
        let mut made_files = BTreeSet::new();
        for f in files {
            // A name already a folder (or beneath a file) cannot also be a file.
            let p = root.join(f);
            if std::fs::create_dir_all(p.parent().unwrap()).is_ok()
                && !p.is_dir()
                && std::fs::write(&p, f).is_ok()
            {
                made_files.insert(f.clone());
            }
        }
        for d in folders {
            let _ = std::fs::create_dir_all(root.join(d));
        }
        let mut dirs = BTreeSet::new();
        for e in walkdir(root) {
            if e.1 {
                dirs.insert(e.0);
            }
        }
        let mut want: Vec<String> = made_files.into_iter().collect();
        for d in &dirs {
            let inside = format!("{d}/");
            if !want.iter().any(|f| f.starts_with(&inside))
                && !dirs.iter().any(|o| o.starts_with(&inside))
            {
                want.push(inside);
            }
        }
        want.sort();
        want
    }

    /// Every path beneath `root` (relative), with whether it is a folder.
    fn walkdir(root: &Path) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                if rel == ".troca" {
                    continue;
                }
                let is_dir = p.is_dir();
                if is_dir {
                    todo.push(p);
                }
                out.push((rel, is_dir));
            }
        }
        out
    }

    /// A listing read in one page.
    fn whole(share: &Share, prefix: &str) -> Vec<String> {
        let page = share.list(ListQuery {
            limit: 10_000,
            ..ListQuery::after(prefix, None)
        });
        page.entries.into_iter().map(|e| e.name).collect()
    }

    /// A listing read page by page, `limit` entries a page.
    fn paged(share: &Share, prefix: &str, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = share.list(ListQuery {
                limit,
                ..ListQuery::after(prefix, after.as_deref())
            });
            assert!(page.entries.len() <= limit);
            out.extend(page.entries.into_iter().map(|e| e.name));
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn pages_join_into_the_whole_listing_in_byte_order(
            (files, folders) in tree(),
            limit in 1usize..6,
            prefix in proptest::sample::select(vec!["", "a", "a/", "a-", "b", "z/a"]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("share");
            let share = Share::open(&root, &root.join(".troca")).unwrap();
            let want: Vec<String> = make(&root, &files, &folders)
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect();
            prop_assert_eq!(&whole(&share, prefix), &want);
            prop_assert_eq!(paged(&share, prefix, limit), want);
        }

        /// A listing of children, page by page, is what the folder holds directly: its files,
        /// and each folder in it as `NAME/` (empty or not), in byte order.
        #[test]
        fn a_listing_of_children_is_what_the_folder_holds(
            (files, folders) in tree(),
            limit in 1usize..6,
            folder in proptest::sample::select(vec!["", "a/", "b/", "a/a/", "z/", "e/", "a/e/"]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("share");
            let share = Share::open(&root, &root.join(".troca")).unwrap();
            make(&root, &files, &folders);
            // Empty folders, which a listing of everything shows as themselves: a listing of
            // what one holds shows nothing, never the folder itself.
            std::fs::create_dir_all(root.join("e")).unwrap();
            if root.join("a").is_dir() {
                std::fs::create_dir_all(root.join("a/e")).unwrap();
            }
            let mut want: Vec<String> = match std::fs::read_dir(root.join(folder)) {
                Ok(read) => read
                    .map(|e| e.unwrap())
                    .filter(|e| e.file_name() != ".troca")
                    .map(|e| {
                        let slash = if e.file_type().unwrap().is_dir() { "/" } else { "" };
                        format!("{folder}{}{slash}", e.file_name().to_str().unwrap())
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            want.sort();
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let query = ListQuery { limit, ..ListQuery::children_after(folder, after.as_deref()) };
                let page = share.list(query);
                got.extend(page.entries.into_iter().map(|e| e.name));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    /// Links (named `l` mostly) in the folders of a tree (`""`: the root), each to a path of
    /// it, which may not exist.
    fn links() -> impl Strategy<Value = Vec<(String, &'static str, String)>> {
        let part = proptest::sample::select(vec!["a", "b", "a-c", "z"]);
        let path = proptest::collection::vec(part, 0..3).prop_map(|p| p.join("/"));
        let name = proptest::sample::select(vec!["l", "l", "m", "0"]);
        proptest::collection::vec((path.clone(), name, path), 0..6)
    }

    /// Makes link `at/name` to `to`, relative, as people make them.
    fn make_link(root: &Path, at: &str, name: &str, to: &str) {
        let up = if at.is_empty() {
            0
        } else {
            at.split('/').count()
        };
        let target = format!("{}{to}", "../".repeat(up));
        let target = if target.is_empty() {
            ".".to_owned()
        } else {
            target
        };
        let _ = symlink(target, root.join(at).join(name));
    }

    /// What a listing of `prefix` must show, walked with std: files and links to files, each
    /// folder with nothing beneath it as `NAME/`, and a link to a folder as `NAME/` unless the
    /// listing is of what is inside it. The share itself is never reached through a link.
    fn model(root: &Path, dir: &Path, rel: &str, prefix: &str, out: &mut Vec<String>) {
        let Ok(read) = std::fs::read_dir(dir) else {
            return;
        };
        for e in read {
            let name = e.unwrap().file_name().into_string().unwrap();
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if key == ".troca" {
                continue;
            }
            let path = dir.join(&name);
            let linked = path.symlink_metadata().unwrap().is_symlink();
            let Ok(meta) = path.metadata() else { continue };
            let real = path.canonicalize().unwrap();
            let folder = format!("{key}/");
            if !meta.is_dir() {
                if key.starts_with(prefix) && real.starts_with(root) {
                    out.push(key);
                }
            } else if linked && (real == root || !real.starts_with(root)) {
            } else if linked && !prefix.starts_with(&folder) {
                if folder.starts_with(prefix) {
                    out.push(folder);
                }
            } else if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                let before = out.len();
                model(root, &path, &key, prefix, out);
                if out.len() == before && folder.starts_with(prefix) {
                    out.push(folder);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn links_to_folders_list_as_folders_and_open_to_a_listing_of_their_inside(
            (files, folders) in tree(),
            links in links(),
            limit in 1usize..6,
            prefix in proptest::sample::select(
                vec!["", "l", "l/", "l/a", "l/l/", "a/l/", "a/l/l/b", "b/l/", "a-"]
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("share");
            let share = Share::open(&root, &root.join(".troca")).unwrap();
            make(&root, &files, &folders);
            for (at, name, to) in &links {
                make_link(&root, at, name, to);
            }
            let root = root.canonicalize().unwrap();
            let mut want = Vec::new();
            model(&root, &root, "", prefix, &mut want);
            want.sort();
            prop_assert_eq!(&whole(&share, prefix), &want);
            prop_assert_eq!(paged(&share, prefix, limit), want);
        }
    }

    /// A folder larger than a batch of its entries is emptied whole, every file counted,
    /// sub-folders and links with it (never what a link points to); a walk of its files sees
    /// each once.
    #[test]
    fn a_folder_larger_than_a_batch_is_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let share = Share::open(&root, &root.join(".troca")).unwrap();
        std::fs::create_dir_all(root.join("big/sub")).unwrap();
        let files = EMPTY_BATCH + 10;
        for i in 0..files {
            std::fs::write(root.join(format!("big/f{i}")), b"").unwrap();
        }
        std::fs::write(root.join("big/sub/inner"), b"").unwrap();
        std::fs::write(root.join("kept.txt"), b"kept").unwrap();
        symlink("../kept.txt", root.join("big/link")).unwrap();
        let big = RemoteName::parse("big").unwrap();
        let mut walked = std::collections::HashSet::new();
        share
            .each_file_beneath(&big, &mut |n| {
                assert!(walked.insert(n.to_owned()), "{n} twice");
                Ok(())
            })
            .unwrap();
        assert_eq!(walked.len(), files + 2);
        assert!(walked.contains("big/sub/inner") && walked.contains("big/link"));
        let removed = share.remove_tree(&big).unwrap();
        assert_eq!(removed, (files + 2) as u64);
        assert!(!root.join("big").exists());
        assert_eq!(std::fs::read(root.join("kept.txt")).unwrap(), b"kept");
    }

    #[test]
    fn a_link_to_the_share_or_the_state_is_no_folder_and_a_search_does_not_enter_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let share = Share::open(&root, &root.join(".troca")).unwrap();
        std::fs::create_dir_all(root.join("photos/2024")).unwrap();
        std::fs::write(root.join("photos/2024/b.txt"), b"b").unwrap();
        symlink("photos", root.join("fotos")).unwrap();
        symlink(".", root.join("photos/2024/top")).unwrap();
        symlink("../..", root.join("photos/2024/up")).unwrap();
        symlink(".troca", root.join("st")).unwrap();
        let list = |prefix| -> Vec<String> {
            let page = share.list(ListQuery::first(prefix));
            page.entries.into_iter().map(|e| e.name).collect()
        };
        assert_eq!(
            list(""),
            ["fotos/", "photos/2024/b.txt", "photos/2024/top/"]
        );
        assert_eq!(list("fotos/"), ["fotos/2024/b.txt", "fotos/2024/top/"]);
        assert_eq!(
            list("fotos/2024/top/top/"),
            ["fotos/2024/top/top/b.txt", "fotos/2024/top/top/top/"],
            "a loop goes only as deep as the name asked for"
        );
        assert!(list("photos/2024/up/").is_empty(), "the share itself");
        assert!(list("st/").is_empty(), "the state folder");
        let find = |within| -> Vec<String> {
            let query = FindQuery {
                text: "o",
                within,
                limit: 100,
                budget: u64::MAX,
            };
            share
                .find(query)
                .entries
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(find(None), ["fotos/", "photos/", "photos/2024/top/"]);
        assert_eq!(
            find(Some("fotos")),
            ["fotos/", "fotos/2024/top/"],
            "a token held to a link's folder searches what it reaches"
        );
        assert!(find(Some("photos/2024/up")).is_empty(), "the share itself");
        assert!(find(Some("st")).is_empty(), "the state folder");
        assert!(find(Some(".troca")).is_empty(), "the state folder");
    }

    #[test]
    fn a_page_goes_on_after_a_name_that_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let share = Share::open(&root, &root.join(".troca")).unwrap();
        for n in ["a/1", "a/2", "a/3", "b/1"] {
            std::fs::create_dir_all(root.join(n).parent().unwrap()).unwrap();
            std::fs::write(root.join(n), n).unwrap();
        }
        let first = share.list(ListQuery {
            limit: 2,
            ..ListQuery::after("", None)
        });
        assert_eq!(first.next.as_deref(), Some("a/2"));
        std::fs::remove_file(root.join("a/2")).unwrap();
        let rest = share.list(ListQuery {
            limit: 10,
            ..ListQuery::after("", first.next.as_deref())
        });
        let names: Vec<_> = rest.entries.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a/3", "b/1"]);
        assert_eq!(rest.next, None);
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;
    use proptest::prelude::*;

    /// Every file and folder under `root` (but the state folder) whose own name holds `text`,
    /// by whole name: what a search must find, worked out the slow way.
    fn all_matches(root: &Path, rel: &str, text: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let own = e.file_name().into_string().unwrap();
            let name = if rel.is_empty() {
                own.clone()
            } else {
                format!("{rel}/{own}")
            };
            if name == ".troca" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                if own.contains(text) {
                    out.push(format!("{name}/"));
                }
                all_matches(root, &name, text, out);
            } else if own.contains(text) {
                out.push(name);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A search keeps the first matches by name, whatever order the folders read in and
        /// however many it may keep: the same as finding them all and taking the first.
        #[test]
        fn a_search_finds_the_first_matches_by_name(
            paths in proptest::collection::vec("[ab]{1,2}(/[ab]{1,2}){0,3}", 1..40),
            limit in 1usize..12,
            within in proptest::option::of("[ab]{1,2}(/[ab]{1,2}){0,1}"),
        ) {
            let (_dir, root, share) = share_of(&paths);
            let mut all = Vec::new();
            all_matches(&root, "", "a", &mut all);
            // A search within a folder finds what a search of the share finds in it.
            if let Some(w) = &within {
                let folder = format!("{w}/");
                let is_folder = root.join(w).is_dir();
                all.retain(|n| is_folder && n.starts_with(&folder));
            }
            all.sort();
            let matched = all.len();
            all.truncate(limit);
            let query = FindQuery { text: "a", within: within.as_deref(), limit, budget: u64::MAX };
            let found = share.find(query);
            // Cut when more matched than it answers; never when fewer did (when exactly as
            // many did, a folder it did not need to read may have held more).
            prop_assert!(matched <= limit || found.cut);
            prop_assert!(matched >= limit || !found.cut);
            let found: Vec<String> = found.entries.into_iter().map(|e| e.name).collect();
            prop_assert_eq!(found, all);
        }

        /// A search held to a budget of names answers some of the matches, in order, and says
        /// it stopped when it had to; with budget enough, it answers what an unbounded one does.
        #[test]
        fn a_search_stops_at_its_budget_and_says_so(
            paths in proptest::collection::vec("[ab]{1,2}(/[ab]{1,2}){0,3}", 1..40),
            limit in 1usize..12,
            budget in 0u64..60,
        ) {
            let (_dir, root, share) = share_of(&paths);
            let mut all = Vec::new();
            all_matches(&root, "", "a", &mut all);
            all.sort();
            let find = |budget| share.find(FindQuery { text: "a", within: None, limit, budget });
            let whole = find(u64::MAX);
            let found = find(budget);
            let names: Vec<&String> = found.entries.iter().map(|e| &e.name).collect();
            prop_assert!(names.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(names.iter().all(|n| all.contains(n)));
            let entries = entries_beneath(&root);
            if budget >= entries {
                prop_assert_eq!(&found, &whole);
            } else if all.len() < limit {
                // Nothing could be skipped: every name had to be looked at.
                prop_assert!(found.cut);
            }
        }
    }

    /// A share holding a file at each of `paths` (one under a file, or one that is a folder
    /// already, is left out): the folder that holds it, its root, and the share.
    fn share_of(paths: &[String]) -> (tempfile::TempDir, PathBuf, Share) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        let share = Share::open(&root, &root.join(".troca")).unwrap();
        for p in paths {
            let path = root.join(p);
            if std::fs::create_dir_all(path.parent().unwrap()).is_ok() {
                let _ = std::fs::write(&path, p.as_bytes());
            }
        }
        (dir, root, share)
    }

    /// How many entries a search of the share reads: every one, the state folder's own entry
    /// but not what it holds.
    fn entries_beneath(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let inner = e.file_type().unwrap().is_dir() && e.file_name() != ".troca";
                1 + if inner { entries_beneath(&e.path()) } else { 0 }
            })
            .sum()
    }
}
