//! How much one address may upload without a token of its own (none, or an upload link's): at
//! most so many bytes and so many files (folders made count as files) per window, counted as a
//! leaky bucket. What an address stored
//! drains away at a steady pace (the whole allowance over one window), so an address that
//! reached its bound may upload again little by little, and one that keeps under it never
//! notices. Uploads running count as if stored until they end; a failed one gives its share
//! back. Callers with a token are not counted: whoever gave them the token trusts them. An
//! upload link's token is not one given to a person (anyone holding the link uses it), so its
//! uploads count against their address as well as against the link's own bound.
//!
//! The arithmetic takes the time as an argument ([`UploadQuota::reserve_at`]); only
//! [`UploadQuota::reserve`] reads the clock.
//!
//! A token may have a quota of its own ([`TokenQuotas`]): what its uploads keep on the hub at
//! once, counted from the records of the files it owns (each with its size when stored), plus
//! what its uploads running on this hub hold. Deleting frees room; nothing drains.

use crate::error::HubError;
use lru::LruCache;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use troca_net::limits::AddressKey;
use troca_proto::json::human_size;

/// The bounds; 0 turns either off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    pub bytes: u64,
    pub files: u64,
    /// How long what an address stored counts against it (draining steadily meanwhile).
    pub window: Duration,
}

impl QuotaLimits {
    /// 64 GiB and 100,000 files an hour.
    pub const DEFAULT: QuotaLimits = QuotaLimits {
        bytes: 64 << 30,
        files: 100_000,
        window: Duration::from_secs(3600),
    };

    fn off(&self) -> bool {
        (self.bytes == 0 && self.files == 0) || self.window.is_zero()
    }
}

pub use crate::records::Amount;

/// Who an address uploads as: the words of a refusal differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploader {
    /// Without a token.
    NoToken,
    /// Through an upload link (whose token anyone holding the link uses).
    Link,
}

/// One address's count.
#[derive(Debug)]
struct Usage {
    /// Stored, as drained at `at`.
    stored: Amount,
    at: Instant,
    /// Running uploads' shares, not draining.
    held: Amount,
}

/// The uploads of addresses without a token, each address within [`QuotaLimits`].
#[derive(Debug)]
pub struct UploadQuota {
    limits: QuotaLimits,
    table: Mutex<LruCache<AddressKey, Usage>>,
}

/// A share of an address's allowance, or of a token's quota, held by an upload until it ends:
/// [`QuotaHold::keep`] counts it as stored (a token's by the record of the file, now written);
/// dropping the hold gives it back.
#[derive(Debug)]
pub struct QuotaHold {
    holder: Holder,
    amount: Amount,
    /// Another quota the same upload holds a share of (an upload link's address and token).
    also: Option<Box<QuotaHold>>,
}

/// Whose quota a [`QuotaHold`] is of.
#[derive(Debug)]
enum Holder {
    Address {
        quota: Arc<UploadQuota>,
        key: AddressKey,
    },
    Token {
        quotas: Arc<TokenQuotas>,
        id: i64,
    },
}

/// What [`UploadQuota::admit`] let through: the first `count` amounts, held together.
#[derive(Debug)]
pub struct Admitted {
    pub hold: Option<QuotaHold>,
    pub count: usize,
    /// Why the amount after them was refused (`None` if all were let through).
    pub refusal: Option<HubError>,
}

impl Admitted {
    /// The hold of a single amount, or why it was refused.
    pub fn into_hold(self) -> Result<Option<QuotaHold>, HubError> {
        match self.refusal {
            Some(refusal) => Err(refusal),
            None => Ok(self.hold),
        }
    }
}

/// What one amount asks of an address's allowance, after `before` (the files of its batch let
/// through already).
#[derive(Debug, Clone, Copy)]
struct Asked {
    who: Uploader,
    before: Amount,
    amount: Amount,
}

/// Which bound a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Bytes,
    Files,
}

impl UploadQuota {
    /// Addresses counted at most; the least recently seen are forgotten first.
    pub const ADDRESSES: usize = 65_536;

    pub fn new(limits: QuotaLimits) -> Arc<Self> {
        let most = NonZeroUsize::new(Self::ADDRESSES).expect("a bound above zero");
        Arc::new(Self {
            limits,
            table: Mutex::new(LruCache::new(most)),
        })
    }

