//! The writer's commit sequence under crashes: a deterministic model test.
//!
//! A real store on a temporary file, and a scripted run of batches: hosts that change
//! address (both families), signed reports and replays, hosts going offline and back,
//! turns with no report while a sweep runs, TXT records set and cleared by zone updates,
//! and acme-dns accounts registered. The writer's limits are small, so that the
//! script makes sweeps of several chunks, drops journal entries and prunes the history.
//!
//! A first run notes every crash point ([`CrashPoint`]) each turn reaches. Then, for each
//! of them, a run stops there as a crash would: the writer is abandoned (its connection
//! closed without the checkpoint of a clean close), the store is opened and loaded as at a restart and compared with
//! a model (host → addresses, and each host's address changes); a new writer goes on from
//! what was loaded with the rest of the script, and the store is compared again at the
//! end. At every crash point of every run, the table must show a batch only once it is
//! committed, and no report may be answered before then.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::model::account::AcmeAccount;
use crate::model::event::EventKind;
use crate::model::txt::Txt;
use crate::proto::notify::SinkFilter;
use crate::proto::update::{RrChange, RrType, RrValue, UpdatePlan};
use crate::state::outbox::Settlements;
use crate::store::{set_crash_hook, CrashHook, Loaded, PendingChanges};

/// The script's turns, `STEP` apart.
const N_TURNS: usize = 30;
const STEP: Duration = Duration::from_secs(20);
const N_HOSTS: u64 = 8;
/// `history_max_age`: the history of the first turns is pruned by the last ones.
const MAX_AGE: Duration = Duration::from_secs(150);
/// A sweep once the journal holds more records than the 8 hosts (or 6 changes wait), two
/// hosts a turn.
const LIMITS: Limits = Limits {
    min_journal: 6,
    min_chunk: 2,
    max_chunk: 2,
};

/// One report of the script.
#[derive(Debug, Clone)]
struct Spec {
    name: Name,
    addr: IpAddr,
    at: Time,
    signed_at: Option<Time>,
    offline: bool,
}

/// A zone update of the script: `_acme-challenge.HOST`'s TXT records replaced by one
/// token (`Some`), or deleted.
#[derive(Debug, Clone)]
struct TxtSpec {
    name: Name,
    token: Option<Txt>,
}

struct Script {
    batches: Vec<Vec<Spec>>,
    /// Each turn's zone update, if it has one.
    txt: Vec<Option<TxtSpec>>,
    /// Each turn's acme-dns registration, if it has one.
    accounts: Vec<Option<AcmeAccount>>,
    /// The clock of the first turn; turn `n` is `n` steps later.
    start: Now,
}

