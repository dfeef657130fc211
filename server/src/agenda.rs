//! The agenda layer on the server: its [`agenda::Store`] over this server's service door, its
//! clock and random source, and the work that the leader of an events shard runs: the outbox
//! delivery and the reminder scheduler.
//!
//! The layer enters by the service door like any client (DESIGN.md's "agenda: service only"):
//! reads are linearizable reads, writes are transactions under this server's own exactly-once
//! session, routed to the shard's leader wherever it is. The node loop only wakes the delivery
//! (see `Watch`); it knows nothing of calendars.

use std::sync::Arc;
use std::time::Duration;

use agenda::{Committed, Scanned, StoreError};
use bytes::Bytes;
use client::{Consistency, ErrorCode, Request, Response};
use kv::{Txn, Versioned, Write, WriteResult};
use tokio_util::sync::CancellationToken;

use crate::Service;
use crate::metrics::Metrics;

/// The agenda as this server runs it.
pub type ServerAgenda = agenda::Agenda<ServiceStore, ServerEnv>;

/// The outbox of each events bucket, watched by the node loop.
pub(crate) fn outbox_prefixes() -> Vec<Bytes> {
    ["am", "nz"].map(agenda::keys::outbox).to_vec()
}

/// What the reminder scheduler watches: all of each events bucket, since an alert's time moves
/// with its event (an update, an invitation's new copy, an answer), not only with its record.
pub(crate) fn alerts_prefixes() -> Vec<Bytes> {
    ["am", "nz"]
        .map(|bucket| Bytes::from(format!("ev/{bucket}/")))
        .to_vec()
}

/// Why the agenda cannot work over `shard_map`, if it cannot: each of its transactions keeps to
/// one of the ranges `ev/am/`, `ev/nz/`, `gr/`, `us/`, so a map that splits one of them makes
/// some of its writes cross shards, which the router refuses (nothing is half-written, but the
/// agenda fails). The default map keeps each range whole.
pub fn layout_problem(shard_map: &crate::shard::ShardMap) -> Option<String> {
    let split: Vec<String> = ["ev/am/", "ev/nz/", "gr/", "us/"]
        .into_iter()
        .filter(|prefix| {
            let end = agenda::store::prefix_end(prefix.as_bytes());
            shard_map.split_range(prefix.as_bytes(), &end).len() > 1
        })
        .map(str::to_owned)
        .collect();
    (!split.is_empty()).then(|| {
        format!(
            "the shard map splits the agenda's ranges {split:?}: agenda writes that span them \
             will be refused as cross-shard"
        )
    })
}

/// The agenda's store: this server's service door, with every key allowed (the layer enforces
/// its own rules: who may read and change which record).
#[derive(Clone)]
pub struct ServiceStore {
    service: Service,
}

impl ServiceStore {
    /// The store over `service`.
    pub fn new(service: Service) -> ServiceStore {
        ServiceStore { service }
    }
}

fn store_error(error: client::ErrorResponse) -> StoreError {
    match error.code {
        ErrorCode::NotLeader
        | ErrorCode::Unavailable
        | ErrorCode::Internal
        | ErrorCode::SequenceForgotten => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Refused(error.to_string()),
    }
}

fn unexpected(response: &Response) -> StoreError {
    StoreError::Unavailable(format!("unexpected answer from the service: {response:?}"))
}

