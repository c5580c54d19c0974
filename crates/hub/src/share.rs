//! Where remote names meet the filesystem. Names arrive already checked by
//! [`RemoteName::parse`]; this module adds the one thing a string check cannot see: symbolic
//! links. Every path it hands out is inside the shared folder after resolving links, and outside
//! the state folder.
//!
//! (A local user who can swap a folder for a link between the check and the use could still race
//! it; the hub defends against remote clients, who cannot create links.)

use crate::error::HubError;
use crate::hashes::HashCache;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use troca_proto::msg::Entry;
use troca_proto::RemoteName;

/// The shared folder.
#[derive(Debug)]
pub struct Share {
    root: PathBuf,
    state: PathBuf,
    /// The state folder relative to the root, when it is inside it.
    state_rel: Option<PathBuf>,
    /// The root, held open for `openat2` lookups beneath it.
    root_dir: File,
    /// Cleared if the kernel lacks `openat2`, so the careful path is used from then on.
    openat2_works: AtomicBool,
    pub hashes: HashCache,
}

impl Share {
    /// Opens (creating if needed) the shared folder and the state folder.
    pub fn open(root: &Path, state: &Path) -> Result<Self, HubError> {
        std::fs::create_dir_all(root)
            .map_err(|e| HubError::io(format!("cannot create {}", root.display()), e))?;
        std::fs::create_dir_all(state)
            .map_err(|e| HubError::io(format!("cannot create {}", state.display()), e))?;
        let canon = |p: &Path| {
            p.canonicalize()
                .map_err(|e| HubError::io(format!("cannot resolve {}", p.display()), e))
        };
        let (root, state) = (canon(root)?, canon(state)?);
        let root_dir = File::open(&root)
            .map_err(|e| HubError::io(format!("cannot open {}", root.display()), e))?;
        Ok(Self {
            state_rel: state.strip_prefix(&root).ok().map(Path::to_path_buf),
            root,
            state,
            root_dir,
            openat2_works: AtomicBool::new(cfg!(target_os = "linux")),
            hashes: HashCache::default(),
        })
    }

    /// Opens an existing file for reading, returning it with its real path.
    ///
    /// The common case, a name with no symbolic link on the way, takes one `openat2` call that
    /// the kernel confines beneath the root and that refuses any link. A name through a link
    /// (or a kernel without `openat2`) takes the careful path: resolve, check, open.
    pub fn open_existing(&self, name: &RemoteName) -> Result<(File, PathBuf), HubError> {
        if let Some(rel) = &self.state_rel {
            if Path::new(name.as_str()).starts_with(rel) {
                return Err(HubError::NotFound(name.to_string()));
            }
        }
        #[cfg(target_os = "linux")]
        if self.openat2_works.load(Ordering::Relaxed) {
            match self.openat2_beneath(name) {
                Ok(file) => return Ok((file, self.root.join(name.as_str()))),
                Err(e) if is_not_found(&e) => return Err(HubError::NotFound(name.to_string())),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
                    self.openat2_works.store(false, Ordering::Relaxed);
                }
                // ELOOP (a link on the way) or EXDEV (it would leave the root): look closer.
                Err(_) => {}
            }
        }
        let real = self.resolve_existing(name)?;
        let file = File::open(&real).map_err(|e| {
            if is_not_found(&e) {
                HubError::NotFound(name.to_string())
            } else {
                HubError::io(format!("cannot open {name}"), e)
            }
        })?;
        Ok((file, real))
    }

    #[cfg(target_os = "linux")]
    fn openat2_beneath(&self, name: &RemoteName) -> io::Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let path = std::ffi::CString::new(name.as_str())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is plain data; zeroed is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid dirfd, NUL-terminated path and a correctly sized open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root_dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
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

    /// The real path of an existing file, after following links; `NotFound` for anything that
    /// does not exist or resolves outside the share (the two are not told apart, so a client
    /// cannot probe the rest of the disk).
    pub fn resolve_existing(&self, name: &RemoteName) -> Result<PathBuf, HubError> {
        let joined = self.root.join(name.as_str());
        match joined.canonicalize() {
            Ok(real) if self.contains(&real) => Ok(real),
            Ok(_) => Err(HubError::NotFound(name.to_string())),
            Err(e) if is_not_found(&e) => Err(HubError::NotFound(name.to_string())),
            Err(e) => Err(HubError::io(format!("cannot open {name}"), e)),
        }
    }

    /// Where a new file called `name` would go, without creating anything. The folders on the way
    /// may be missing (they are made by [`Share::make_parent`]); those that exist must resolve
    /// inside the share.
    pub fn resolve_new(&self, name: &RemoteName) -> Result<PathBuf, HubError> {
        self.walk_parent(name, false)
    }

    /// Like [`Share::resolve_new`], creating the missing folders.
    pub fn make_parent(&self, name: &RemoteName) -> Result<PathBuf, HubError> {
        self.walk_parent(name, true)
    }

    fn walk_parent(&self, name: &RemoteName, create: bool) -> Result<PathBuf, HubError> {
        let components: Vec<&str> = name.components().collect();
        let (last, folders) = components.split_last().expect("a name has a component");
        let mut dir = self.root.clone();
        let mut missing = false;
        for folder in folders {
            dir.push(folder);
            if missing {
                if create {
                    mkdir(&dir)?;
                }
                continue;
            }
            match dir.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let real = dir
                        .canonicalize()
                        .map_err(|_| HubError::NotFound(name.to_string()))?;
                    if !self.contains(&real) || !real.is_dir() {
                        return Err(HubError::BadRequest(format!(
                            "{name:?} goes through a link that leaves the shared folder"
                        )));
                    }
                    dir = real;
                }
                Ok(_) => {
                    return Err(HubError::BadRequest(format!(
                        "cannot store {name:?}: {folder:?} is a file, not a folder"
                    )))
                }
                Err(e) if is_not_found(&e) => {
                    missing = true;
                    if create {
                        mkdir(&dir)?;
                    }
                }
                Err(e) => return Err(HubError::io(format!("cannot reach {name}"), e)),
            }
        }
        if !self.contains(&dir) && dir != self.root {
            return Err(HubError::NotFound(name.to_string()));
        }
        let target = dir.join(last);
        if target.is_dir() {
            return Err(HubError::NotAFile(name.to_string()));
        }
        Ok(target)
    }

    /// Lists the files whose names start with `prefix`, sorted by name. Blocking: walks the disk.
    pub fn list(&self, prefix: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.path().starts_with(&self.state));
        for entry in walker.filter_map(Result::ok) {
            let ft = entry.file_type();
            if !(ft.is_file() || ft.is_symlink()) {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if !rel.starts_with(prefix) {
                continue;
            }
            // Files whose names could never be requested (control characters, say) are not listed.
            let Ok(name) = RemoteName::parse(rel) else {
                continue;
            };
            let real = if ft.is_symlink() {
                match entry.path().canonicalize() {
                    Ok(real) if self.contains(&real) => real,
                    _ => continue,
                }
            } else {
                entry.path().to_path_buf()
            };
            let Ok(meta) = real.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified_ns = troca_net::transfer::mtime_ns(&meta);
            out.push(Entry {
                blake3: self.hashes.get(&real, meta.len(), modified_ns),
                name: name.to_string(),
                size: meta.len(),
                modified_ns,
            });
        }
        out
    }
}

