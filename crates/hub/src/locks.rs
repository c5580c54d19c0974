//! Locks on names (WebDAV's class 2), held in the hub so every face honours them: a name a
//! WebDAV client has locked cannot be replaced, moved or deleted through the native protocol,
//! the page or the JSON mode either, until the lock is released or runs out.
//!
//! The rules are RFC 4918's: an exclusive lock conflicts with every other lock on the same
//! names, shared locks with exclusive ones only; a deep (depth infinity) lock covers everything
//! beneath its name. A change passes if, for every lock covering it, the change presents that
//! lock's token (only WebDAV requests can, in their `If` header). The table is bounded
//! (`--max-locks`) and every lock expires (`--max-lock-time` at most), so no client can fill
//! memory or keep a name from everyone for good. No I/O and no clock of its own: the caller
//! passes `now`.

use std::time::{Duration, Instant};

/// One lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// `opaquelocktoken:` followed by a random UUID; unguessable, it is the lock's secret.
    pub token: String,
    /// The locked name (`""` for the whole share, a folder without its `/`).
    pub name: String,
    /// Who took it (`admin`, `token 7`, `anonymous`): only they may use its token.
    pub principal: Option<String>,
    /// The owner element the client sent, as XML text (given back in lock discovery).
    pub owner_xml: Option<String>,
    pub timeout: Duration,
    pub expires: Instant,
    pub shared: bool,
    /// Depth infinity: covers everything beneath `name` too.
    pub deep: bool,
    /// Whether the client named a folder (WebDAV writes its address with a `/`).
    pub folder: bool,
}

/// What a lock request or a change ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This lock is in the way.
    Conflict(Box<Lock>),
    /// The table holds its maximum of locks.
    Full(usize),
    /// The one asking holds its maximum of locks.
    TooMany(usize),
}

/// A request for a lock.
#[derive(Debug, Clone)]
pub struct LockRequest<'a> {
    pub name: &'a str,
    pub principal: Option<&'a str>,
    pub owner_xml: Option<String>,
    /// What the client asked for (`None`: no preference, or infinite).
    pub timeout: Option<Duration>,
    pub shared: bool,
    pub deep: bool,
    pub folder: bool,
}

/// What a change presents: the lock tokens it holds, and who it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub tokens: &'a [String],
    pub principal: Option<&'a str>,
}

/// The hub's locks.
#[derive(Debug)]
pub struct Locks {
    all: std::sync::Mutex<Vec<Lock>>,
    max: usize,
    /// The most one principal (a token) may hold, so one token cannot fill the table.
    max_per_holder: usize,
    max_time: Duration,
}

