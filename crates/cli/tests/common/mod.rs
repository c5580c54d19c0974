//! Black-box fixtures: a hub started from the real `troca` binary on a free port (killed on
//! drop), the real client run against it, and helpers to make and compare files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const TROCA: &str = env!("CARGO_BIN_EXE_troca");

/// A long-running `troca` process (hub, tracker, peer) that printed `listening on ADDR` as its
/// first line; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// What it has written to stderr so far.
    said: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Whether `tool` is installed. Outside CI a missing tool skips the test that needs it, saying
/// why; with `CI` set it fails the test, since the test command installs every tool.
pub fn needs(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    skip_unless(found, &format!("{tool} is not installed ({why})"))
}

/// Whether the tests run as root (to mount a small tmpfs); as [`needs`] otherwise.
pub fn needs_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    skip_unless(root, &format!("not running as root ({why})"))
}

fn skip_unless(ok: bool, reason: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{reason}; the test command (scripts/test) sets it up"
        );
        eprintln!("skipped: {reason}");
    }
    ok
}

/// A free port on loopback (for a tool that cannot be told to pick one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runtime for a test that drives async clients from plain code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The data folder daemons (peers) run with: one for the whole test run.
pub fn daemon_data() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-data")
}

impl Daemon {
    /// Runs `troca ARGS` and waits for its `listening on` line.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Daemon {
        Daemon::start_with_lines(args, 0).0
    }

    /// Runs `troca ARGS`, waits for its `listening on` line and returns the `extra` lines after
    /// it too.
    pub fn start_with_lines<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        extra: usize,
    ) -> (Daemon, Vec<String>) {
        let mut child = Command::new(TROCA)
            .args(args)
            // What a peer keeps (its TLS key) stays out of the home folder of whoever runs
            // the tests.
            .env("XDG_DATA_HOME", daemon_data())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start troca");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let lines = (0..extra)
            .map(|_| {
                let mut l = String::new();
                stdout.read_line(&mut l).expect("read stdout");
                l.trim().to_owned()
            })
            .collect();
        // Keep draining so the process never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let heard = std::sync::Arc::clone(&said);
        let stderr = std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).is_ok_and(|n| n > 0) {
                heard.lock().unwrap().push_str(&line);
                line.clear();
            }
            let all = heard.lock().unwrap().clone();
            all
        });
        (
            Daemon {
                child,
                addr,
                stderr: Some(stderr),
                said,
            },
            lines,
        )
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits until the process has written `text` to stderr; returns all it wrote so far.
    pub fn wait_for_stderr(&self, text: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let said = self.said.lock().unwrap().clone();
            if said.contains(text) {
                return said;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "timed out waiting for {text:?} on stderr; it said: {said}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (a hub reads its given certificate again).
    pub fn signal_hup(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Sends SIGTERM and waits for the exit; returns the status and stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.signal_term();
        let status = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `troca serve`.
pub struct Hub {
    pub daemon: Daemon,
    pub addr: String,
    /// The web page's address (`http://127.0.0.1:PORT/`), unless started with `--no-http`.
    pub web: Option<String>,
    /// The hub's key as it printed it (`None` with `--plaintext`).
    pub key: Option<String>,
    /// Where its metrics are (`http://ADDR/metrics`), when started with `--metrics`.
    pub metrics: Option<String>,
    pub dir: PathBuf,
}

impl Hub {
    /// Serves `dir` on a free port with extra `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Hub {
        Hub::start_on(dir, "127.0.0.1:0", args)
    }

    /// Serves `dir` on `addr` with extra `args`.
    pub fn start_on(dir: &Path, addr: &str, args: &[&str]) -> Hub {
        let mut all = vec![
            "serve".as_ref(),
            dir.as_os_str(),
            "--listen".as_ref(),
            addr.as_ref(),
        ];
        // The web face over plain HTTP, so tests can speak it with any tool, unless the test
        // asks for HTTPS with "--https" (not a serve flag: it only drops that default).
        let https = args.contains(&"--https");
        all.extend(
            args.iter()
                .filter(|a| **a != "--https")
                .map(std::ffi::OsStr::new),
        );
        if !https && !args.contains(&"--plaintext") {
            all.push(std::ffi::OsStr::new("--http-plaintext"));
        }
        // The web face on a free port too, so tests never collide on the default one.
        let with_http = !args.contains(&"--no-http");
        if with_http && !args.contains(&"--http") {
            all.extend([
                std::ffi::OsStr::new("--http"),
                std::ffi::OsStr::new("127.0.0.1:0"),
            ]);
        }
        let tls = !args.contains(&"--plaintext");
        let with_metrics = args.contains(&"--metrics");
        let extra = usize::from(with_http) + usize::from(with_metrics) + if tls { 2 } else { 0 };
        let (daemon, lines) = Daemon::start_with_lines(&all, extra);
        let key = lines
            .iter()
            .find_map(|l| l.strip_prefix("key "))
            .map(str::to_owned);
        let metrics = lines
            .iter()
            .find_map(|l| l.strip_prefix("metrics "))
            .map(str::to_owned);
        let hub = Hub {
            metrics,
            addr: daemon.addr.clone(),
            web: lines.into_iter().find(|l| l.starts_with("http")),
            key,
            daemon,
            dir: dir.to_path_buf(),
        };
        hub.trust_in(&hub.client_data());
        hub
    }

    /// Makes the clients run with `XDG_DATA_HOME=data` trust this hub's key (as if someone had
    /// said yes once), so tests need not pin it on every command.
    pub fn trust_in(&self, data: &Path) {
        if let Some(key) = &self.key {
            let dir = data.join("troca");
            std::fs::create_dir_all(&dir).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("known_hubs"))
                .unwrap();
            writeln!(f, "{} {key}", self.addr).unwrap();
        }
    }

    /// How a client in this process trusts this hub: its printed key, or plaintext.
    pub fn trust(&self) -> troca_net::Trust {
        match &self.key {
            Some(k) => troca_net::Trust::Key(Some(k.parse().expect("the printed key parses"))),
            None => troca_net::Trust::Plaintext,
        }
    }

    /// Options for a client in this process (anonymous, no token, trusting this hub).
    pub fn options(&self) -> troca_net::ClientOptions {
        troca_net::ClientOptions {
            trust: self.trust(),
            ..Default::default()
        }
    }

    /// Environment for a client of this hub: its address, and plaintext if it runs so.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("TROCA_HUB", self.addr.clone())];
        if self.key.is_none() {
            env.push(("TROCA_PLAINTEXT", "1".to_owned()));
        }
        env
    }

    /// Runs the client with `args` in `cwd` against this hub.
    pub fn troca(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(TROCA)
            .current_dir(cwd)
            .envs(self.client_env())
            .env("XDG_DATA_HOME", self.client_data())
            .env_remove("TROCA_TOKEN")
            .args(args)
            .output()
            .expect("run troca")
    }

    /// Runs the client as another person on another machine: its own data folder (so its own
    /// owner key), and `token` if given.
    pub fn troca_as(&self, cwd: &Path, who: &str, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(TROCA);
        let data = self.client_data().join(who);
        if !data.join("troca/known_hubs").exists() {
            self.trust_in(&data);
        }
        cmd.current_dir(cwd)
            .envs(self.client_env())
            .env("XDG_DATA_HOME", data)
            .env_remove("TROCA_TOKEN")
            .args(args);
        if let Some(t) = token {
            cmd.env("TROCA_TOKEN", t);
        }
        cmd.output().expect("run troca")
    }

    /// Runs the client with a token (passed as TROCA_TOKEN, never as an argument).
    pub fn troca_with(&self, cwd: &Path, token: &str, args: &[&str]) -> Output {
        Command::new(TROCA)
            .current_dir(cwd)
            .envs(self.client_env())
            .env("XDG_DATA_HOME", self.client_data())
            .env("TROCA_TOKEN", token)
            .args(args)
            .output()
            .expect("run troca")
    }

    /// Where the clients run by the tests keep their data (owner keys), beside the share rather
    /// than in the real home folder.
    pub fn client_data(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("client-data")
    }

    /// The admin token the hub made on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join(".troca/admin.token"))
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Sends SIGTERM and waits for the hub to exit; returns its stderr.
    pub fn terminate(self) -> (std::process::ExitStatus, String) {
        self.daemon.terminate()
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        self.daemon.signal_term()
    }
}

