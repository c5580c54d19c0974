//! A batch of small files on an object store: what each name holds read in one query, the
//! objects PUT several at a time, and every name placed in one change (one transaction, one
//! hold of the names' lock), so a folder of small files costs round trips per batch rather
//! than per file. A folder copy's new names for objects already stored go the same way.

use super::catalog::{self, begin_change};
use super::remembered::Forget;
use super::{new_object_key, ObjectStore};
use crate::error::HubError;
use crate::pg::{db_err, now_ns};
use crate::store::{Kind, PlaceCheck, Seen, SmallFile, Version};
use futures_util::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore as _;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Transaction;
use troca_proto::{Hash, RemoteName};

/// Objects PUT at once for a batch: the store serves many requests side by side.
const PUTS_IN_FLIGHT: usize = 16;

/// A file of the batch whose object is stored, waiting for its name.
struct Stored {
    /// Where the file is in the batch.
    at: usize,
    file: SmallFile,
    size: u64,
    key: String,
}

impl ObjectStore {
    /// Stores `files`: one answer each, in order. A file refused, or whose object could not
    /// be stored, fails alone; a database that fails twice fails those not yet placed.
    pub(super) async fn store_smalls(
        &self,
        files: Vec<SmallFile>,
        check: PlaceCheck<'_>,
    ) -> Vec<Result<Version, HubError>> {
        let mut answers: Vec<Option<Result<Version, HubError>>> = Vec::new();
        answers.resize_with(files.len(), || None);
        let kinds = match self.kinds_of(&files).await {
            Ok(kinds) => kinds,
            Err(e) => return files.iter().map(|_| Err(each(&e))).collect(),
        };
        let mut allowed = Vec::with_capacity(files.len());
        for (at, file) in files.into_iter().enumerate() {
            let seen = Seen {
                kind: kinds.get(file.name.as_str()).copied(),
                version: None,
            };
            match check(&file.name, seen, file.replace) {
                Ok(()) => allowed.push((at, file)),
                Err(e) => answers[at] = Some(Err(e)),
            }
        }
        let stored = self.put_objects(allowed, &mut answers).await;
        self.place_smalls(stored, &mut answers).await;
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(HubError::Internal("a file left unanswered".into()))))
            .collect()
    }

    /// What each name of the batch holds now (absent: nothing).
    async fn kinds_of(&self, files: &[SmallFile]) -> Result<HashMap<String, Kind>, HubError> {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        let rows = self
            .db()
            .again(async || {
                let c = self.db().get().await?;
                c.query(
                    "SELECT name, object IS NULL FROM names WHERE name = ANY($1)",
                    &[&names],
                )
                .await
                .map_err(db_err)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let kind = if r.get(1) { Kind::Folder } else { Kind::File };
                (r.get::<_, String>(0), kind)
            })
            .collect())
    }

    /// PUTs the objects of `files`, several at a time; a file whose PUT fails is answered.
    async fn put_objects(
        &self,
        files: Vec<(usize, SmallFile)>,
        answers: &mut [Option<Result<Version, HubError>>],
    ) -> Vec<Stored> {
        let puts = futures_util::stream::iter(files)
            .map(|(at, mut file)| async move {
                let size = file.data.len() as u64;
                let data = std::mem::take(&mut file.data);
                let put = async {
                    let key = new_object_key()?;
                    self.shared
                        .s3
                        .put(&ObjectPath::from(key.as_str()), data.into())
                        .await
                        .map_err(|e| HubError::Backend(format!("{}: {e}", self.shown)))?;
                    Ok(key)
                };
                (at, file, size, put.await)
            })
            .buffer_unordered(PUTS_IN_FLIGHT);
        let done: Vec<_> = puts.collect().await;
        let mut stored = Vec::with_capacity(done.len());
        for (at, file, size, put) in done {
            match put {
                Ok(key) => stored.push(Stored {
                    at,
                    file,
                    size,
                    key,
                }),
                Err(e) => answers[at] = Some(Err(e)),
            }
        }
        stored.sort_unstable_by_key(|s| s.at);
        stored
    }

    /// Places the stored files under their names in one change, then deletes the objects
    /// not kept (a name refused, content already stored, or the change failing).
    async fn place_smalls(
        &self,
        stored: Vec<Stored>,
        answers: &mut [Option<Result<Version, HubError>>],
    ) {
        if stored.is_empty() {
            return;
        }
        let placed = self
            .db()
            .again(async || self.place_all_once(&stored).await)
            .await;
        let placed = match placed {
            Ok(placed) => placed,
            // Ended twice before its commit, nothing refers to the objects: they go. A commit
            // without an answer may have been done: they stay, for the collector to judge.
            Err(e) => {
                let kept = match e {
                    HubError::ConnectionEnded(_) => None,
                    _ => Some(Kept::Unknown),
                };
                stored
                    .iter()
                    .map(|_| Placed {
                        answer: Err(each(&e)),
                        kept: kept.clone(),
                    })
                    .collect()
            }
        };
        let mut unused = Vec::new();
        for (s, p) in stored.iter().zip(placed) {
            if p.answer.is_ok() {
                self.remembered.forget(Forget::File(s.file.name.as_str()));
            }
            let keep = match &p.kept {
                Some(Kept::Key(k)) => p.answer.is_ok() && *k == s.key,
                Some(Kept::Unknown) => true,
                None => false,
            };
            if !keep {
                unused.push(ObjectPath::from(s.key.as_str()));
            }
            answers[s.at] = Some(p.answer);
        }
        let deletes = futures_util::stream::iter(unused)
            .map(|key| async move { self.shared.s3.delete(&key).await })
            .buffer_unordered(PUTS_IN_FLIGHT);
        // An object left behind is deleted by the collector, since no name refers to it.
        deletes.for_each(|_| async {}).await;
    }

    /// One try at placing every stored file, in a few statements whatever their number:
    /// `Err` only if the change itself failed.
    async fn place_all_once(&self, stored: &[Stored]) -> Result<Vec<Placed>, HubError> {
        let mut c = self.db().get().await?;
        let tx = begin_change(&mut c).await?;
        let namings: Vec<Naming<'_>> = stored.iter().map(Stored::naming).collect();
        let decided = decide(&tx, &namings).await?;
        // Only the objects of files placed are recorded: one refused is deleted.
        let placing = stored
            .iter()
            .zip(&decided.answers)
            .filter(|(_, a)| matches!(a, Some(Ok(_))));
        let kept = record_objects(&tx, placing.map(|(s, _)| s)).await?;
        let answers = decided.write(&tx).await?;
        tx.commit().await.map_err(crate::pg::commit_err)?;
        Ok(stored
            .iter()
            .zip(answers)
            .map(|(s, answer)| Placed {
                answer: answer.unwrap_or_else(|| Err(HubError::Internal("unplaced".into()))),
                kept: kept.get(s.file.hash.as_slice()).cloned().map(Kept::Key),
            })
            .collect())
    }

    /// Gives each object in `copies` a new name, in one change: one answer each, in order. A
    /// source whose object is gone meanwhile is refused.
    pub(super) async fn name_objects(
        &self,
        copies: &[Naming<'_>],
    ) -> Result<Vec<Result<Version, HubError>>, HubError> {
        let answers = self
            .db()
            .again(async || {
                let mut c = self.db().get().await?;
                let tx = begin_change(&mut c).await?;
                // Touched first, so the collector (which deletes only objects untouched for
                // the grace period) cannot take them meanwhile.
                let hashes: Vec<&[u8]> = copies.iter().map(|n| n.hash.as_slice()).collect();
                let there: HashSet<Vec<u8>> = tx
                    .query(
                        "UPDATE objects SET touched = now() WHERE hash = ANY($1) RETURNING hash",
                        &[&hashes],
                    )
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let (found, gone): (Vec<_>, Vec<_>) = copies
                    .iter()
                    .enumerate()
                    .partition(|(_, n)| there.contains(n.hash.as_slice()));
                let namings: Vec<Naming<'_>> = found.iter().map(|(_, n)| (*n).clone()).collect();
                let placed = decide(&tx, &namings).await?.write(&tx).await?;
                tx.commit().await.map_err(crate::pg::commit_err)?;
                let mut answers: Vec<Option<Result<Version, HubError>>> = Vec::new();
                answers.resize_with(copies.len(), || None);
                for ((at, _), a) in found.iter().zip(placed) {
                    answers[*at] = a;
                }
                for (at, n) in gone {
                    answers[at] =
                        Some(Err(HubError::NotFound(format!("the source of {}", n.name))));
                }
                Ok(answers)
            })
            .await?;
        for (n, a) in copies.iter().zip(&answers) {
            if matches!(a, Some(Ok(_))) {
                self.remembered.forget(Forget::File(n.name.as_str()));
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(HubError::Internal("unplaced".into()))))
            .collect())
    }
}