impl agenda::Store for ServiceStore {
    async fn get(&self, key: Bytes) -> Result<Option<Versioned>, StoreError> {
        let request = Request::Get {
            key,
            consistency: Consistency::Linearizable,
        };
        match self.service.execute(request).await {
            Response::Value(value) => Ok(value),
            Response::Error(error) => Err(store_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    async fn scan(&self, start: Bytes, end: Bytes, limit: u32) -> Result<Scanned, StoreError> {
        let request = Request::Scan {
            start,
            end,
            limit,
            consistency: Consistency::Linearizable,
        };
        match self.service.execute(request).await {
            Response::Scan { entries, more } => Ok(Scanned { entries, more }),
            Response::Error(error) => Err(store_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<Committed, StoreError> {
        match self.service.write(Write::Txn(txn), None).await {
            Response::Written {
                shard,
                index,
                result: WriteResult::Txn { succeeded, results },
            } => Ok(Committed {
                succeeded,
                results,
                position: (shard, index),
            }),
            Response::Error(error) => Err(store_error(error)),
            other => Err(unexpected(&other)),
        }
    }
}

/// The server's wall clock, the operating system's random numbers (madsim's seeded ones under
/// the simulator), and the threads that hash and check passwords.
///
/// Argon2 costs tens of milliseconds of CPU per hash: run on the async runtime, a flood of logins
/// would stall every request of the server. So each hash or check runs under
/// `tokio::task::spawn_blocking`, at most one per core at once; one that waits longer than
/// [`PASSWORD_WAIT_MAX`] for its turn is refused as `unavailable` (503, nothing written), so that
/// a flood sheds instead of queueing without bound. Under the simulator (no OS threads) it runs
/// inline.
#[derive(Clone, Debug)]
pub struct ServerEnv {
    wall_clock: crate::WallClock,
    #[cfg(not(madsim))]
    password_threads: Arc<tokio::sync::Semaphore>,
}

/// The longest a password hash or check waits for a thread before its request is refused.
#[cfg(not(madsim))]
pub const PASSWORD_WAIT_MAX: Duration = Duration::from_secs(5);

impl ServerEnv {
    /// The environment of a server with this wall clock.
    pub fn new(wall_clock: crate::WallClock) -> ServerEnv {
        ServerEnv {
            wall_clock,
            #[cfg(not(madsim))]
            password_threads: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            )),
        }
    }
}

impl agenda::Env for ServerEnv {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.wall_clock.now_ms()).unwrap_or(i64::MAX)
    }

    #[cfg(not(madsim))]
    fn random(&self) -> [u8; 32] {
        let mut bytes = [0; 32];
        // The kernel's generator does not fail once the system has booted; a failure here would
        // leave predictable tokens, so it is not ignored.
        getrandom::fill(&mut bytes).expect("the operating system's random number generator");
        bytes
    }

    #[cfg(madsim)]
    fn random(&self) -> [u8; 32] {
        madsim::rand::random()
    }

    #[cfg(not(madsim))]
    fn password_work<T, F>(&self, work: F) -> agenda::store::PasswordWork<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let threads = self.password_threads.clone();
        Box::pin(async move {
            let refused = || {
                agenda::AgendaError::Unavailable(
                    "refused before being proposed: too many password checks at once".to_owned(),
                )
            };
            let permit = tokio::time::timeout(PASSWORD_WAIT_MAX, threads.acquire_owned())
                .await
                .map_err(|_| refused())?
                .map_err(|_| refused())?;
            let done = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work()
            })
            .await;
            match done {
                Ok(result) => Ok(result),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => Err(refused()),
            }
        })
    }
}