impl Script {
    /// Random but fixed (a xorshift generator with a constant seed).
    fn new() -> Script {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let start = Now {
            time: Time::from_micros(1_700_000_000_000_000),
            instant: Instant::now(),
        };
        let mut client_times = [0i64; N_HOSTS as usize];
        let mut batches = Vec::new();
        for turn in 0..N_TURNS {
            let mut batch = Vec::new();
            // Every seventh turn, nothing came: a turn of sweeping alone.
            let n_reports = if turn % 7 == 6 { 0 } else { 1 + random(5) };
            for idx in 0..n_reports {
                let host = random(N_HOSTS);
                let choice = random(3) as u16;
                let addr = if random(3) == 0 {
                    IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        host as u16,
                        0,
                        0,
                        0,
                        choice,
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::new(203, 0, 113, (10 * host) as u8 + choice as u8))
                };
                let client_time = &mut client_times[host as usize];
                let (signed_at, offline) = match random(10) {
                    0..=3 => (None, false),
                    4..=7 => {
                        *client_time += 1 + random(3) as i64;
                        (Some(*client_time), false)
                    }
                    // A replay: the client time of the host's last signed report.
                    8 => (Some(*client_time), false),
                    _ => (None, true),
                };
                batch.push(Spec {
                    name: Name::parse(&format!("host-{host}")).unwrap(),
                    addr,
                    at: Time::from_micros(
                        start.time.as_micros() + turn as i64 * STEP.as_micros() as i64 + idx as i64,
                    ),
                    signed_at: signed_at.map(|secs| Time::from_micros(secs * 1_000_000)),
                    offline,
                });
            }
            batches.push(batch);
        }
        // Every third turn a TXT change, every eleventh a deletion, every fifth an account.
        let txt = (0..N_TURNS)
            .map(|turn| {
                (turn % 3 == 1).then(|| TxtSpec {
                    name: Name::parse(&format!("_acme-challenge.host-{}", turn % 4)).unwrap(),
                    token: (turn % 11 != 10)
                        .then(|| Txt::from_text(&format!("token-{turn}")).unwrap()),
                })
            })
            .collect();
        let accounts = (0..N_TURNS)
            .map(|turn| {
                (turn % 5 == 2).then(|| {
                    let (account, _) =
                        AcmeAccount::generate(None, Vec::new(), Time::from_micros(turn as i64));
                    account
                })
            })
            .collect();
        Script {
            batches,
            txt,
            accounts,
            start,
        }
    }

    /// The turn's zone update and registration, each answering into `answers`.
    fn zone_jobs(&self, turn: usize, answers: &Arc<Mutex<Vec<(usize, bool)>>>) -> Vec<Job> {
        let mut jobs = Vec::new();
        if let Some(spec) = &self.txt[turn] {
            let name = spec.name.folded().to_owned();
            let mut changes = vec![RrChange::DeleteRrset {
                name: name.clone(),
                rr_type: RrType::Txt,
            }];
            if let Some(token) = &spec.token {
                changes.push(RrChange::Add {
                    name,
                    value: RrValue::Txt(token.clone()),
                    ttl: 60,
                });
            }
            let answers = Arc::clone(answers);
            jobs.push(Job::Update(ZoneUpdate {
                plan: UpdatePlan {
                    prerequisites: Vec::new(),
                    changes,
                },
                at: self.now(turn).time,
                done: Some(Box::new(move |outcome| {
                    answers.lock().unwrap().push((turn, outcome.is_ok()));
                })),
            }));
        }
        if let Some(account) = &self.accounts[turn] {
            let answers = Arc::clone(answers);
            jobs.push(Job::Register(Registration {
                account: account.clone(),
                done: Some(Box::new(move |outcome| {
                    answers.lock().unwrap().push((turn, outcome.is_ok()));
                })),
            }));
        }
        jobs
    }

    fn now(&self, turn: usize) -> Now {
        Now {
            time: Time::from_micros(
                self.start.time.as_micros() + turn as i64 * STEP.as_micros() as i64,
            ),
            instant: self.start.instant + STEP * turn as u32,
        }
    }

    /// The turn's reports, each answering into `answers`.
    fn reports(&self, turn: usize, answers: &Arc<Mutex<Vec<Heard>>>) -> Vec<Report> {
        self.batches[turn]
            .iter()
            .enumerate()
            .map(|(idx, spec)| {
                let answers = Arc::clone(answers);
                Report {
                    name: spec.name.clone(),
                    addr: spec.addr,
                    at: spec.at,
                    signed_at: spec.signed_at,
                    offline: spec.offline,
                    done: Some(Box::new(move |outcome: Outcome| {
                        answers.lock().unwrap().push(Heard { turn, idx, outcome })
                    })),
                }
            })
            .collect()
    }
}

/// What a report's `Done` was called with.
#[derive(Debug)]
struct Heard {
    turn: usize,
    idx: usize,
    outcome: Outcome,
}

/// A host as the model and the tests see it: each family's address and last report, the
/// client time of its last signed report, offline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelHost {
    v4: Option<(Ipv4Addr, Time)>,
    v6: Option<(Ipv6Addr, Time)>,
    signed_at: Option<Time>,
    offline: bool,
}

impl ModelHost {
    fn of(record: &Record) -> ModelHost {
        ModelHost {
            v4: record.v4.map(|seen| (seen.addr, seen.last_seen)),
            v6: record.v6.map(|seen| (seen.addr, seen.last_seen)),
            signed_at: record.signed_at,
            offline: record.offline,
        }
    }
}

