//! The followed configuration file: reads (a save, SIGHUP), applying what was read (through
//! the same [`Controller::carry_out`] as `/add` and `/rm`), and write-backs of the replica
//! list. The file's I/O runs on blocking tasks, one at a time, and reports back as a
//! [`Done`]; the controller never waits for a file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use lb_balance::RingHash;
use tokio::sync::oneshot;

use crate::config::{Config, Protocol};
use crate::control::file::{self, FileRead, OwnedEntry, WriteOutcome};
use crate::control::reconcile::{changes, reconcile, FileList};
use crate::control::supervisor::ReplicaSpec;
use crate::state::{timestamp, ConfigStatus, Issue};

use super::scale::{Change, Starts};
use super::{tls_by_address, warn_unverified, Controller, Done, RingParams};

/// The configuration file being followed, and its I/O in progress (reads and write-backs run
/// off the controller, one at a time: see [`Controller::kick_file`]).
pub(super) struct ConfigFile {
    path: PathBuf,
    /// The text last applied or written: the same text again is not a change.
    last_text: String,
    /// A read or a write-back is running.
    busy: bool,
    /// Read the file again when the current I/O is done (`Some(true)`: asked by SIGHUP).
    read_again: Option<bool>,
    /// Write the replica list back when the file is not busy and holds no unapplied save.
    write_due: bool,
    /// Told once the next write-back is done (`/add` and `/rm` answer then).
    waiters: Vec<oneshot::Sender<()>>,
}

impl ConfigFile {
    /// Following `path`, whose text is `last_text` now.
    pub(super) fn new(path: PathBuf, last_text: String) -> ConfigFile {
        ConfigFile {
            path,
            last_text,
            busy: false,
            read_again: None,
            write_due: false,
            waiters: Vec::new(),
        }
    }
}

impl Controller {
    pub(super) fn update_config_status(&self, change: impl FnOnce(&mut ConfigStatus)) {
        let mut status = ConfigStatus::clone(&self.shared.config.load());
        change(&mut status);
        self.shared.config.store(Arc::new(status));
    }

    /// Write the replica list (running replicas and vacancies) back to the file, if there is
    /// one, off the controller; `done` is told when that happened (or failed). A save of the
    /// file not applied yet is read and applied first, so the write never puts the controller's
    /// replica list over the user's edit.
    pub(super) fn write_back(&mut self, done: Option<oneshot::Sender<()>>) {
        let Some(file) = &mut self.file else {
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        };
        file.write_due = true;
        file.waiters.extend(done);
        self.kick_file();
    }

    /// Read the followed file off the controller (a save, or SIGHUP when `hangup`); its
    /// result comes back as [`Done::FileRead`].
    pub(super) fn read_file(&mut self, hangup: bool) {
        let Some(file) = &mut self.file else {
            if hangup {
                let source = self.shared.config.load().path.clone();
                tracing::info!(%source, "no configuration file is followed; nothing to re-read");
            }
            return;
        };
        file.read_again = Some(file.read_again.unwrap_or(false) || hangup);
        self.kick_file();
    }