/// Asserts the command succeeded and returns its stdout.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Gives the file at `path` the modification time `secs` seconds after the epoch.
pub fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    f.set_modified(at).unwrap();
}

/// Runs curl, quiet but for errors, giving up after a minute.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test installs it)")
}

/// Asserts the command failed with `code` and returns its stderr.
#[track_caller]
pub fn fails(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

/// Writes `len` pseudo-random bytes (a BLAKE3 stream of `seed`) to `path`, in constant memory.
pub fn random_file(path: &Path, len: u64, seed: &str) {
    let mut xof = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// The BLAKE3 hash of a file, as hex.
pub fn hash_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

/// Every file under `dir` (relative paths, sorted), skipping the state folder.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.file_name().unwrap() == ".troca" {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A scratch area with a shared folder and a client folder.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
    pub share: PathBuf,
    pub client: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        let client = tmp.path().join("client");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::create_dir_all(&client).unwrap();
        Scratch { tmp, share, client }
    }
}

/// A small tmpfs mounted for one test and unmounted on drop.
pub struct SmallDisk {
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Starts an upload of `file` with the library client, sends its first `len` bytes, and drops
/// the connection as a killed client would.
/// A `Put` of all of `file` as `name` that may resume (its source's time is given).
pub fn resumable_put(file: &Path, name: &str) -> troca_proto::msg::Put {
    let meta = std::fs::metadata(file).unwrap();
    troca_proto::msg::Put {
        name: name.into(),
        size: meta.len(),
        source_mtime_ns: troca_net::transfer::mtime_ns(&meta),
        force: false,
    }
}

pub async fn abandon_upload(hub: &Hub, file: &Path, name: &str, len: u64) {
    let mut client = troca_net::HubClient::connect(&hub.addr, &hub.options())
        .await
        .unwrap();
    let mut up = client.put(resumable_put(file, name)).await.unwrap();
    assert_eq!(up.offset(), 0);
    let mut data = std::fs::read(file).unwrap();
    data.truncate(len as usize);
    up.write(&data).await.unwrap();
}

/// Writes each `(name, contents)` under `root`, making the folders on the way.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (name, contents) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

/// A token of `role` made in `hub`'s state folder, with `extra` options of `token create`.
pub fn make_token(hub: &Hub, role: &str, extra: &[&str]) -> String {
    let out = Command::new(TROCA)
        .args(["token", "create", "--role", role])
        .args(extra)
        .arg("--state")
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    ok(&out).trim().to_owned()
}

/// A token of `role` held to `folder`, made in `hub`'s state folder; and what the command said
/// on stderr.
pub fn folder_token(hub: &Hub, role: &str, folder: &str) -> (String, String) {
    let out = Command::new(TROCA)
        .args(["token", "create", "--role", role, "--folder", folder])
        .arg("--state")
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    (ok(&out).trim().to_owned(), said)
}

/// One row of a folder's web page, as its `data-` attributes give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRow {
    pub name: String,
    /// The files beneath a folder (1 for a file); `None` for a folder the page did not count.
    pub files: Option<u64>,
    pub size: Option<u64>,
    /// Whether the page offers its visitor to rename or delete it.
    pub mine: bool,
}

