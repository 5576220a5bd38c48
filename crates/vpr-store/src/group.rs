//! Group commit: callers hand items to writer threads, which commit everything waiting in one
//! durable transaction and then answer each caller. Every caller still waits for its own item
//! to be committed; the cost of a commit (an fsync) is shared instead of paid per item.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::StoreError;

/// Writes a batch in one transaction, answering each item in order.
pub(crate) type WriteBatch<T, R> = dyn Fn(&[&T]) -> Result<Vec<R>, StoreError> + Send + Sync;

type Pending<T, R> = (T, SyncSender<Result<R, String>>);
/// The queue, once its writers are started.
type Queue<T, R> = Arc<Mutex<Option<SyncSender<Pending<T, R>>>>>;

/// A group-commit queue with its writer threads, started on first use (so read-only uses of the
/// store start no threads). The threads end when the last handle is dropped.
pub(crate) struct GroupCommit<T, R> {
    queue: Queue<T, R>,
    write: Arc<WriteBatch<T, R>>,
    writers: usize,
    max_batch: usize,
    name: &'static str,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            write: self.write.clone(),
            writers: self.writers,
            max_batch: self.max_batch,
            name: self.name,
        }
    }
}

impl<T, R> std::fmt::Debug for GroupCommit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("name", &self.name).field("writers", &self.writers).finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// `writers` threads named `name-N` share one queue: one suits SQLite (it has a single
    /// writer anyway); several let PostgreSQL gather the next batch during a commit.
    pub(crate) fn new(name: &'static str, writers: usize, max_batch: usize, write: Arc<WriteBatch<T, R>>) -> Self {
        Self { queue: Arc::new(Mutex::new(None)), write, writers: writers.max(1), max_batch: max_batch.max(1), name }
    }

    fn sender(&self) -> Result<SyncSender<Pending<T, R>>, StoreError> {
        let mut guard = self.queue.lock().map_err(|_| StoreError::Unavailable(format!("the {} failed", self.name)))?;
        if let Some(q) = guard.as_ref() {
            return Ok(q.clone());
        }
        let (queue, inbox) = sync_channel::<Pending<T, R>>(4096);
        let inbox = Arc::new(Mutex::new(inbox));
        for n in 0..self.writers {
            let (inbox, write, max) = (inbox.clone(), self.write.clone(), self.max_batch);
            std::thread::Builder::new()
                .name(format!("{}-{n}", self.name))
                .spawn(move || writer_loop(&inbox, write.as_ref(), max))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the {}: {e}", self.name)))?;
        }
        *guard = Some(queue.clone());
        Ok(queue)
    }

    /// Submits an item and waits until it is committed (or its write failed).
    pub(crate) fn submit(&self, item: T) -> Result<R, StoreError> {
        self.submit_many(vec![item]).pop().unwrap_or_else(|| Err(self.stopped()))
    }

    /// Submits several items at once (so they can share a commit) and waits until each is
    /// committed (or its write failed); one result per item, in order.
    pub(crate) fn submit_many(&self, items: Vec<T>) -> Vec<Result<R, StoreError>> {
        let sender = match self.sender() {
            Ok(s) => s,
            Err(e) => {
                let why = e.to_string();
                return items.iter().map(|_| Err(StoreError::Unavailable(why.clone()))).collect();
            }
        };
        let waiting: Vec<_> = items
            .into_iter()
            .map(|item| {
                let (reply, outcome) = sync_channel(1);
                sender.send((item, reply)).ok().map(|()| outcome)
            })
            .collect();
        waiting
            .into_iter()
            .map(|outcome| match outcome.map(|o| o.recv()) {
                Some(Ok(Ok(r))) => Ok(r),
                Some(Ok(Err(why))) => Err(StoreError::Unavailable(format!("{} write failed: {why}", self.name))),
                _ => Err(self.stopped()),
            })
            .collect()
    }

    fn stopped(&self) -> StoreError {
        StoreError::Unavailable(format!("the {} has stopped", self.name))
    }
}

fn writer_loop<T, R>(inbox: &Mutex<Receiver<Pending<T, R>>>, write: &WriteBatch<T, R>, max_batch: usize) {
    loop {
        // Take what is waiting (at least one item) while holding the queue, then commit it
        // without holding it, so another writer can gather the next batch meanwhile.
        let batch = {
            let Ok(queue) = inbox.lock() else { return };
            let Ok(first) = queue.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let items: Vec<&T> = batch.iter().map(|(item, _)| item).collect();
        match write(&items) {
            Ok(results) if results.len() == batch.len() => {
                for ((_, reply), r) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            // One bad item must not fail its neighbours: retry each on its own.
            _ => {
                for (item, reply) in &batch {
                    let one = write(&[item])
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| r.pop().ok_or_else(|| "the write returned no result".to_owned()));
                    let _ = reply.send(one);
                }
            }
        }
    }
}