/// Whether `name` is `folder` or beneath it (`""` is the whole share).
pub fn within(name: &str, folder: &str) -> bool {
    folder.is_empty()
        || name == folder
        || name
            .strip_prefix(folder)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Lock {
    /// Does this lock cover `name` (its own name, or beneath it when deep)?
    fn covers(&self, name: &str) -> bool {
        self.name == name || (self.deep && within(name, &self.name))
    }

    fn held_by(&self, p: Presented<'_>) -> bool {
        p.tokens.contains(&self.token)
            && (p.principal.is_none() || p.principal == self.principal.as_deref())
    }
}

impl Locks {
    /// A table of at most `max` locks, each held for at most `max_time`.
    pub fn new(max: usize, max_time: Duration) -> Self {
        Self {
            all: Default::default(),
            max,
            max_per_holder: max,
            max_time,
        }
    }

    /// The same, one principal holding at most `n` of them.
    pub fn per_holder(self, n: usize) -> Self {
        Self {
            max_per_holder: n,
            ..self
        }
    }

    fn live(&self, now: Instant) -> std::sync::MutexGuard<'_, Vec<Lock>> {
        let mut all = self.all.lock().expect("locks poisoned");
        all.retain(|l| l.expires > now);
        all
    }

    /// Takes a lock, unless one in the way (or a full table) refuses it.
    pub fn lock(&self, req: LockRequest<'_>, now: Instant) -> Result<Lock, Refusal> {
        let mut all = self.live(now);
        if all.len() >= self.max {
            return Err(Refusal::Full(self.max));
        }
        let held = all
            .iter()
            .filter(|l| l.principal.as_deref() == req.principal)
            .count();
        if held >= self.max_per_holder {
            return Err(Refusal::TooMany(self.max_per_holder));
        }
        let in_way = all.iter().find(|l| {
            let overlaps = l.covers(req.name) || (req.deep && within(&l.name, req.name));
            overlaps && !(l.shared && req.shared)
        });
        if let Some(l) = in_way {
            return Err(Refusal::Conflict(Box::new(l.clone())));
        }
        let timeout = req.timeout.unwrap_or(self.max_time).min(self.max_time);
        let lock = Lock {
            token: format!("opaquelocktoken:{}", uuid()),
            name: req.name.to_owned(),
            principal: req.principal.map(str::to_owned),
            owner_xml: req.owner_xml,
            timeout,
            expires: now + timeout,
            shared: req.shared,
            deep: req.deep,
            folder: req.folder,
        };
        all.push(lock.clone());
        Ok(lock)
    }

    /// Releases the lock `token` that covers `name`; `false` if there is none.
    pub fn unlock(&self, name: &str, token: &str, now: Instant) -> bool {
        let mut all = self.live(now);
        let before = all.len();
        all.retain(|l| !(l.token == token && l.covers(name)));
        all.len() < before
    }

    /// Extends the lock `token` that covers `name`.
    pub fn refresh(
        &self,
        name: &str,
        token: &str,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Option<Lock> {
        let mut all = self.live(now);
        let lock = all
            .iter_mut()
            .find(|l| l.token == token && l.covers(name))?;
        lock.timeout = timeout.unwrap_or(self.max_time).min(self.max_time);
        lock.expires = now + lock.timeout;
        Some(lock.clone())
    }

    /// May a change to `name` (and, when `deep`, everything beneath it) go ahead? Every lock
    /// covering what it changes must be one the change presents the token of; a shared lock
    /// is passed by presenting any of the shared locks there.
    pub fn check(
        &self,
        name: &str,
        deep: bool,
        presented: Presented<'_>,
        now: Instant,
    ) -> Result<(), Box<Lock>> {
        let all = self.live(now);
        let mut holds = false;
        let mut first_shared = None;
        for l in all.iter().filter(|l| l.covers(name)) {
            if l.held_by(presented) {
                holds = true;
            } else if !l.shared {
                return Err(Box::new(l.clone()));
            } else {
                first_shared.get_or_insert(l);
            }
        }
        if let (false, Some(l)) = (holds, first_shared) {
            return Err(Box::new(l.clone()));
        }
        if deep {
            let beneath = all
                .iter()
                .filter(|l| l.name != name && within(&l.name, name));
            for l in beneath {
                if !l.held_by(presented) {
                    return Err(Box::new(l.clone()));
                }
            }
        }
        Ok(())
    }

    /// The locks that cover `name`.
    pub fn discover(&self, name: &str, now: Instant) -> Vec<Lock> {
        self.live(now)
            .iter()
            .filter(|l| l.covers(name))
            .cloned()
            .collect()
    }

    /// Drops the locks on `name` and beneath it (it was deleted, or moved away).
    pub fn forget(&self, name: &str, now: Instant) {
        self.live(now).retain(|l| !within(&l.name, name));
    }

    /// How many locks are held.
    pub fn len(&self, now: Instant) -> usize {
        self.live(now).len()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }
}

/// A random (version 4) UUID in its usual text form.
fn uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system's random source failed");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = troca_proto::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn req(name: &str, shared: bool, deep: bool) -> LockRequest<'_> {
        LockRequest {
            name,
            principal: Some("admin"),
            owner_xml: None,
            timeout: None,
            shared,
            deep,
            folder: false,
        }
    }

    fn none() -> Presented<'static> {
        Presented::default()
    }

    #[test]
    fn one_holder_cannot_take_the_whole_table() {
        let locks = Locks::new(10, HOUR).per_holder(2);
        let now = Instant::now();
        locks.lock(req("a", false, false), now).unwrap();
        locks.lock(req("b", false, false), now).unwrap();
        assert_eq!(
            locks.lock(req("c", false, false), now),
            Err(Refusal::TooMany(2))
        );
        let other = LockRequest {
            principal: Some("token 7"),
            ..req("c", false, false)
        };
        assert!(
            locks.lock(other, now).is_ok(),
            "another holder still gets its own"
        );
        // Its locks running out gives it room again.
        let later = now + HOUR + Duration::from_secs(1);
        assert!(locks.lock(req("d", false, false), later).is_ok());
    }

    #[test]
    fn an_exclusive_lock_refuses_changes_without_its_token() {
        let locks = Locks::new(10, HOUR);
        let now = Instant::now();
        let l = locks.lock(req("a/b.txt", false, false), now).unwrap();
        assert!(locks.check("a/b.txt", false, none(), now).is_err());
        // Deleting the folder above would delete it too.
        assert!(locks.check("a", true, none(), now).is_err());
        assert!(locks.check("a/c.txt", false, none(), now).is_ok());
        let tokens = [l.token.clone()];
        let mine = Presented {
            tokens: &tokens,
            principal: Some("admin"),
        };
        assert!(locks.check("a/b.txt", false, mine, now).is_ok());
        // Someone else with the token is still someone else.
        let theirs = Presented {
            tokens: &tokens,
            principal: Some("anonymous"),
        };
        assert!(locks.check("a/b.txt", false, theirs, now).is_err());
        assert!(locks.unlock("a/b.txt", &l.token, now));
        assert!(locks.check("a/b.txt", false, none(), now).is_ok());
    }

    #[test]
    fn deep_locks_cover_what_is_beneath_and_names_are_not_prefixes() {
        let locks = Locks::new(10, HOUR);
        let now = Instant::now();
        locks.lock(req("docs", false, true), now).unwrap();
        assert!(locks.check("docs/x/y.txt", false, none(), now).is_err());
        assert!(locks.check("docs2/y.txt", false, none(), now).is_ok());
        assert!(locks.lock(req("docs/x", true, false), now).is_err());
    }

    #[test]
    fn shared_locks_share_and_exclusive_ones_do_not() {
        let locks = Locks::new(10, HOUR);
        let now = Instant::now();
        locks.lock(req("f", true, false), now).unwrap();
        locks.lock(req("f", true, false), now).unwrap();
        assert!(matches!(
            locks.lock(req("f", false, false), now),
            Err(Refusal::Conflict(_))
        ));
        assert_eq!(locks.discover("f", now).len(), 2);
    }

    #[test]
    fn locks_expire_and_the_table_is_bounded() {
        let locks = Locks::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let mut long = req("a", false, false);
        long.timeout = Some(10 * HOUR);
        let l = locks.lock(long, now).unwrap();
        assert_eq!(l.timeout, Duration::from_secs(60), "capped");
        locks.lock(req("b", false, false), now).unwrap();
        assert_eq!(
            locks.lock(req("c", false, false), now),
            Err(Refusal::Full(2))
        );
        let later = now + Duration::from_secs(61);
        assert!(locks.check("a", false, none(), later).is_ok());
        assert!(locks.lock(req("c", false, false), later).is_ok());
    }

    #[test]
    fn forgetting_a_folder_drops_the_locks_beneath_it() {
        let locks = Locks::new(10, HOUR);
        let now = Instant::now();
        locks.lock(req("d/e", false, false), now).unwrap();
        locks.lock(req("de", false, false), now).unwrap();
        locks.forget("d", now);
        assert_eq!(locks.len(now), 1);
    }
}