/// The rows of a folder's web page, and the name its link to the next rows starts after.
/// Names must need no escaping.
pub fn page_rows(html: &str) -> (Vec<PageRow>, Option<String>) {
    let attr = |tag: &str, key: &str| -> Option<String> {
        let at = tag.find(&format!(" {key}=\""))? + key.len() + 3;
        Some(tag[at..].split('"').next()?.to_owned())
    };
    let rows = html.split("<tr data-name=\"").skip(1).map(|rest| {
        let tag = format!(" data-name=\"{}", rest.split('>').next().unwrap());
        PageRow {
            name: attr(&tag, "data-name").unwrap(),
            files: attr(&tag, "data-files").map(|n| n.parse().unwrap()),
            size: attr(&tag, "data-size").map(|n| n.parse().unwrap()),
            mine: attr(&tag, "data-mine").is_some(),
        }
    });
    let more = html.split("?after=").nth(1).map(|rest| {
        let encoded = rest.split('"').next().unwrap();
        let decoded = percent_encoding::percent_decode_str(encoded);
        decoded.decode_utf8().unwrap().into_owned()
    });
    (rows.collect(), more)
}

/// The rows of the web page of `folder` (`""` or `NAME/`), after `after`, fetched by `curl`
/// with `headers`.
pub fn folder_page(
    hub: &Hub,
    folder: &str,
    after: Option<&str>,
    headers: &[&str],
) -> (Vec<PageRow>, Option<String>) {
    let web = hub.web.clone().unwrap();
    let mut url = format!("{web}files/{folder}");
    if let Some(a) = after {
        let a = percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC);
        url.push_str(&format!("?after={a}"));
    }
    let mut args = vec!["-f"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = curl(&args);
    page_rows(&ok(&out))
}

/// The text of the one QR code in a picture of `width` × `height` pixels whose luminance at
/// (x, y) is `grey(x, y)` (0 black, 255 white), as a phone's scanner would read it.
#[allow(dead_code)]
pub fn scan_qr(width: usize, height: usize, grey: impl FnMut(usize, usize) -> u8) -> String {
    let mut picture = rqrr::PreparedImage::prepare_from_greyscale(width, height, grey);
    let grids = picture.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().expect("a QR code that decodes").1
}

/// The text of a QR code drawn in a terminal with half blocks (`▀`, `▄`, `█`; two rows of
/// modules a line), each module drawn 4 pixels wide for the scanner.
#[allow(dead_code)]
pub fn scan_terminal_qr(drawn: &str) -> String {
    let lines: Vec<Vec<char>> = drawn
        .lines()
        .filter(|l| l.contains(['▀', '▄', '█']))
        .map(|l| l.chars().collect())
        .collect();
    let width = lines.iter().map(Vec::len).max().unwrap();
    let dark = |x: usize, y: usize| {
        let c = lines[y / 2].get(x).copied().unwrap_or(' ');
        matches!((c, y % 2), ('█', _) | ('▀', 0) | ('▄', 1))
    };
    const SCALE: usize = 4;
    let margin = 4 * SCALE;
    let (w, h) = (
        width * SCALE + 2 * margin,
        lines.len() * 2 * SCALE + 2 * margin,
    );
    scan_qr(w, h, |x, y| {
        let inside = x >= margin && y >= margin && x < w - margin && y < h - margin;
        match inside && dark((x - margin) / SCALE, (y - margin) / SCALE) {
            true => 0,
            false => 255,
        }
    })
}