/// A name to give an object (known by its hash), with what the name's file will be.
#[derive(Clone)]
pub(super) struct Naming<'a> {
    pub name: &'a RemoteName,
    pub hash: &'a Hash,
    pub size: u64,
    pub replace: bool,
    /// The file's time (0: unknown, so the time it is named).
    pub modified_ns: i64,
}

impl Stored {
    fn naming(&self) -> Naming<'_> {
        Naming {
            name: &self.file.name,
            hash: &self.file.hash,
            size: self.size,
            replace: self.file.replace,
            modified_ns: self.file.modified_ns,
        }
    }
}

/// What a change will do with a batch's names, decided under the names' lock from what they
/// hold: a refusal for some, rows to write for the others.
struct Decided<'a> {
    /// `None`: not decided yet (left for the caller); `Some(Ok)`: to be written.
    answers: Vec<Option<Result<Version, HubError>>>,
    rows: NewRows<'a>,
    /// The objects of files replaced, whose grace period starts now.
    replaced: Vec<Vec<u8>>,
}

impl Decided<'_> {
    /// Writes the rows decided on: each name's answer.
    async fn write(
        self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<Option<Result<Version, HubError>>>, HubError> {
        catalog::touch_objects(tx, &self.replaced).await?;
        self.rows.insert(tx).await?;
        Ok(self.answers)
    }
}

