//! The bench's throwaway federation: written with `pki init`, its broker,
//! nodes and echo server started as processes of this very executable on
//! free loopback ports, and stopped at the end: SIGTERM, then SIGKILL after
//! a bound. A [`Daemon`] that is dropped without being stopped is killed, so
//! an error anywhere leaves no process behind.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::protocol::ids::{AgencyId, Country};
use crate::tools::client::AgencyClient;
use crate::tools::pki::{self, Federation, InitOptions};

/// How long a process may take to say it listens.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long a process may take to stop after SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// A running process of this executable.
pub struct Daemon {
    pub name: String,
    /// Where it listens, as it said itself.
    pub addr: SocketAddr,
    child: Child,
    // Kept open so that the process never writes into a closed pipe.
    _stdout: std::io::BufReader<ChildStdout>,
}

impl Daemon {
    /// Starts `exe args...` with its log in `log`, and waits until it prints
    /// the address it listens on.
    pub async fn spawn(
        name: &str,
        exe: &Path,
        args: &[&std::ffi::OsStr],
        log: &Path,
    ) -> anyhow::Result<Daemon> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .env(super::EXIT_WITH_PARENT_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {name} has no standard output");
        };
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = std::io::BufReader::new(out);
            let mut line = String::new();
            let r = reader.read_line(&mut line);
            (reader, line, r)
        });
        match tokio::time::timeout(START_WAIT, reading).await {
            Ok(Ok((reader, line, r))) => {
                let addr = line
                    .split_once("listening on ")
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok());
                let d = Daemon {
                    name: name.to_string(),
                    addr: addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
                    child,
                    _stdout: reader,
                };
                if r.is_ok() && addr.is_some() {
                    return Ok(d);
                }
                drop(d);
                bail!(
                    "the {name} did not start (it printed {}); its log is {}",
                    crate::protocol::bounds::quoted(line.trim()),
                    log.display()
                )
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the {name} did not start within {} s; its log is {}",
                    START_WAIT.as_secs(),
                    log.display()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `bound`.
    pub async fn stop(mut self, bound: Duration) -> anyhow::Result<()> {
        terminate(self.child.id());
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    tracing::warn!(name = %self.name, %status, "stopped with an error");
                }
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the {} did not stop within {} s and was killed",
                    self.name,
                    bound.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(unix)]
fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

#[cfg(not(unix))]
fn terminate(_pid: u32) {}