fn mkdir(dir: &Path) -> Result<(), HubError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(HubError::io(
            format!("cannot create folder {}", dir.display()),
            e,
        )),
    }
}

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
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
    fn links_out_of_the_share_are_not_followed() {
        let (dir, share) = share();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, b"secret").unwrap();
        symlink(&outside, share.root().join("leak.txt")).unwrap();
        symlink(dir.path(), share.root().join("up")).unwrap();
        assert!(matches!(
            share.resolve_existing(&name("leak.txt")),
            Err(HubError::NotFound(_))
        ));
        assert!(matches!(
            share.resolve_existing(&name("up/secret.txt")),
            Err(HubError::NotFound(_))
        ));
        assert!(share.resolve_new(&name("up/new.txt")).is_err());
        assert!(share.list("").is_empty(), "{:?}", share.list(""));
    }

    #[test]
    fn links_inside_the_share_work() {
        let (_dir, share) = share();
        std::fs::write(share.root().join("a.txt"), b"a").unwrap();
        symlink(share.root().join("a.txt"), share.root().join("b.txt")).unwrap();
        let listed: Vec<_> = share.list("").into_iter().map(|e| e.name).collect();
        assert_eq!(listed, ["a.txt", "b.txt"]);
        assert_eq!(
            share.resolve_existing(&name("b.txt")).unwrap(),
            share.root().join("a.txt")
        );
    }

    #[test]
    fn the_state_folder_is_never_listed_or_resolved() {
        let (_dir, share) = share();
        std::fs::write(share.state_dir().join("x"), b"x").unwrap();
        symlink(share.state_dir(), share.root().join("st")).unwrap();
        assert!(share.list("").is_empty());
        assert!(share.resolve_existing(&name("st/x")).is_err());
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
        let (_, p) = share.open_existing(&name("a.txt")).unwrap();
        assert_eq!(p, root.canonicalize().unwrap().join("a.txt"));
        let (_, p) = share.open_existing(&name("in")).unwrap();
        assert_eq!(
            p,
            root.canonicalize().unwrap().join("a.txt"),
            "a link inside resolves"
        );
        assert!(share.open_existing(&name("out")).is_err());
        assert!(share.open_existing(&name("private/secret")).is_err());
        assert!(share.open_existing(&name("missing")).is_err());
    }

    #[test]
    fn make_parent_creates_folders_and_refuses_files_in_the_way() {
        let (_dir, share) = share();
        let t = share.make_parent(&name("a/b/c.txt")).unwrap();
        assert_eq!(t, share.root().join("a/b/c.txt"));
        assert!(share.root().join("a/b").is_dir());
        std::fs::write(share.root().join("f"), b"").unwrap();
        assert!(share.make_parent(&name("f/x")).is_err());
        assert!(matches!(
            share.resolve_new(&name("a/b")),
            Err(HubError::NotAFile(_))
        ));
    }

    #[test]
    fn list_filters_by_prefix_and_sorts() {
        let (_dir, share) = share();
        for n in ["b.txt", "a.txt", "sub/c.txt", "sub/d.txt"] {
            let p = share.make_parent(&name(n)).unwrap();
            std::fs::write(p, n).unwrap();
        }
        let all: Vec<_> = share.list("").into_iter().map(|e| e.name).collect();
        assert_eq!(all, ["a.txt", "b.txt", "sub/c.txt", "sub/d.txt"]);
        let sub: Vec<_> = share.list("sub/").into_iter().map(|e| e.name).collect();
        assert_eq!(sub, ["sub/c.txt", "sub/d.txt"]);
    }
}