/// Decides, for each of `namings`, whether its name may be placed (a folder is never
/// replaced, a file only when asked to, a name once per batch), making the folders on the way.
async fn decide<'a>(
    tx: &Transaction<'_>,
    namings: &'a [Naming<'a>],
) -> Result<Decided<'a>, HubError> {
    let mut answers = folders_for(tx, namings).await?;
    let held = held_names(tx, namings).await?;
    let mut rows = NewRows::default();
    let mut replaced = Vec::new();
    let mut taken = HashSet::new();
    for (n, answer) in namings.iter().zip(answers.iter_mut()) {
        if answer.is_some() {
            continue;
        }
        let name = n.name.as_str();
        *answer = match held.get(name) {
            _ if !taken.insert(name) => Some(Err(HubError::UploadInProgress(name.into()))),
            Some(None) => Some(Err(HubError::FolderInTheWay(format!("{name}/")))),
            Some(Some(_)) if !n.replace => Some(Err(HubError::AlreadyExists(name.into()))),
            Some(Some(prev)) => {
                replaced.push(prev.clone());
                rows.push(n)
            }
            None => rows.push(n),
        };
    }
    Ok(Decided {
        answers,
        rows,
        replaced,
    })
}

/// Records the batch's objects (touching those whose content was stored before, which keep
/// their key): the key each hash is recorded with.
async fn record_objects<'a>(
    tx: &Transaction<'_>,
    placing: impl Iterator<Item = &'a Stored>,
) -> Result<HashMap<Vec<u8>, String>, HubError> {
    let mut seen = HashSet::new();
    let (mut hashes, mut keys, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    // Identical files of one batch: the first's object is recorded (a row is changed once
    // per statement), the others' go.
    for s in placing.filter(|s| seen.insert(s.file.hash.as_slice())) {
        hashes.push(s.file.hash.as_slice());
        keys.push(s.key.as_str());
        sizes.push(s.size as i64);
    }
    let rows = tx
        .query(
            "INSERT INTO objects (hash, key, size, touched)
             SELECT h, k, s, now() FROM unnest($1::bytea[], $2::text[], $3::int8[]) AS t(h, k, s)
             ON CONFLICT (hash) DO UPDATE SET touched = now() RETURNING hash, key",
            &[&hashes, &keys, &sizes],
        )
        .await
        .map_err(db_err)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Makes the folders the batch's files go in, each once: a file whose folder cannot be
/// made (a file in the way) is answered.
async fn folders_for(
    tx: &Transaction<'_>,
    namings: &[Naming<'_>],
) -> Result<Vec<Option<Result<Version, HubError>>>, HubError> {
    let mut made: HashMap<&str, Option<String>> = HashMap::new();
    let mut answers = Vec::with_capacity(namings.len());
    for n in namings {
        let name = n.name.as_str();
        let Some((parent, _)) = name.rsplit_once('/') else {
            answers.push(None);
            continue;
        };
        if !made.contains_key(parent) {
            let refused = match catalog::make_ancestors(tx, name).await {
                Ok(()) => None,
                Err(HubError::FolderOverFile(f)) => Some(f),
                Err(e) => return Err(e),
            };
            made.insert(parent, refused);
        }
        answers.push(
            made[parent]
                .clone()
                .map(|f| Err(HubError::FolderOverFile(f))),
        );
    }
    Ok(answers)
}

/// What the batch's names hold now: a file's object, or `None` for a folder.
async fn held_names(
    tx: &Transaction<'_>,
    namings: &[Naming<'_>],
) -> Result<HashMap<String, Option<Vec<u8>>>, HubError> {
    let names: Vec<&str> = namings.iter().map(|n| n.name.as_str()).collect();
    let rows = tx
        .query(
            "SELECT name, object FROM names WHERE name = ANY($1)",
            &[&names],
        )
        .await
        .map_err(db_err)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The names a batch places, inserted (or replacing a file) in one statement.
#[derive(Default)]
struct NewRows<'a> {
    names: Vec<&'a str>,
    hashes: Vec<&'a [u8]>,
    sizes: Vec<i64>,
    times: Vec<i64>,
}

impl<'a> NewRows<'a> {
    /// Adds `n`: its answer, once the rows are in.
    fn push(&mut self, n: &Naming<'a>) -> Option<Result<Version, HubError>> {
        // The source's time when the uploader said it, as a file on disk is given it.
        let modified_ns = match n.modified_ns {
            t if t > 0 => t,
            _ => now_ns(),
        };
        self.names.push(n.name.as_str());
        self.hashes.push(n.hash.as_slice());
        self.sizes.push(n.size as i64);
        self.times.push(modified_ns);
        Some(Ok(Version {
            size: n.size,
            modified_ns,
        }))
    }

    async fn insert(&self, tx: &Transaction<'_>) -> Result<(), HubError> {
        if self.names.is_empty() {
            return Ok(());
        }
        // Under the names' lock, what was read above still holds: a folder is never
        // replaced, and only names found free or allowed to be replaced are here.
        let placed = tx
            .execute(
                "INSERT INTO names (name, object, size, modified_ns)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::int8[])
                 ON CONFLICT (name) DO UPDATE SET object = excluded.object,
                     size = excluded.size, modified_ns = excluded.modified_ns
                 WHERE names.object IS NOT NULL",
                &[&self.names, &self.hashes, &self.sizes, &self.times],
            )
            .await
            .map_err(db_err)?;
        if placed != self.names.len() as u64 {
            return Err(HubError::Internal(format!(
                "{} of {} names placed",
                placed,
                self.names.len()
            )));
        }
        let notices: Vec<String> = self
            .names
            .iter()
            .map(|n| Forget::File(n).notice())
            .collect();
        tx.execute(
            "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
            &[&crate::pg::NAMES_CHANNEL, &notices],
        )
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// What placing one file came to.
struct Placed {
    answer: Result<Version, HubError>,
    /// What the hash is recorded with; `None`: nothing refers to the new object.
    kept: Option<Kept>,
}

/// The object recorded for a file's hash.
#[derive(Clone)]
enum Kept {
    /// The key of the object recorded (another one's, if the content was stored before).
    Key(String),
    /// Not known: the change's commit went unanswered.
    Unknown,
}

/// A failure that befell the whole batch, as each file's answer.
pub(super) fn each(e: &HubError) -> HubError {
    match e {
        HubError::ConnectionEnded(why) => HubError::ConnectionEnded(why.clone()),
        e => HubError::Backend(e.to_string()),
    }
}
