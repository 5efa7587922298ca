//! A connection driven from a synchronous thread: tokio-postgres on a current-thread
//! runtime that the store's connections share, so that the statements of one step of a
//! turn go to the database together (pipelined) and their answers come back in one wait,
//! instead of one round trip each.
//!
//! The connection's own task (which reads and writes the socket) runs while a call here
//! waits ([`Session::wait`]); between calls nothing is read, which is all a connection
//! used by one thread needs. [`Listening`] is the other kind: a connection whose task
//! passes on the notifications it receives.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, Error, Row, Statement, ToStatement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The runtime the store's connections run on.
///
/// # Errors
/// When the OS refuses what a runtime needs (an epoll instance).
pub(super) fn runtime() -> std::io::Result<Arc<Runtime>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map(Arc::new)
}

/// One connection, used by one thread at a time.
pub(super) struct Session {
    runtime: Arc<Runtime>,
    client: Client,
}

impl Session {
    /// Connects with `config` and `tls`.
    pub(super) fn connect(
        runtime: &Arc<Runtime>,
        config: &Config,
        tls: MakeRustlsConnect,
    ) -> Result<Session, Error> {
        let (client, connection) = runtime.block_on(config.connect(tls))?;
        runtime.spawn(async move {
            // Ends when the connection does: closed by the server, broken, or the
            // client dropped.
            let _ = connection.await;
        });
        Ok(Session {
            runtime: Arc::clone(runtime),
            client,
        })
    }

    /// Runs `work` (what it sends goes out together) until it is done.
    pub(super) fn wait<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// The client, for the futures given to [`Session::wait`]: those polled together
    /// (`tokio::join!(biased; ...)`) are sent together, in that order.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        self.wait(self.client.prepare(sql))
    }

    pub(super) fn query<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.wait(self.client.query(statement, params))
    }

    pub(super) fn query_one<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.wait(self.client.query_one(statement, params))
    }

    pub(super) fn query_opt<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.wait(self.client.query_opt(statement, params))
    }

    pub(super) fn execute<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.wait(self.client.execute(statement, params))
    }

    /// Runs `sql`, one or more statements, with the simple protocol.
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.wait(self.client.batch_execute(sql))
    }

    /// Begins a transaction, rolled back unless [`InTransaction::commit`] is called.
    pub(super) fn transaction(&mut self) -> Result<InTransaction<'_>, Error> {
        self.begin("BEGIN")
    }

    /// As [`Session::transaction`], begun with `begin` (`BEGIN ISOLATION LEVEL ...`).
    pub(super) fn begin(&mut self, begin: &str) -> Result<InTransaction<'_>, Error> {
        self.batch_execute(begin)?;
        Ok(InTransaction {
            session: self,
            done: false,
        })
    }
}

/// A transaction on a [`Session`]: rolled back when dropped uncommitted.
pub(super) struct InTransaction<'a> {
    session: &'a mut Session,
    done: bool,
}

impl InTransaction<'_> {
    /// Commits it.
    pub(super) fn commit(mut self) -> Result<(), Error> {
        self.done = true;
        self.session.batch_execute("COMMIT")
    }
}

impl std::ops::Deref for InTransaction<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session
    }
}

impl std::ops::DerefMut for InTransaction<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session
    }
}

impl Drop for InTransaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A broken connection has no transaction left to roll back.
            let _ = self.session.batch_execute("ROLLBACK");
        }
    }
}

/// A connection that listens: its notifications, as they come.
pub(super) struct Listening {
    runtime: Arc<Runtime>,
    client: Client,
    heard: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Listening {
    /// Connects with `config` and `tls`, and runs `LISTEN channel`.
    pub(super) fn connect(
        runtime: &Arc<Runtime>,
        config: &Config,
        tls: MakeRustlsConnect,
        channel: &str,
    ) -> Result<Listening, Error> {
        let (client, mut connection) = runtime.block_on(config.connect(tls))?;
        let (tell, heard) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if tell.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // Dropping `tell` tells the listener the connection is gone.
        });
        let listening = Listening {
            runtime: Arc::clone(runtime),
            client,
            heard,
        };
        listening
            .runtime
            .block_on(listening.client.batch_execute(&format!("LISTEN {channel}")))?;
        Ok(listening)
    }

    /// Waits up to `wait` for a notification: `Some(true)` when one came (and takes the
    /// others already there), `Some(false)` when none did, `None` when the connection is
    /// gone.
    pub(super) fn next(&mut self, wait: Duration) -> Option<bool> {
        let heard = &mut self.heard;
        let first = self
            .runtime
            .block_on(async { tokio::time::timeout(wait, heard.recv()).await });
        match first {
            Ok(Some(())) => {
                while self.heard.try_recv().is_ok() {}
                Some(true)
            }
            Ok(None) => None,
            Err(_) => {
                // A quiet interval: a dead connection shows when it is used.
                let alive = self.runtime.block_on(self.client.simple_query(""));
                alive.ok().map(|_| false)
            }
        }
    }
}