    /// Holds `amount` of the allowance of `from` (an address without a token), or says why not
    /// and when to try again. `None` when nothing is counted (quota off, or no address).
    pub fn reserve(
        self: &Arc<Self>,
        who: Uploader,
        from: Option<IpAddr>,
        amount: Amount,
    ) -> Result<Option<QuotaHold>, HubError> {
        self.reserve_at(who, from, amount, Instant::now())
    }

    pub(crate) fn reserve_at(
        self: &Arc<Self>,
        who: Uploader,
        from: Option<IpAddr>,
        amount: Amount,
        now: Instant,
    ) -> Result<Option<QuotaHold>, HubError> {
        let admitted = self.admit_at(who, from, &[amount], now);
        match admitted.refusal {
            Some(refusal) => Err(refusal),
            None => Ok(admitted.hold),
        }
    }

    /// Holds the allowance for as many of `amounts` as fit, in order (the files of a batch),
    /// and says why the next did not.
    pub fn admit(
        self: &Arc<Self>,
        who: Uploader,
        from: Option<IpAddr>,
        amounts: &[Amount],
    ) -> Admitted {
        self.admit_at(who, from, amounts, Instant::now())
    }

    pub(crate) fn admit_at(
        self: &Arc<Self>,
        who: Uploader,
        from: Option<IpAddr>,
        amounts: &[Amount],
        now: Instant,
    ) -> Admitted {
        let Some(ip) = from.filter(|_| !self.limits.off()) else {
            return Admitted {
                hold: None,
                count: amounts.len(),
                refusal: None,
            };
        };
        let key = AddressKey::of(ip);
        let mut table = self.table.lock().expect("upload quota poisoned");
        let usage = table.get_or_insert_mut(key, || Usage {
            stored: Amount::default(),
            at: now,
            held: Amount::default(),
        });
        self.drain(usage, now);
        let (mut held, mut count, mut refusal) = (Amount::default(), 0, None);
        for amount in amounts {
            if let Err(e) = self.fits(who, usage, held, *amount) {
                refusal = Some(e);
                break;
            }
            held.bytes += amount.bytes;
            held.files += amount.files;
            count += 1;
        }
        usage.held.bytes += held.bytes;
        usage.held.files += held.files;
        let hold = (count > 0).then(|| QuotaHold {
            holder: Holder::Address {
                quota: Arc::clone(self),
                key,
            },
            amount: held,
            also: None,
        });
        Admitted {
            hold,
            count,
            refusal,
        }
    }

    /// Whether `amount` fits after `before` (the files of its batch let through already).
    fn fits(
        &self,
        who: Uploader,
        usage: &Usage,
        before: Amount,
        amount: Amount,
    ) -> Result<(), HubError> {
        let at = Asked {
            who,
            before,
            amount,
        };
        self.check(usage, at, Bound::Bytes)?;
        self.check(usage, at, Bound::Files)
    }

    /// Takes away what drained since the count was last looked at.
    fn drain(&self, usage: &mut Usage, now: Instant) {
        let elapsed = now.saturating_duration_since(usage.at).as_nanos();
        let window = self.limits.window.as_nanos().max(1);
        let drained =
            |limit: u64| u64::try_from(elapsed * u128::from(limit) / window).unwrap_or(u64::MAX);
        usage.stored.bytes = usage
            .stored
            .bytes
            .saturating_sub(drained(self.limits.bytes));
        usage.stored.files = usage
            .stored
            .files
            .saturating_sub(drained(self.limits.files));
        usage.at = now;
    }