/// Outbox records one delivery pass handles at most.
const DELIVERY_BATCH: u32 = 256;
/// The wait before a pass that failed is tried again, doubled up to [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Delivers the outbox of every events shard this server leads, whenever the node loop says
/// there is work (a change under an outbox, or a new leadership over a shard with records in
/// its outbox), until a pass finds nothing left to do.
pub(crate) async fn run_delivery(
    agenda: Arc<ServerAgenda>,
    service: Service,
    watch: Arc<crate::node::Watch>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = watch.notify.notified() => {}
        }
        let mut retry = RETRY_INITIAL;
        loop {
            // A stopping server does not wait for a pass in flight (its requests could take a
            // request timeout): the work is in the store, and the next leader resumes it.
            let pass = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                pass = deliver_once(&agenda, &service) => pass,
            };
            match pass {
                Pass::Idle => break,
                Pass::MoreWork => retry = RETRY_INITIAL,
                Pass::Failed => {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// What one delivery pass found.
enum Pass {
    /// Nothing left to deliver in the outboxes this server leads.
    Idle,
    /// It delivered something, or stopped at its batch's end: go again.
    MoreWork,
    /// A store error: go again after a pause.
    Failed,
}

/// One pass over the outboxes this server leads.
async fn deliver_once(agenda: &ServerAgenda, service: &Service) -> Pass {
    let counters = &service.metrics().counters;
    let mut pass = Pass::Idle;
    for bucket in ["am", "nz"] {
        let shard = service.shard_map().lookup(&agenda::keys::outbox(bucket)).id;
        if !service.leads(shard) {
            continue;
        }
        match agenda.deliver(bucket, DELIVERY_BATCH).await {
            Ok(report) => {
                Metrics::add(&counters.outbox_deliveries, report.delivered as u64);
                Metrics::add(
                    &counters.outbox_deliveries_superseded,
                    report.superseded as u64,
                );
                Metrics::add(&counters.outbox_records_corrupt, report.corrupt as u64);
                if report.corrupt > 0 {
                    tracing::error!(
                        bucket,
                        corrupt = report.corrupt,
                        "outbox records that do not decode were left in place"
                    );
                }
                if report.failed > 0 {
                    Metrics::add(&counters.outbox_delivery_errors, report.failed as u64);
                    if let Some(error) = &report.last_error {
                        tracing::warn!(bucket, failed = report.failed, %error, "outbox records not delivered; retrying");
                    }
                    pass = Pass::Failed;
                } else if report.delivered + report.superseded > 0 && matches!(pass, Pass::Idle) {
                    // Progress: go again at once (a full batch may have more behind it). A
                    // batch of records that cannot be decoded makes no progress and does not
                    // spin: they wait, counted, for the next wake-up.
                    pass = Pass::MoreWork;
                }
            }
            Err(error) => {
                Metrics::add(&counters.outbox_delivery_errors, 1);
                tracing::warn!(bucket, %error, "outbox delivery failed; retrying");
                pass = Pass::Failed;
            }
        }
    }
    pass
}

/// How late an alert may still be sent: one due while no scheduler ran (every replica of its
/// shard down, a failover) is sent up to this long after its time, marked late; an older one is
/// dropped and counted.
const REMINDER_GRACE: Duration = Duration::from_secs(15 * 60);
/// How far ahead a pass looks for the next alert, and so the longest a scheduler with alerts to
/// watch sleeps (occurrences enter the window as time goes by).
const REMINDER_LOOKAHEAD: Duration = Duration::from_secs(30);
/// The least time between two passes that a change (not a due alert) starts: a busy events
/// shard wakes the scheduler at most this often.
const REMINDER_CHANGE_INTERVAL: Duration = Duration::from_millis(500);

/// Sends the reminders of every events shard this server leads, each at its time: a pass, then
/// a sleep until the next alert due (at most [`REMINDER_LOOKAHEAD`]) or until the node loop says
/// the alerts changed or this server became leader of a shard holding some.
pub(crate) async fn run_reminders(
    agenda: Arc<ServerAgenda>,
    service: Service,
    watch: Arc<crate::node::Watch>,
    shutdown: CancellationToken,
) {
    let mut retry = RETRY_INITIAL;
    loop {
        let started = tokio::time::Instant::now();
        let pass = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            pass = remind_once(&agenda, &service) => pass,
        };
        let wait = match pass {
            Reminding::Idle => None,
            Reminding::Waiting {
                next_due_ms,
                failed,
            } => {
                let now_ms = agenda::Env::now_ms(agenda.env());
                let until_due = next_due_ms.map_or(REMINDER_LOOKAHEAD, |due| {
                    Duration::from_millis(u64::try_from(due - now_ms).unwrap_or(0))
                });
                let mut wait = until_due.min(REMINDER_LOOKAHEAD);
                // Records that failed are tried again soon, backing off; the others' next
                // alert is still waited for, not delayed by them.
                if failed {
                    wait = wait.min(retry);
                    retry = (retry * 2).min(RETRY_MAX);
                } else {
                    retry = RETRY_INITIAL;
                }
                Some(wait)
            }
        };
        let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
        let woken = match deadline {
            Some(deadline) => tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = watch.notify.notified() => true,
                () = tokio::time::sleep_until(deadline) => false,
            },
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = watch.notify.notified() => true,
            },
        };
        if woken {
            // A change woke it: not more often than every interval, and never past the next
            // alert due.
            let mut next = started + REMINDER_CHANGE_INTERVAL;
            if let Some(deadline) = deadline {
                next = next.min(deadline);
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }
}

/// What one scheduler pass found.
enum Reminding {
    /// This server leads no events shard: nothing to do until it does.
    Idle,
    /// Done for now: the next alert due within the look-ahead, if any, and whether some
    /// records (or a whole pass) failed and must be tried again.
    Waiting {
        next_due_ms: Option<i64>,
        failed: bool,
    },
}

/// One scheduler pass over the alerts of the events shards this server leads.
async fn remind_once(agenda: &ServerAgenda, service: &Service) -> Reminding {
    let counters = &service.metrics().counters;
    let grace_ms = REMINDER_GRACE.as_millis() as i64;
    let lookahead_ms = REMINDER_LOOKAHEAD.as_millis() as i64;
    let mut led = false;
    let mut next_due_ms: Option<i64> = None;
    let mut failed = false;
    for bucket in ["am", "nz"] {
        let shard = service
            .shard_map()
            .lookup(&agenda::keys::alerts_all(bucket))
            .id;
        if !service.leads(shard) {
            continue;
        }
        led = true;
        match agenda.remind(bucket, grace_ms, lookahead_ms).await {
            Ok(report) => {
                let late = report.fired_late as u64;
                Metrics::add(&counters.reminders_sent, report.fired as u64);
                Metrics::add(&counters.reminders_late, late);
                Metrics::add(&counters.reminders_stale, report.stale as u64);
                Metrics::add(&counters.reminder_records_removed, report.removed as u64);
                Metrics::add(&counters.reminder_records_corrupt, report.corrupt as u64);
                if report.corrupt > 0 {
                    tracing::error!(
                        bucket,
                        corrupt = report.corrupt,
                        "alert records that do not decode were left in place"
                    );
                }
                if report.stale > 0 {
                    tracing::warn!(
                        bucket,
                        stale = report.stale,
                        "alerts dropped: due too long ago"
                    );
                }
                if report.failed > 0 {
                    Metrics::add(&counters.reminder_errors, report.failed as u64);
                    if let Some(error) = &report.last_error {
                        tracing::warn!(bucket, failed = report.failed, %error, "alerts not sent; retrying");
                    }
                    failed = true;
                }
                next_due_ms = match (next_due_ms, report.next_due_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Err(error) => {
                Metrics::add(&counters.reminder_errors, 1);
                tracing::warn!(bucket, %error, "reminder pass failed; retrying");
                failed = true;
            }
        }
    }
    if led {
        Reminding::Waiting {
            next_due_ms,
            failed,
        }
    } else {
        Reminding::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::layout_problem;
    use crate::config::default_shards;
    use crate::shard::ShardMap;

    #[test]
    fn the_default_map_keeps_each_agenda_range_whole_and_a_split_one_is_reported() {
        assert_eq!(
            layout_problem(&ShardMap::new(default_shards(4)).unwrap()),
            None
        );
        let mut shards = default_shards(4);
        // Cut the users shard at `us/m`: `us/` now spans two shards.
        let mut second = shards[3].clone();
        second.id = 5;
        second.start = "us/m".into();
        shards[3].end = "us/m".into();
        shards.push(second);
        let problem = layout_problem(&ShardMap::new(shards).unwrap()).expect("a problem");
        assert!(problem.contains("\"us/\""), "{problem}");
    }
}