/// What the store must hold after the batches committed so far: written from the rules,
/// not from the writer's code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    hosts: BTreeMap<Name, ModelHost>,
    /// Each host's address changes, oldest first.
    history: BTreeMap<Name, Vec<(Time, IpAddr)>>,
    /// The TXT records, by name.
    txt: BTreeMap<Name, Vec<Txt>>,
    /// The acme-dns accounts' user names.
    accounts: BTreeSet<String>,
}

impl Model {
    /// Applies a turn's zone update and registration.
    fn apply_zone(&mut self, txt: Option<&TxtSpec>, account: Option<&AcmeAccount>) {
        if let Some(spec) = txt {
            match &spec.token {
                Some(token) => {
                    self.txt.insert(spec.name.clone(), vec![token.clone()]);
                }
                None => {
                    self.txt.remove(&spec.name);
                }
            }
        }
        if let Some(account) = account {
            self.accounts.insert(account.username.clone());
        }
    }

    /// Applies a batch; returns each report's answer: `None` for a replay, else whether
    /// it changed its host (`good`).
    fn apply(&mut self, batch: &[Spec]) -> Vec<Option<bool>> {
        let mut answers = Vec::new();
        for spec in batch {
            let addr = spec.addr.to_canonical();
            let host = self.hosts.entry(spec.name.clone()).or_insert(ModelHost {
                v4: None,
                v6: None,
                signed_at: None,
                offline: spec.offline,
            });
            let is_new = host.v4.is_none() && host.v6.is_none();
            if let (Some(signed_at), Some(last)) = (spec.signed_at, host.signed_at) {
                if signed_at <= last {
                    answers.push(None);
                    continue;
                }
            }
            let new_address = match addr {
                IpAddr::V4(v4) => host
                    .v4
                    .replace((v4, spec.at))
                    .is_none_or(|(old, _)| old != v4),
                IpAddr::V6(v6) => host
                    .v6
                    .replace((v6, spec.at))
                    .is_none_or(|(old, _)| old != v6),
            };
            answers.push(Some(is_new || new_address || host.offline != spec.offline));
            host.offline = spec.offline;
            host.signed_at = spec.signed_at.or(host.signed_at);
            if new_address {
                let changes = self.history.entry(spec.name.clone()).or_default();
                changes.push((spec.at, addr));
            }
        }
        answers
    }
}

fn table_hosts(table: &Table) -> BTreeMap<Name, ModelHost> {
    table
        .chunk_after(None, usize::MAX)
        .into_iter()
        .map(|(name, entry)| (name, ModelHost::of(&entry.record)))
        .collect()
}

/// A crash at a crash point: unwound through the turn without a panic message.
#[derive(Debug, Clone, Copy)]
struct Crashed(CrashPoint);

/// What the hook knows of the turn under way.
struct Turning {
    turn: usize,
    /// The model before the turn's batch, and with it.
    before: Model,
    after: Model,
    table: Arc<Table>,
    answers: Arc<Mutex<Vec<Heard>>>,
    /// The zone updates' and registrations' answers: turn, applied.
    zone_answers: Arc<Mutex<Vec<(usize, bool)>>>,
    crash_at: Option<(usize, CrashPoint)>,
    /// Every crash point reached, by turn.
    reached: Vec<(usize, CrashPoint)>,
}