    fn check(&self, usage: &Usage, asked: Asked, bound: Bound) -> Result<(), HubError> {
        let Asked {
            who,
            before,
            amount,
        } = asked;
        let pick = |a: Amount| match bound {
            Bound::Bytes => a.bytes,
            Bound::Files => a.files,
        };
        let limit = pick(self.limits.into());
        let held = pick(usage.held) + pick(before);
        let (stored, want) = (pick(usage.stored), pick(amount));
        if limit == 0 || stored + held + want <= limit {
            return Ok(());
        }
        let text = |n: u64| match (bound, n) {
            (Bound::Bytes, _) => human_size(n),
            (Bound::Files, 1) => "1 file".to_owned(),
            (Bound::Files, _) => format!("{n} files"),
        };
        let per = window_text(self.limits.window);
        if want > limit {
            let message = match who {
                Uploader::NoToken => format!(
                    "{} is more than an address may upload without a token ({} {per}); \
                     upload it with a token",
                    text(want),
                    text(limit)
                ),
                Uploader::Link => format!(
                    "{} is more than an address may upload through share links ({} {per})",
                    text(want),
                    text(limit)
                ),
            };
            return Err(HubError::Quota {
                message,
                retry_after: None,
            });
        }
        // Stored drains; held does not, so with others running the wait is a floor.
        let excess = stored + held + want - limit;
        let wait = self.limits.window.mul_f64(excess as f64 / limit as f64);
        let (how, or) = match who {
            Uploader::NoToken => ("without a token", ", or upload with a token"),
            Uploader::Link => ("through share links and without a token", ""),
        };
        Err(HubError::Quota {
            message: format!(
                "your address may upload {} {per} {how}, and has used {}; try again in {}{or}",
                text(limit),
                text(stored + held),
                wait_text(wait)
            ),
            retry_after: Some(wait),
        })
    }

    fn release(&self, key: AddressKey, amount: Amount, keep: bool) {
        let mut table = self.table.lock().expect("upload quota poisoned");
        // Forgotten meanwhile (many other addresses came): nothing to give back.
        let Some(usage) = table.peek_mut(&key) else {
            return;
        };
        usage.held.bytes = usage.held.bytes.saturating_sub(amount.bytes);
        usage.held.files = usage.held.files.saturating_sub(amount.files);
        if keep {
            let now = Instant::now();
            self.drain(usage, now);
            usage.stored = usage.stored.plus(amount);
        }
    }
}

impl From<QuotaLimits> for Amount {
    fn from(l: QuotaLimits) -> Self {
        Amount {
            bytes: l.bytes,
            files: l.files,
        }
    }
}

impl QuotaHold {
    /// One hold of both: what is kept of it is kept of each, what is given back is given back
    /// to each.
    pub fn join(first: Option<QuotaHold>, second: Option<QuotaHold>) -> Option<QuotaHold> {
        match (first, second) {
            (Some(mut first), Some(second)) => {
                first.also = Some(Box::new(match first.also.take() {
                    Some(also) => QuotaHold::join(Some(*also), Some(second)).expect("both"),
                    None => second,
                }));
                Some(first)
            }
            (one, None) | (None, one) => one,
        }
    }

    /// The upload is stored: its share counts against its address (draining from now on).
    pub fn keep(self) {
        let all = self.amount;
        self.keep_part(all);
    }

    /// Only `part` of what was held was stored (some files of a batch were refused): that
    /// counts, the rest is given back.
    pub fn keep_part(mut self, part: Amount) {
        if let Some(also) = self.also.take() {
            also.keep_part(part);
        }
        let held = std::mem::take(&mut self.amount);
        let part = Amount {
            bytes: part.bytes.min(held.bytes),
            files: part.files.min(held.files),
        };
        self.release(part, true);
        let rest = Amount {
            bytes: held.bytes - part.bytes,
            files: held.files - part.files,
        };
        self.release(rest, false);
    }

    fn release(&self, amount: Amount, keep: bool) {
        match &self.holder {
            Holder::Address { quota, key } => quota.release(*key, amount, keep),
            // Kept or not, the records count what was stored from now on.
            Holder::Token { quotas, id } => quotas.release(*id, amount),
        }
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        if self.amount != Amount::default() {
            self.release(self.amount, false);
        }
    }
}

/// A token's quota, and what its files keep on the hub now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUse {
    pub quota: Amount,
    pub used: Amount,
}

/// What the uploads running on this hub hold of their tokens' quotas. What the tokens' files
/// keep on the hub is the records' to say (and the caller's to read, since the records may be
/// shared by several hubs); two uploads of one token on two hubs at once may pass its quota
/// by what the other holds.
#[derive(Debug, Default)]
pub struct TokenQuotas {
    held: Mutex<std::collections::HashMap<i64, Amount>>,
}