/// Sets `key` of the TOML file at `path` to `value`, keeping the rest.
fn set_toml(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    table.insert(key.into(), toml::Value::String(value.into()));
    std::fs::write(path, toml::to_string(&table)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The federation on disk and its running processes. Every process binds
/// port 0 and says which port it got; the configs of those that dial it are
/// then written with that address, so no port is reserved and let go.
pub struct BenchFederation {
    pub fed: Federation,
    pub exe: PathBuf,
    pub broker: Option<Daemon>,
    pub echo: Option<Daemon>,
    pub nodes: BTreeMap<Country, Daemon>,
    logs: PathBuf,
}

const ANY_PORT: &str = "127.0.0.1:0";

impl BenchFederation {
    /// Writes a federation of `countries` into `dir`, every daemon listening
    /// on a port of its own choosing.
    pub fn write(dir: &Path, countries: &[Country]) -> anyhow::Result<BenchFederation> {
        let mut opts = InitOptions::new(dir);
        opts.countries = countries.to_vec();
        opts.base_port = 0;
        let fed = pki::init(&opts)?;
        set_toml(&fed.broker_config, "listen", ANY_PORT)?;
        for (_, path) in &fed.node_configs {
            set_toml(path, "listen", ANY_PORT)?;
        }
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(BenchFederation {
            fed,
            exe: std::env::current_exe().context("finding this executable")?,
            broker: None,
            echo: None,
            nodes: BTreeMap::new(),
            logs,
        })
    }

    /// Writes the broker's `[storage]` table for its PostgreSQL database,
    /// keeping the rest of its config.
    pub fn broker_storage(
        &self,
        postgres: crate::daemon::config::PostgresSettings,
    ) -> anyhow::Result<()> {
        use crate::daemon::config::{StorageBackend, StorageSettings};
        let path = &self.fed.broker_config;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut storage: StorageSettings = match table.remove("storage") {
            Some(v) => v.try_into()?,
            None => StorageSettings::default(),
        };
        storage.backend = StorageBackend::Postgres;
        storage.postgres = Some(postgres);
        table.insert("storage".into(), toml::Value::try_from(storage)?);
        std::fs::write(path, toml::to_string(&table)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Starts the broker and points the nodes and the auditors at it.
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        let cfg = self.fed.broker_config.clone();
        let d = Daemon::spawn(
            "broker",
            &self.exe,
            &["broker".as_ref(), "--config".as_ref(), cfg.as_os_str()],
            &self.logs.join("broker.log"),
        )
        .await?;
        let addr = d.addr.to_string();
        self.broker = Some(d);
        for (_, path) in &self.fed.node_configs {
            set_toml(path, "broker", &addr)?;
        }
        for (_, path) in &self.fed.auditor_profiles {
            set_toml(path, "broker", &addr)?;
        }
        Ok(())
    }

    pub async fn start_echo(&mut self) -> anyhow::Result<()> {
        let cfg = self.fed.broker_config.clone();
        let d = Daemon::spawn(
            "echo server",
            &self.exe,
            &[
                "bench-echo".as_ref(),
                "--config".as_ref(),
                cfg.as_os_str(),
                "--listen".as_ref(),
                ANY_PORT.as_ref(),
            ],
            &self.logs.join("echo.log"),
        )
        .await?;
        self.echo = Some(d);
        Ok(())
    }

    /// Starts node `cc` and points its agencies' profiles at it (a node
    /// started again gets another port).
    pub async fn start_node(&mut self, cc: Country) -> anyhow::Result<()> {
        let cfg = self
            .fed
            .node_config(cc)
            .with_context(|| format!("no node {cc}"))?
            .to_path_buf();
        let d = Daemon::spawn(
            &format!("node {cc}"),
            &self.exe,
            &["node".as_ref(), "--config".as_ref(), cfg.as_os_str()],
            &self.logs.join(format!("node-{cc}.log")),
        )
        .await?;
        let addr = d.addr.to_string();
        self.nodes.insert(cc, d);
        for (id, path) in &self.fed.agency_profiles {
            if id.country() == cc {
                set_toml(path, "node", &addr)?;
            }
        }
        Ok(())
    }

    pub fn broker_addr(&self) -> anyhow::Result<SocketAddr> {
        self.broker
            .as_ref()
            .map(|d| d.addr)
            .context("the broker is not running")
    }

    pub fn echo_addr(&self) -> anyhow::Result<SocketAddr> {
        self.echo
            .as_ref()
            .map(|d| d.addr)
            .context("the echo server is not running")
    }

    pub async fn stop_node(&mut self, cc: Country) -> anyhow::Result<()> {
        match self.nodes.remove(&cc) {
            Some(d) => d.stop(STOP_WAIT).await,
            None => Ok(()),
        }
    }

    /// Stops every process: nodes first, then the broker and the echo.
    /// Every one is stopped even when an earlier one fails.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        let nodes = std::mem::take(&mut self.nodes);
        for (_, d) in nodes {
            if let Err(e) = d.stop(STOP_WAIT).await {
                first_error.get_or_insert(e);
            }
        }
        for d in [self.broker.take(), self.echo.take()].into_iter().flatten() {
            if let Err(e) = d.stop(STOP_WAIT).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn broker_pid(&self) -> anyhow::Result<u32> {
        self.broker
            .as_ref()
            .map(Daemon::pid)
            .context("the broker is not running")
    }

    pub fn node_pid(&self, cc: Country) -> anyhow::Result<u32> {
        self.nodes
            .get(&cc)
            .map(Daemon::pid)
            .with_context(|| format!("node {cc} is not running"))
    }

    /// Every running process with its name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = Vec::new();
        if let Some(b) = &self.broker {
            v.push(("broker".into(), b.pid()));
        }
        for (cc, d) in &self.nodes {
            v.push((format!("node {cc}"), d.pid()));
        }
        v
    }

    /// An agency's generated profile.
    pub fn profile(&self, agency: &AgencyId) -> anyhow::Result<&Path> {
        self.fed
            .agency_profile(agency)
            .with_context(|| format!("no profile for {agency}"))
    }

    /// An agency's client of its node, from its profile.
    pub fn client(&self, agency: &AgencyId) -> anyhow::Result<AgencyClient> {
        AgencyClient::from_profile(self.profile(agency)?)
    }
}