/// At every crash point: the table shows the batch only once it is committed and the
/// writer is past its bookkeeping, no report is answered before the end of the turn, and
/// at `crash_at`, a crash.
fn hook(turning: Rc<RefCell<Turning>>) -> CrashHook {
    Box::new(move |point| {
        let mut turning = turning.borrow_mut();
        let turn = turning.turn;
        turning.reached.push((turn, point));
        let expect = if point >= CrashPoint::TableUpdated {
            &turning.after
        } else {
            &turning.before
        };
        assert_eq!(
            &table_hosts(&turning.table),
            &expect.hosts,
            "turn {turn}: what the table shows at {point:?}"
        );
        let txt: BTreeMap<Name, Vec<Txt>> = turning.table.all_txt().into_iter().collect();
        assert_eq!(
            txt, expect.txt,
            "turn {turn}: the TXT records the table shows at {point:?}"
        );
        let accounts = expect
            .accounts
            .iter()
            .filter(|username| turning.table.acme_account(username).is_none())
            .count();
        assert_eq!(accounts, 0, "turn {turn}: accounts missing at {point:?}");
        if point < CrashPoint::Answered {
            let answers = turning.answers.lock().unwrap();
            let early: Vec<&Heard> = answers
                .iter()
                .filter(|answer| answer.turn == turn)
                .collect();
            assert!(
                early.is_empty(),
                "turn {turn}: answered at {point:?}: {early:?}"
            );
            let zone_answers = turning.zone_answers.lock().unwrap();
            assert!(
                zone_answers.iter().all(|&(answered, _)| answered != turn),
                "turn {turn}: a zone update answered at {point:?}"
            );
        }
        if turning.crash_at == Some((turn, point)) {
            drop(turning);
            resume_unwind(Box::new(Crashed(point)));
        }
    })
}

/// Removes the thread's hook however the test ends.
struct HookGuard;

impl Drop for HookGuard {
    fn drop(&mut self) {
        set_crash_hook(None);
    }
}

fn writer(store: Store, loaded: Loaded, now: Now) -> (Writer, Arc<Table>) {
    let table = Arc::new(
        Table::new(loaded.hosts)
            .with_txt(loaded.txt)
            .with_acme_accounts(loaded.accounts),
    );
    let outbox = store.outbox().unwrap();
    // A sink that hears every event (its thread gone: the events stay in the outbox),
    // so that each turn writes its reports' events in its transaction.
    let (events, _) = std::sync::mpsc::channel();
    let notice = Notice::new(
        vec![Outlet {
            name: "all".into(),
            filter: SinkFilter::all(),
            events,
        }],
        Duration::from_secs(1 << 40),
        Duration::from_secs(1 << 40),
        outbox.next_event,
        outbox.stale,
        Arc::new(Settlements::default()),
        now.instant,
    );
    let mut writer = Writer::new(
        store,
        Arc::clone(&table),
        loaded.progress,
        Arc::new(Recent::default()),
        Arc::new(Metrics::default()),
        Some(Prune::new(MAX_AGE, now.instant)),
        LIMITS,
    );
    writer.notice = Some(notice);
    (writer, table)
}