impl TokenQuotas {
    /// Holds as many of `amounts` as fit within token `id`'s `quota` (0: no bound on that),
    /// given what its files keep now (`stored`), in order, and says why the next did not.
    pub fn admit(
        self: &Arc<Self>,
        id: i64,
        quota: Amount,
        stored: Amount,
        amounts: &[Amount],
    ) -> Admitted {
        let mut table = self.held.lock().expect("token quotas poisoned");
        let running = table.entry(id).or_default();
        let used = stored.plus(*running);
        let (mut held, mut count, mut refusal) = (Amount::default(), 0, None);
        for amount in amounts {
            if let Err(e) = token_fits(quota, used, held, *amount) {
                refusal = Some(e);
                break;
            }
            held.bytes += amount.bytes;
            held.files += amount.files;
            count += 1;
        }
        running.bytes += held.bytes;
        running.files += held.files;
        let hold = (count > 0).then(|| QuotaHold {
            holder: Holder::Token {
                quotas: Arc::clone(self),
                id,
            },
            amount: held,
            also: None,
        });
        Admitted {
            hold,
            count,
            refusal,
        }
    }

    fn release(&self, id: i64, amount: Amount) {
        let mut table = self.held.lock().expect("token quotas poisoned");
        if let Some(running) = table.get_mut(&id) {
            running.bytes = running.bytes.saturating_sub(amount.bytes);
            running.files = running.files.saturating_sub(amount.files);
            if *running == Amount::default() {
                table.remove(&id);
            }
        }
    }
}

/// Whether `amount` fits a token's `quota` after `used` (its files and running uploads) and
/// `before` (the files of its batch let through already).
fn token_fits(quota: Amount, used: Amount, before: Amount, amount: Amount) -> Result<(), HubError> {
    for bound in [Bound::Bytes, Bound::Files] {
        let pick = |a: Amount| match bound {
            Bound::Bytes => a.bytes,
            Bound::Files => a.files,
        };
        let (limit, used) = (pick(quota), pick(used) + pick(before));
        if limit == 0 || used + pick(amount) <= limit {
            continue;
        }
        let text = |n: u64| match bound {
            Bound::Bytes => human_size(n),
            Bound::Files => format!("{n} file{}", if n == 1 { "" } else { "s" }),
        };
        return Err(HubError::TokenQuota(format!(
            "this token may keep {} on the hub and keeps {}; {} more would pass that: \
             delete some of its files, or ask for a larger quota",
            text(limit),
            text(used),
            text(pick(amount))
        )));
    }
    Ok(())
}

/// `an hour`, `every 30 minutes`, … for a window.
fn window_text(window: Duration) -> String {
    let s = window.as_secs();
    match s {
        86_400 => "a day".into(),
        3_600 => "an hour".into(),
        60 => "a minute".into(),
        _ if s % 86_400 == 0 => format!("every {} days", s / 86_400),
        _ if s % 3_600 == 0 => format!("every {} hours", s / 3_600),
        _ if s % 60 == 0 => format!("every {} minutes", s / 60),
        _ => format!("every {s} seconds"),
    }
}

/// A wait, rounded up to what a person reads: `40 s`, `12 min`, `3 h 5 min`.
fn wait_text(wait: Duration) -> String {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600).div_ceil(60)),
    }
}

/// Where the sweep of each token's records for a refused upload goes on (the hub's `sweep`
/// module): a page at a time, so each refused upload looks at a bounded number of
/// files, and the next one at the next page. Only tokens in the middle of their records are
/// held.
#[derive(Debug, Default)]
pub struct TokenSweeps(Mutex<HashMap<i64, String>>);

impl TokenSweeps {
    /// The name after which token `id`'s next page starts (`None`: from its first record).
    pub(crate) fn cursor(&self, id: i64) -> Option<String> {
        let at = self.0.lock().expect("token sweeps poisoned");
        at.get(&id).cloned()
    }