    /// Start the file's next I/O if none runs: a read when one is asked for (saves are applied
    /// before anything is written), else a write-back when one is due. One at a time, so a
    /// write-back never races a read of the file and the text last applied or written is
    /// always known.
    pub(super) fn kick_file(&mut self) {
        let entries = self.entries();
        let Some(file) = &mut self.file else {
            return;
        };
        if file.busy {
            return;
        }
        let done = self.done.clone();
        let path = file.path.clone();
        let last_text = file.last_text.clone();
        if let Some(hangup) = file.read_again.take() {
            file.busy = true;
            tokio::spawn(async move {
                let work =
                    tokio::task::spawn_blocking(move || file::read_and_check(&path, &last_text));
                let read = match tokio::time::timeout(file::READ_LIMIT, work).await {
                    Ok(Ok(read)) => read,
                    Ok(Err(e)) => FileRead::Refused {
                        text: None,
                        message: format!("internal error while checking the file: {e}"),
                    },
                    Err(_) => FileRead::Refused {
                        text: None,
                        message: format!(
                            "reading and checking the file took over {} s; keeping the running configuration",
                            file::READ_LIMIT.as_secs()
                        ),
                    },
                };
                let _ = done.send(Done::FileRead { read, hangup });
            });
        } else if file.write_due {
            file.write_due = false;
            file.busy = true;
            let waiters = std::mem::take(&mut file.waiters);
            let listed: FileList = entries
                .iter()
                .map(|(id, hostname, .., weight)| (*id, (hostname.clone(), *weight)))
                .collect();
            tokio::spawn(async move {
                let work = tokio::task::spawn_blocking(move || {
                    file::write_back(&path, &last_text, &entries)
                });
                let outcome = match tokio::time::timeout(file::READ_LIMIT, work).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => WriteOutcome::Failed(format!(
                        "internal error while writing the file back: {e}"
                    )),
                    Err(_) => WriteOutcome::Failed(format!(
                        "writing the file back took over {} s",
                        file::READ_LIMIT.as_secs()
                    )),
                };
                // The waiters learn of it once the controller has taken the outcome in.
                let _ = done.send(Done::Written {
                    outcome,
                    waiters,
                    listed,
                });
            });
        }
    }

    /// The replica list as the file should hold it: running replicas and vacancies by id.
    fn entries(&self) -> Vec<OwnedEntry> {
        let mut entries: Vec<OwnedEntry> = self
            .replicas
            .values()
            .map(|r| {
                (
                    r.backend.id,
                    r.backend.hostname.clone(),
                    r.handle.address().map(str::to_owned),
                    r.backend.tls.clone(),
                    r.backend.protocol,
                    self.weight_of(r.backend.id),
                )
            })
            .chain(self.vacancies.values().map(|v| {
                let (id, hostname) = (v.id, v.hostname.clone());
                let weight = self.weight_of(id);
                (
                    id,
                    hostname,
                    v.address.clone(),
                    v.tls.clone(),
                    v.protocol,
                    weight,
                )
            }))
            .collect();
        entries.sort_unstable_by_key(|e| e.0);
        entries
    }

    /// A write-back ended.
    pub(super) fn written(
        &mut self,
        outcome: WriteOutcome,
        waiters: Vec<oneshot::Sender<()>>,
        listed: FileList,
    ) {
        let Some(file) = &mut self.file else {
            return;
        };
        file.busy = false;
        let error = match outcome {
            WriteOutcome::Done { before, written } => {
                // Shared membership: the file lists exactly these now, the base the next save
                // is compared with.
                if let Some(membership) = &mut self.membership {
                    membership.file_base = listed;
                }
                if before == file.last_text {
                    file.last_text = written;
                }
                None
            }
            WriteOutcome::SaveFirst => {
                // Apply the save, then write again (with the waiters still waiting).
                file.waiters.extend(waiters);
                file.write_due = true;
                file.read_again.get_or_insert(false);
                self.kick_file();
                return;
            }
            WriteOutcome::Failed(message) => {
                tracing::error!("{message}");
                Some(Issue::now(message))
            }
        };
        self.update_config_status(|s| s.write_error = error);
        for waiter in waiters {
            let _ = waiter.send(());
        }
        self.kick_file();
    }

    /// A read of the followed file ended: apply it, or say why not and keep what runs.
    pub(super) fn file_read(&mut self, read: FileRead, hangup: bool) {
        let Some(file) = &mut self.file else {
            return;
        };
        file.busy = false;
        let path = file.path.display().to_string();
        match read {
            FileRead::Unchanged => {
                if hangup {
                    tracing::info!(%path, "configuration unchanged");
                    warn_unverified(&self.applied);
                    self.resolve_again();
                    self.shared.metrics.reload(true);
                }
            }
            FileRead::Refused { text, message } => {
                if let Some(text) = text {
                    file.last_text = text;
                }
                tracing::error!("{message}; keeping the running configuration");
                self.update_config_status(|s| s.last_error = Some(Issue::now(message)));
                self.shared.metrics.reload(false);
            }
            FileRead::Valid {
                text,
                config,
                hash,
                certs,
            } => {
                file.last_text = text;
                crate::control::failpoint::hit("apply");
                self.apply(*config, hash);
                self.serve_certificates(certs);
                self.shared.metrics.reload(true);
            }
        }
        self.kick_file();
    }

    /// Make the running state match a validated configuration, with its hash resolved: the
    /// plan (`reconcile`) is carried out by [`Controller::carry_out`], the path `/add` and
    /// `/rm` take.
    fn apply(&mut self, config: Config, hash: Arc<dyn RingHash>) {
        let members = self.members();
        let mut plan = reconcile(&members, &config, &self.startup);
        let saved_weights = self.only_what_the_save_changed(&mut plan, &config);
        for change in changes(&self.applied, &config, &members, &plan) {
            tracing::info!("configuration change: {change}");
        }
        for field in &plan.needs_restart {
            tracing::warn!(
                field,
                "changed in the file; takes effect after a restart, or an upgrade without \
                 dropping a connection (lb upgrade, or SIGUSR2)"
            );
        }
        self.health.send_replace(config.health.clone());
        // The data plane's settings: each worker serves its new connections by them.
        let front = config.front();
        self.front.send_if_modified(|f| {
            let changed = *f != front;
            *f = front;
            changed
        });
        self.store_admin_token(&config);
        self.follow_acme(&config);
        // New TLS settings for the backends that start (or are checked again) from now on.
        self.launcher.tls.store(Arc::new(tls_by_address(&config)));
        warn_unverified(&config);
        // A kept entry whose `pipelining` or TLS settings changed: the same backend with the
        // new settings.
        let mut repipeline = Vec::new();
        for entry in &config.replicas {
            let id = *entry.id.get_ref();
            if plan.stop.contains(&id) {
                continue; // out of the ring before the swap
            }
            let Some(r) = self.replicas.get(&id) else {
                continue;
            };
            let tls = entry
                .tls_settings
                .clone()
                .filter(|_| r.backend.is_address());
            let protocol = if r.backend.is_address() {
                entry.protocol()
            } else {
                Protocol::Http1
            };
            let wanted = entry.pipelining.unwrap_or(!r.backend.is_address())
                && tls.is_none()
                && !protocol.is_http2();
            if r.backend.pipelining != wanted {
                tracing::info!(hostname = %entry.hostname.get_ref(), id, pipelining = wanted, "configuration change: pipelining of a replica");
            }
            if r.backend.tls != tls {
                tracing::info!(hostname = %entry.hostname.get_ref(), id, tls = tls.is_some(), "configuration change: TLS settings of a backend by address");
            }
            if r.backend.protocol != protocol {
                tracing::info!(hostname = %entry.hostname.get_ref(), id, protocol = protocol.as_str(), "configuration change: protocol of a backend by address");
            }
            if r.backend.pipelining != wanted
                || r.backend.tls != tls
                || r.backend.protocol != protocol
            {
                repipeline.push((id, wanted, tls, protocol));
            }
        }
        // Weights (a changed one re-places the ring with the swap below).
        if let Some(saved) = saved_weights {
            // Shared: the weights the save changed, set in the runtime too for the replicas
            // it keeps (a replica it starts is created with its weight).
            let starting: BTreeSet<u64> = plan.start.iter().map(|s| s.id).collect();
            let mut relabel = Vec::new();
            for (&id, &weight) in &saved {
                self.set_weight(id, weight);
                let kept = members.running.get(&id).or(members.vacant.get(&id));
                if let (Some(hostname), false) = (kept, starting.contains(&id)) {
                    relabel.push(ReplicaSpec::managed(hostname.clone(), id).weighing(weight));
                }
            }
            self.relabel(relabel);
        } else {
            // The file's, for every id it lists; the others' are forgotten, except the ids of
            // `/add`s still starting (not in the file yet).
            for entry in &config.replicas {
                self.set_weight(*entry.id.get_ref(), entry.weight());
            }
            let listed: BTreeSet<u64> = config.replicas.iter().map(|r| *r.id.get_ref()).collect();
            let adding = &self.adding;
            self.weights
                .retain(|id, _| listed.contains(id) || adding.contains_key(id));
        }
        // Ring parameters and hash swap with the remaining replicas in one store; new replicas
        // join only after their first heartbeat.
        let params = RingParams {
            balancer: plan.balancer,
            hash,
            key: config.ring.key_rule(),
            bounded_load: config.ring.bounded_load(),
            slow_start: config.ring.slow_start(),
        };
        drop(self.carry_out(Change {
            stop: plan.stop,
            forget: plan.forget,
            repipeline,
            start: plan.start,
            starts: Starts::Vacancies,
            params: Some(params),
            removed_by: Some("removed by the configuration file"),
        }));
        self.resolve_again();
        tracing::info!("configuration file applied");
        let config_dirs = config.plugin_dirs();
        self.applied = config;
        self.update_config_status(|s| {
            s.last_applied = Some(timestamp());
            s.last_error = None;
            s.needs_restart = plan.needs_restart.iter().map(|f| f.to_string()).collect();
            s.plugin_dirs = config_dirs;
        });
    }
}