/// Opens and loads the store at `path` as a restart does, and compares it with `expect`
/// at `now`: the same hosts, and of each host's changes every one the prune cannot have
/// taken yet (newer than `MAX_AGE`), and none the model lacks, in order; read from the
/// journal as `dynip history` does, and with the unsettled changes held as the server
/// does. Returns the store, what it loaded, and how many changes were pruned.
fn check_store(path: &Path, expect: &Model, now: Now, what: &str) -> (Store, Loaded, usize) {
    let store = Store::open(path).unwrap();
    let loaded = store.load().unwrap();
    let hosts: BTreeMap<Name, ModelHost> = loaded
        .hosts
        .iter()
        .map(|(name, entry)| (name.clone(), ModelHost::of(&entry.record)))
        .collect();
    assert_eq!(hosts, expect.hosts, "{what}: the hosts");
    assert_eq!(loaded.txt, expect.txt, "{what}: the TXT records");
    let accounts: BTreeSet<String> = loaded
        .accounts
        .iter()
        .map(|account| account.username.clone())
        .collect();
    assert_eq!(accounts, expect.accounts, "{what}: the acme-dns accounts");
    // Each host's first report made one `new` event, in the same transaction.
    let events = store.events(None, usize::MAX).unwrap();
    let new: BTreeSet<Name> = events
        .iter()
        .filter(|record| record.event.kind == EventKind::New)
        .map(|record| record.event.host.clone())
        .collect();
    assert_eq!(
        new,
        hosts.keys().cloned().collect(),
        "{what}: the hosts' new events"
    );
    let next_event = store.outbox().unwrap().next_event;
    assert!(
        events.iter().all(|record| record.id < next_event),
        "{what}: the next event id is taken"
    );
    let ids: BTreeSet<i64> = loaded
        .progress
        .unsettled
        .iter()
        .map(|logged| logged.id)
        .collect();
    assert_eq!(
        ids.len(),
        loaded.progress.unsettled.len(),
        "{what}: unsettled ids repeat"
    );
    assert!(
        ids.last()
            .is_none_or(|&last| last < loaded.progress.next_history_id),
        "{what}: the next history id is taken"
    );
    let limit = Time::from_micros(now.time.as_micros() - MAX_AGE.as_micros() as i64);
    let mut n_pruned = 0;
    for (name, changes) in &expect.history {
        let journal = store.history(name, PendingChanges::Journal).unwrap();
        let held = store
            .history(name, PendingChanges::Given(&loaded.progress.unsettled))
            .unwrap();
        assert_eq!(
            held, journal,
            "{what}: {name}'s history, held or from the journal"
        );
        let kept: Vec<(Time, IpAddr)> = changes
            .iter()
            .filter(|change| journal.contains(change))
            .copied()
            .collect();
        assert_eq!(
            journal, kept,
            "{what}: {name}'s history has changes the model lacks"
        );
        let lost: Vec<&(Time, IpAddr)> = changes
            .iter()
            .filter(|change| !journal.contains(change) && change.0 >= limit)
            .collect();
        assert!(lost.is_empty(), "{what}: {name}'s history lost {lost:?}");
        n_pruned += changes.len() - kept.len();
    }
    (store, loaded, n_pruned)
}

/// Checks the turn's answers against the model's, in order.
fn check_answers(answers: &Mutex<Vec<Heard>>, turn: usize, expect: &[Option<bool>]) {
    let answers = answers.lock().unwrap();
    let got: Vec<(usize, Option<bool>)> = answers
        .iter()
        .filter(|answer| answer.turn == turn)
        .map(|answer| {
            let changed = match answer.outcome {
                Ok(committed) => Some(committed.changed),
                Err(Refused::Replayed) => None,
                Err(Refused::CommitFailed) => panic!("turn {turn}: a commit failed"),
            };
            (answer.idx, changed)
        })
        .collect();
    let expect: Vec<(usize, Option<bool>)> = expect.iter().copied().enumerate().collect();
    assert_eq!(got, expect, "turn {turn}: the answers");
}

/// What one run of the script did.
struct Run {
    /// The crash points reached before the crash, if any.
    reached: Vec<(usize, CrashPoint)>,
    crashed: bool,
    /// Changes the prune took by the end.
    n_pruned: usize,
}

