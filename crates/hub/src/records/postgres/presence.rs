//! Which hubs of a group run now, and who is connected to each. A hub registers itself with
//! its own database session (pid and start time), so it counts as running exactly while that
//! session lives: a hub that dies drops out at once, with no timeout to wait for. Every second
//! it rewrites the list of its clients (`who` on any hub reads everyone's), and registers again
//! if its session had to be made again (the database restarted).

use crate::error::HubError;
use crate::pg::{commit_err, db_err, now_ns, Db};
use std::time::Duration;
use troca_proto::msg::{Activity, ClientEntry};

/// How often a hub writes its clients down.
const EVERY: Duration = Duration::from_secs(1);

/// This hub's place in its group.
#[derive(Debug)]
pub struct PgPresence {
    db: Db,
    hub: String,
}

/// Rows of hubs alive now: their session is still connected.
const ALIVE: &str = "EXISTS (SELECT 1 FROM pg_stat_activity a
                             WHERE a.pid = h.pid AND a.backend_start = h.backend_start)";

impl PgPresence {
    /// Registers this hub (replacing a dead one of the same name; refusing a live one) and
    /// starts writing its clients down every second, as long as `clients` lists them (`None`:
    /// the hub is gone).
    pub fn start(
        db: Db,
        hub: &str,
        clients: impl Fn() -> Option<Vec<ClientEntry>> + Send + 'static,
    ) -> Result<Self, HubError> {
        // Registering again (after the database ended the session) keeps this start time, so
        // the hubs keep their order in `troca status`.
        let started_ns = now_ns();
        let made = db.run(async || {
            register(&db, hub, started_ns).await?;
            db.session_made().await
        })?;
        let me = Registered {
            hub: hub.to_owned(),
            started_ns,
        };
        tokio::spawn(heartbeat(db.clone(), me, made, clients));
        Ok(Self {
            db,
            hub: hub.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.hub
    }

    /// Whether the database answers within `within` (a health check). Blocking.
    pub fn health(&self, within: std::time::Duration) -> Result<(), HubError> {
        crate::pg::answers(&self.db, within)
    }

    /// The clients of the other hubs running now, as they last wrote them down.
    pub fn others(&self) -> Result<Vec<ClientEntry>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT s.client, s.address, s.connected_ns, s.activity, s.hub
                         FROM sessions s JOIN hubs h ON h.id = s.hub
                         WHERE s.hub <> $1 AND {ALIVE} ORDER BY s.hub, s.id"
                    ),
                    &[&self.hub],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let doing: serde_json::Value =
                        serde_json::from_str(r.get::<_, &str>(3)).unwrap_or_default();
                    let num = |k: &str| doing[k].as_u64().unwrap_or(0);
                    ClientEntry {
                        name: r.get(0),
                        address: r.get(1),
                        connected_ns: r.get(2),
                        activity: Activity::from_u8(num("activity") as u8)
                            .unwrap_or(Activity::Idle),
                        target: doing["target"].as_str().unwrap_or("").to_owned(),
                        done: num("done"),
                        total: num("total"),
                        bytes_sent: num("sent"),
                        bytes_received: num("received"),
                        hub: r.get(4),
                    }
                })
                .collect())
        })
    }

    /// The names of the hubs running now, this one among them.
    pub fn hubs(&self) -> Result<Vec<String>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c
                .query(
                    &format!("SELECT id FROM hubs h WHERE {ALIVE} ORDER BY started_ns, id"),
                    &[],
                )
                .await
                .map_err(db_err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

/// This hub, as it registers in the `hubs` table.
struct Registered {
    hub: String,
    started_ns: i64,
}

async fn register(db: &Db, hub: &str, started_ns: i64) -> Result<(), HubError> {
    let session = db.session().await?;
    let taken = session
        .query_opt(
            &format!("SELECT 1 FROM hubs h WHERE id = $1 AND {ALIVE}"),
            &[&hub],
        )
        .await
        .map_err(db_err)?;
    if taken.is_some() {
        return Err(HubError::BadRequest(format!(
            "a hub named {hub:?} is already running on this database; give each hub its own \
             --hub-name"
        )));
    }
    session
        .execute(
            "INSERT INTO hubs (id, started_ns, pid, backend_start)
             SELECT $1, $2, pid, backend_start FROM pg_stat_activity
              WHERE pid = pg_backend_pid()
             ON CONFLICT (id) DO UPDATE SET started_ns = excluded.started_ns, pid = excluded.pid,
                 backend_start = excluded.backend_start",
            &[&hub, &started_ns],
        )
        .await
        .map_err(db_err)?;
    session
        .execute("DELETE FROM sessions WHERE hub = $1", &[&hub])
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn heartbeat(
    db: Db,
    me: Registered,
    mut registered: u64,
    clients: impl Fn() -> Option<Vec<ClientEntry>> + Send + 'static,
) {
    let mut last = None;
    // Said once when the database is lost and once when it is back, not every second.
    let mut lost = false;
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(now) = clients() else {
            return;
        };
        match db.session_made().await {
            Ok(made) => {
                if std::mem::take(&mut lost) || made != registered {
                    tracing::warn!("the hub's database session is back");
                }
                if made != registered {
                    match register(&db, &me.hub, me.started_ns).await {
                        Ok(()) => {
                            registered = made;
                            last = None;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot register the hub again"),
                    }
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut lost, true) {
                    tracing::warn!(error = %e, "the hub's database session is lost; trying again every second");
                }
                continue;
            }
        }
        if last.as_ref() == Some(&now) {
            continue;
        }
        match write_clients(&db, &me.hub, &now).await {
            Ok(()) => last = Some(now),
            Err(e) => tracing::warn!(error = %e, "cannot record who is connected"),
        }
    }
}

async fn write_clients(db: &Db, hub: &str, clients: &[ClientEntry]) -> Result<(), HubError> {
    let mut c = db.get().await?;
    let tx = c.transaction().await.map_err(db_err)?;
    tx.execute("DELETE FROM sessions WHERE hub = $1", &[&hub])
        .await
        .map_err(db_err)?;
    for (id, e) in clients.iter().enumerate() {
        let doing = serde_json::json!({
            "activity": e.activity.to_u8(),
            "target": e.target,
            "done": e.done,
            "total": e.total,
            "sent": e.bytes_sent,
            "received": e.bytes_received,
        })
        .to_string();
        tx.execute(
            "INSERT INTO sessions (hub, id, client, address, connected_ns, activity)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &hub,
                &(id as i64),
                &e.name,
                &e.address,
                &e.connected_ns,
                &doing,
            ],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(commit_err)
}