    /// Notes where token `id`'s next page starts (`None`: its records were all looked at, so
    /// the next sweep starts again from the first).
    pub(crate) fn go_on(&self, id: i64, next: Option<String>) {
        let mut at = self.0.lock().expect("token sweeps poisoned");
        match next {
            Some(name) => at.insert(id, name),
            None => at.remove(&id),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Uploader::NoToken;
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_tokens_running_uploads_hold_their_share_until_they_end() {
        let quotas = Arc::new(TokenQuotas::default());
        let q = Amount {
            bytes: 100,
            files: 3,
        };
        let stored = Amount {
            bytes: 40,
            files: 1,
        };
        let a = |bytes| Amount { bytes, files: 1 };
        let first = quotas.admit(7, q, stored, &[a(50)]).into_hold().unwrap();
        // 40 stored and 50 running: 20 more would pass 100.
        let e = quotas
            .admit(7, q, stored, &[a(20)])
            .into_hold()
            .unwrap_err();
        assert!(e.to_string().contains("keeps 90 B; 20 B more"), "{e}");
        // Another token is its own.
        assert!(quotas.admit(8, q, stored, &[a(60)]).into_hold().is_ok());
        drop(first);
        // A batch: what fits, in order; the files bound stops the third.
        let batch = quotas.admit(7, q, stored, &[a(10), a(10), a(10)]);
        assert_eq!(batch.count, 2);
        assert!(batch.refusal.unwrap().to_string().contains("3 files"));
        batch.hold.unwrap().keep();
        // Kept or dropped, a hold lets go: the records count what was stored.
        assert!(quotas.held.lock().unwrap().get(&7).is_none());
        // No bound on a zero.
        let open = Amount { bytes: 0, files: 0 };
        assert_eq!(quotas.admit(7, open, stored, &[a(u64::MAX / 2)]).count, 1);
    }

    fn quota(bytes: u64, files: u64) -> Arc<UploadQuota> {
        UploadQuota::new(QuotaLimits {
            bytes,
            files,
            window: HOUR,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn bytes(n: u64) -> Amount {
        Amount { bytes: n, files: 1 }
    }

    #[test]
    fn stored_uploads_count_until_they_drain() {
        let q = quota(1000, 0);
        let t0 = Instant::now();
        q.reserve_at(NoToken, ip("10.0.0.1"), bytes(600), t0)
            .unwrap()
            .unwrap()
            .keep();
        let refused = q
            .reserve_at(NoToken, ip("10.0.0.1"), bytes(600), t0)
            .unwrap_err();
        let HubError::Quota { retry_after, .. } = &refused else {
            panic!("{refused:?}")
        };
        // 200 bytes too many, at 1000 an hour: 12 minutes (and a little: `keep` read the clock).
        let wait = retry_after.unwrap();
        assert!(wait <= HOUR / 5 && wait > HOUR / 6, "{wait:?}");
        assert!(
            refused.to_string().contains("try again in 12 min"),
            "{refused}"
        );
        // Another address is not affected.
        assert!(q
            .reserve_at(NoToken, ip("10.0.0.2"), bytes(1000), t0)
            .is_ok());
        // Once enough has drained, it fits.
        let later = t0 + HOUR / 4;
        q.reserve_at(NoToken, ip("10.0.0.1"), bytes(600), later)
            .unwrap()
            .unwrap()
            .keep();
    }

    #[test]
    fn running_uploads_hold_their_share_and_give_it_back_when_they_fail() {
        let q = quota(1000, 0);
        let t0 = Instant::now();
        let running = q
            .reserve_at(NoToken, ip("10.0.0.1"), bytes(700), t0)
            .unwrap();
        assert!(q
            .reserve_at(NoToken, ip("10.0.0.1"), bytes(700), t0)
            .is_err());
        drop(running);
        assert!(q
            .reserve_at(NoToken, ip("10.0.0.1"), bytes(700), t0)
            .is_ok());
    }

    #[test]
    fn a_batch_counts_what_it_stored() {
        let q = quota(0, 10);
        let t0 = Instant::now();
        let hold = q.reserve_at(
            NoToken,
            ip("10.0.0.1"),
            Amount {
                bytes: 80,
                files: 8,
            },
            t0,
        );
        hold.unwrap().unwrap().keep_part(Amount {
            bytes: 30,
            files: 3,
        });
        // 3 stored: 7 more fit, 8 do not.
        assert!(q
            .reserve_at(NoToken, ip("10.0.0.1"), Amount { bytes: 0, files: 8 }, t0)
            .is_err());
        assert!(q
            .reserve_at(NoToken, ip("10.0.0.1"), Amount { bytes: 0, files: 7 }, t0)
            .is_ok());
    }

    #[test]
    fn a_joined_hold_keeps_and_gives_back_on_both_quotas() {
        let (a, b) = (quota(0, 10), quota(0, 10));
        let t0 = Instant::now();
        let files = |n| Amount { bytes: 0, files: n };
        let take = |q: &Arc<UploadQuota>, n| q.reserve_at(NoToken, ip("10.0.0.1"), files(n), t0);
        let joined = QuotaHold::join(take(&a, 4).unwrap(), take(&b, 6).unwrap()).unwrap();
        // Held: 6 fit in `a` and 4 in `b`, no more.
        assert!(take(&a, 7).is_err() && take(&b, 5).is_err());
        joined.keep_part(files(3));
        // 3 kept in each, the rest given back.
        assert!(take(&a, 7).is_ok() && take(&b, 7).is_ok());
        assert!(take(&a, 8).is_err() && take(&b, 8).is_err());
        let dropped = QuotaHold::join(None, take(&b, 2).unwrap());
        drop(dropped);
        assert!(take(&b, 7).is_ok());
        let refused = q_link(&a).unwrap_err().to_string();
        assert!(refused.contains("through share links"), "{refused}");
        assert!(!refused.contains("with a token"), "{refused}");
    }

    /// `a`'s refusal of more than it allows, to an upload link's address.
    fn q_link(q: &Arc<UploadQuota>) -> Result<Option<QuotaHold>, HubError> {
        let all = Amount {
            bytes: 0,
            files: 11,
        };
        q.reserve_at(Uploader::Link, ip("10.0.0.1"), all, Instant::now())
    }

    #[test]
    fn a_batch_lets_through_the_files_that_fit_in_order() {
        let q = quota(1000, 3);
        let t0 = Instant::now();
        let files = [bytes(400), bytes(400), bytes(400), bytes(1)];
        let admitted = q.admit_at(NoToken, ip("10.0.0.1"), &files, t0);
        assert_eq!(admitted.count, 2);
        assert!(matches!(admitted.refusal, Some(HubError::Quota { .. })));
        admitted.hold.unwrap().keep();
        // One file and 200 bytes left.
        let admitted = q.admit_at(NoToken, ip("10.0.0.1"), &[bytes(1), bytes(1)], t0);
        assert_eq!(admitted.count, 1);
        let refusal = admitted.refusal.unwrap().to_string();
        assert!(refusal.contains("3 files an hour"), "{refusal}");
        // The file let through counts as used.
        assert!(refusal.contains("has used 3 files"), "{refusal}");
    }

    #[test]
    fn one_ipv6_subnet_is_one_address() {
        let q = quota(1000, 0);
        let t0 = Instant::now();
        q.reserve_at(NoToken, ip("2001:db8::1"), bytes(1000), t0)
            .unwrap()
            .unwrap()
            .keep();
        assert!(q
            .reserve_at(NoToken, ip("2001:db8::ffff:2"), bytes(1), t0)
            .is_err());
        assert!(q
            .reserve_at(NoToken, ip("2001:db8:0:1::1"), bytes(1), t0)
            .is_ok());
    }

    #[test]
    fn an_upload_larger_than_the_whole_allowance_is_refused_for_good() {
        let q = quota(1000, 0);
        let e = q
            .reserve_at(NoToken, ip("10.0.0.1"), bytes(1001), Instant::now())
            .unwrap_err();
        assert!(
            matches!(
                e,
                HubError::Quota {
                    retry_after: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("upload it with a token"), "{e}");
    }

    #[test]
    fn nothing_is_counted_when_off_or_without_an_address() {
        let q = quota(0, 0);
        assert!(q
            .reserve(NoToken, ip("10.0.0.1"), bytes(u64::MAX))
            .unwrap()
            .is_none());
        let q = quota(10, 10);
        assert!(q.reserve(NoToken, None, bytes(u64::MAX)).unwrap().is_none());
    }

    #[test]
    fn texts() {
        assert_eq!(window_text(HOUR), "an hour");
        assert_eq!(window_text(HOUR * 2), "every 2 hours");
        assert_eq!(window_text(Duration::from_secs(1800)), "every 30 minutes");
        assert_eq!(wait_text(Duration::from_millis(100)), "1 s");
        assert_eq!(wait_text(Duration::from_secs(61)), "2 min");
        assert_eq!(wait_text(Duration::from_secs(3_700)), "1 h 2 min");
    }

    #[test]
    fn a_tokens_sweep_goes_on_where_it_stopped_and_starts_over_at_the_end() {
        let sweeps = TokenSweeps::default();
        assert_eq!(sweeps.cursor(1), None);
        sweeps.go_on(1, Some("m".into()));
        sweeps.go_on(2, Some("x".into()));
        assert_eq!(sweeps.cursor(1).as_deref(), Some("m"));
        sweeps.go_on(1, None);
        assert_eq!(sweeps.cursor(1), None);
        assert_eq!(
            sweeps.0.lock().unwrap().len(),
            1,
            "only tokens midway are held"
        );
    }
}