/// Runs the script on a new store, crashing at `crash_at`, restarting, and going on.
fn run(script: &Script, crash_at: Option<(usize, CrashPoint)>) -> Run {
    // In memory where there is a tmpfs: the test is about the order of the steps, not
    // the disk, and a fsync there costs nothing (225 runs: 3 s instead of 15).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let path = dir.path().join("dynip.sqlite3");
    let store = Store::open(&path).unwrap();
    let loaded = store.load().unwrap();
    let (mut writer, mut table) = writer(store, loaded, script.now(0));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let zone_answers = Arc::new(Mutex::new(Vec::new()));
    let turning = Rc::new(RefCell::new(Turning {
        turn: 0,
        before: Model::default(),
        after: Model::default(),
        table: Arc::clone(&table),
        answers: Arc::clone(&answers),
        zone_answers: Arc::clone(&zone_answers),
        crash_at,
        reached: Vec::new(),
    }));
    let _guard = HookGuard;
    set_crash_hook(Some(hook(Rc::clone(&turning))));
    let mut model = Model::default();
    let mut crashed = false;
    for turn in 0..N_TURNS {
        let now = script.now(turn);
        let mut after = model.clone();
        let expect = after.apply(&script.batches[turn]);
        after.apply_zone(script.txt[turn].as_ref(), script.accounts[turn].as_ref());
        {
            let mut turning = turning.borrow_mut();
            turning.turn = turn;
            turning.before = model.clone();
            turning.after = after.clone();
        }
        let mut jobs: Vec<Job> = script
            .reports(turn, &answers)
            .into_iter()
            .map(Job::from)
            .collect();
        jobs.extend(script.zone_jobs(turn, &zone_answers));
        let n_zone_jobs = jobs.len() - script.batches[turn].len();
        let res = catch_unwind(AssertUnwindSafe(|| {
            writer.turn(jobs, now);
            writer.start_sweep_if_due();
        }));
        let point = match res {
            Ok(()) => {
                check_answers(&answers, turn, &expect);
                let applied: Vec<bool> = zone_answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|&&(answered, _)| answered == turn)
                    .map(|&(_, applied)| applied)
                    .collect();
                assert_eq!(
                    applied,
                    vec![true; n_zone_jobs],
                    "turn {turn}: zone answers"
                );
                model = after;
                continue;
            }
            Err(payload) => match payload.downcast_ref::<Crashed>() {
                Some(&Crashed(point)) => point,
                None => resume_unwind(payload),
            },
        };
        // The crash: nothing of the writer is written any more, and its connection
        // leaves the write-ahead log as it is.
        crashed = true;
        writer.store.close_as_crashed();
        let answered: Vec<usize> = answers
            .lock()
            .unwrap()
            .iter()
            .filter(|answer| answer.turn == turn)
            .map(|answer| answer.idx)
            .collect();
        if point.is_committed() {
            model = after;
        } else {
            assert!(
                answered.is_empty(),
                "turn {turn}: answered before its commit"
            );
        }
        let what = format!("after a crash at {point:?} in turn {turn}");
        let (store, loaded, _) = check_store(&path, &model, now, &what);
        (writer, table) = self::writer(store, loaded, now);
        let mut turning = turning.borrow_mut();
        turning.table = Arc::clone(&table);
        turning.crash_at = None;
    }
    drop(writer);
    drop(table);
    let what = format!("at the end (crash at {crash_at:?})");
    let (_, _, n_pruned) = check_store(&path, &model, script.now(N_TURNS - 1), &what);
    let reached = std::mem::take(&mut turning.borrow_mut().reached);
    Run {
        reached,
        crashed,
        n_pruned,
    }
}

#[test]
fn a_crash_at_any_step_of_any_turn_loses_nothing_acknowledged_and_keeps_no_half_commit() {
    let script = Script::new();
    let dry = run(&script, None);
    assert!(!dry.crashed);
    // The script must reach what it is for: several sweep chunks, a drop at a sweep's
    // end, and a prune that deleted something.
    let reached: BTreeSet<CrashPoint> = dry.reached.iter().map(|&(_, point)| point).collect();
    let all = [
        CrashPoint::BeforeCommit,
        CrashPoint::JournalAppended,
        CrashPoint::HistorySettled,
        CrashPoint::ReportsCounted,
        CrashPoint::SnapshotWritten,
        CrashPoint::JournalDropped,
        CrashPoint::HistoryPruned,
        CrashPoint::OutboxWritten,
        CrashPoint::TxtWritten,
        CrashPoint::Committed,
        CrashPoint::TableUpdated,
        CrashPoint::Answered,
    ];
    assert_eq!(
        reached,
        all.into_iter().collect(),
        "crash points the script reaches"
    );
    let chunks: BTreeSet<usize> = dry
        .reached
        .iter()
        .filter(|&&(_, point)| point == CrashPoint::SnapshotWritten)
        .map(|&(turn, _)| turn)
        .collect();
    assert!(
        chunks.iter().any(|turn| chunks.contains(&(turn + 1))),
        "no sweep of two chunks or more: {chunks:?}"
    );
    assert!(dry.n_pruned > 0, "the prune took nothing");

    for &crash_at in &dry.reached {
        let run = run(&script, Some(crash_at));
        assert!(run.crashed, "no crash at {crash_at:?}");
    }
}
