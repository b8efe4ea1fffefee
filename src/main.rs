//! The `casebridge` binary: parses the command line, installs the crypto
//! provider and logging, and hands over to the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use casebridge::daemon::config::{self, BrokerConfig, LogFormat, NodeConfig};

#[derive(Parser)]
#[command(
    name = "casebridge",
    version,
    about = "Secure broker for cross-border case-record exchange"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum BrokerCmd {
    /// Copy a stopped broker's sled store (its data_dir) into the
    /// PostgreSQL database that a broker config names: queues, state, log
    /// leaves, checkpoints, cosignatures. The database must hold no broker
    /// data yet; the sled store is only read.
    Migrate {
        /// The sled store's directory.
        #[arg(long)]
        from: PathBuf,
        /// The broker config with `[storage] backend = "postgres"`.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Make the node's next Ed25519 signing and X25519 HPKE keys for a
    /// rotation: written 0600 where the node looks for them ([keys.next],
    /// or next-signing.key and next-hpke.key beside its keys), never over an
    /// existing file. Prints the public keys and the `directory
    /// rotate-node` command that publishes them; the running node switches
    /// to them once a directory lists them (after keys.switch_delay_secs).
    NewKeys {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Public-key infrastructure.
    #[command(subcommand)]
    Pki(Pki),
    /// Make a party's keys and certificate signing request where it lives.
    #[command(subcommand)]
    Keys(casebridge::tools::ca::KeysCmd),
    /// Certificate authorities: make the root or a national CA, sign requests.
    #[command(subcommand)]
    Ca(casebridge::tools::ca::CaCmd),
    /// Read and edit the signed directory: edits go to a draft, and only
    /// `sign` needs the directory key (see deploy/federation.md).
    #[command(subcommand)]
    Directory(casebridge::tools::directory_cli::DirectoryCmd),
    /// Data-protection policy bundles: validate, sign, explain decisions.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Check a broker's or a node's config without starting anything.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run the broker.
    #[command(args_conflicts_with_subcommands = true)]
    Broker {
        /// The broker's config (see deploy/broker.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Instead of serving, re-hash every entry of the stored audit log
        /// and check it against the stored tree and the latest checkpoint
        /// (the broker must be stopped); exit status 1 names the first bad
        /// index.
        #[arg(long)]
        check_log: bool,
        #[command(subcommand)]
        cmd: Option<BrokerCmd>,
    },
    /// Run a national node (--config), or prepare its next keys (new-keys).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        /// The node's config (see deploy/node.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Option<NodeCmd>,
    },
    /// Send a record to one or more agencies.
    Send {
        /// The sending agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// Recipients, CC/agency[,CC/agency...].
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Record kind, e.g. missing-person-trace, mla-request,
        /// wanted-alert (snake_case is accepted too).
        #[arg(long)]
        kind: String,
        /// The record in proto3 JSON (see examples/records).
        #[arg(long)]
        record: PathBuf,
        #[command(flatten)]
        labels: Box<casebridge::tools::cli::LabelArgs>,
        /// Idempotency key (1 to 128 printable ASCII characters): the same
        /// key with the same record and labels sends one record however
        /// often the command runs, for 7 days. A fresh key is made and
        /// printed on stderr if none is given; either way a call that gets
        /// no answer is made again with it, up to 5 times in all. With
        /// --expires-in-days the expiry counts from each run, so a later
        /// run with the same key is other content and is refused.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the calling agency's inbox, with each record's handling notices.
    Inbox {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// Keep printing new entries as they arrive.
        #[arg(long)]
        follow: bool,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Read a record of the agency's inbox: its content and the
    /// restrictions it came with (handling code, purpose, legal basis,
    /// expiry, onward transfer).
    Fetch {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// The record's envelope id, as `inbox` lists it.
        envelope_id: String,
        /// Print the record and its inbox entry as proto3 JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delivery status and receipts of a record the agency sent.
    Status {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// The envelope id `send` printed.
        envelope_id: String,
        /// Print the status as proto3 JSON.
        #[arg(long)]
        json: bool,
    },
    /// List everything the agency sent, with its state and each
    /// recipient's.
    Sent {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
    },
    /// Pass a record of the agency's inbox on to other agencies, with the
    /// restrictions it came with. An H2 record needs its provider's
    /// permission first (request-permission, grant-permission).
    Forward {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// The envelope id of the record to pass on.
        envelope_id: String,
        /// Recipients, CC/agency[,CC/agency...].
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        #[command(flatten)]
        labels: casebridge::tools::cli::OnwardLabelArgs,
        /// Idempotency key, as for `send`: the same key with the same
        /// request passes the record on once; calls that get no answer are
        /// made again with it.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the provider of a record in the agency's inbox for permission to
    /// pass it on to other agencies.
    RequestPermission {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// The envelope id of the record to pass on.
        envelope_id: String,
        /// The agencies to pass it on to, CC/agency[,CC/agency...].
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Why, for the provider (at most 4096 bytes).
        #[arg(long)]
        justification: String,
        /// Idempotency key, as for `send`: the same key with the same
        /// request asks once; calls that get no answer are made again with
        /// it.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// As the provider of a record, grant a permission request received in
    /// the agency's inbox.
    GrantPermission {
        /// The agency's profile.toml.
        #[arg(long)]
        profile: PathBuf,
        /// The envelope id of the permission request, as `inbox` lists it.
        request_envelope_id: String,
        /// The conditions of the permission (at most 4096 bytes).
        #[arg(long, default_value = "")]
        conditions: String,
        /// Idempotency key, as for `send`: the same key with the same
        /// request grants once; calls that get no answer are made again
        /// with it.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the broker's audit log with proofs (auditors).
    #[command(subcommand)]
    Audit(casebridge::tools::audit::AuditCmd),
    /// Measure a throwaway federation of separate processes on loopback
    /// against a raw gRPC echo over the same mutual TLS.
    Bench(Box<casebridge::tools::bench::BenchArgs>),
    /// The echo server `bench` measures against (started by `bench`).
    #[command(hide = true)]
    BenchEcho {
        /// The broker config whose TLS identity the echo presents.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Ask a running broker or node for its gRPC health, over mutual TLS
    /// with the daemon's own certificate; exit status 0 only when it is
    /// SERVING (for readiness probes and monitoring).
    Health {
        /// The daemon's broker.toml, or with --node its node config.
        #[arg(long)]
        config: PathBuf,
        /// The config is a node's.
        #[arg(long)]
        node: bool,
        /// "host:port" to ask; the host must be a name in the daemon's
        /// certificate. Default: localhost and the port the config listens on.
        #[arg(long)]
        address: Option<String>,
        /// One service by its full name, e.g. casebridge.v1.Exchange;
        /// default the server as a whole.
        #[arg(long)]
        service: Option<String>,
        /// Seconds to wait for the answer, connecting included.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Play the scenarios on a throwaway federation and print what happens.
    Demo {
        /// Keep the federation in this directory instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write the audit report (audit-report.html) into this directory
        /// instead of the federation's.
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse a broker or node config and load every file it names (TLS
    /// certificate and key, root and national CA, node keys, log key,
    /// directory key and signed directory, policy bundles), checking them
    /// against each other; exit status 0 and a one-line summary, or one
    /// sentence per problem. Starts nothing and opens no store.
    Check {
        /// The config file.
        file: PathBuf,
        /// The file is a broker's config (default: guessed from its keys).
        #[arg(long, conflicts_with = "node")]
        broker: bool,
        /// The file is a node's config (default: guessed from its keys).
        #[arg(long)]
        node: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Check one bundle: files, manifest, syntax, schema, scope; with
    /// --federation also its signature.
    Validate {
        /// The bundle's directory.
        dir: PathBuf,
        /// A federation directory (from `pki init`) to check the signature against.
        #[arg(long)]
        federation: Option<PathBuf>,
    },
    /// Sign a bundle: with the keys of a federation directory, or with a key
    /// (and the agency's certificate chain).
    Sign {
        /// The bundle's directory.
        dir: PathBuf,
        /// A federation directory (from `pki init`) whose keys sign it.
        #[arg(long)]
        federation: Option<PathBuf>,
        /// The signer's private key (an agency bundle's signer).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The signer's certificate chain, with --key.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Decide a transfer and name the policies that determined the decision.
    Explain(Box<casebridge::tools::policy_cli::ExplainArgs>),
}

#[derive(Subcommand)]
enum Pki {
    /// Write a complete development federation.
    Init {
        /// The directory to write the federation into.
        #[arg(long)]
        dir: PathBuf,
        /// Country codes, comma-separated.
        #[arg(long, value_delimiter = ',')]
        countries: Option<Vec<String>>,
        /// The first broker's port; broker k (from 0) listens on base + k,
        /// node N on base + brokers + N (one broker: node N on base + 1 + N).
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// How many broker endpoints: the broker certificate names broker-1
        /// .. broker-N besides localhost and 127.0.0.1, a config is written
        /// for each (they share one data directory), and every node config
        /// lists them all.
        #[arg(long, default_value_t = 1)]
        brokers: usize,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "casebridge.test")]
        federation: String,
        /// The countries the directory lists as EU members, comma-separated;
        /// every other country is a non-member. Default: HR,SI.
        #[arg(long, value_delimiter = ',')]
        eu_members: Option<Vec<String>>,
    },
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal, never into files or journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} to {addr}"))?;
    // Scripts and tests read this line to learn the port when configured with 0.
    println!("casebridge {what} listening on {}", l.local_addr()?);
    Ok(l)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Pki(Pki::Init {
            dir,
            countries,
            base_port,
            brokers,
            federation,
            eu_members,
        }) => {
            let mut opts = casebridge::tools::pki::InitOptions::new(dir);
            if let Some(cs) = countries {
                opts.countries = cs
                    .iter()
                    .map(|c| c.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            opts.base_port = base_port;
            opts.brokers = brokers;
            opts.federation = federation;
            if let Some(cs) = eu_members {
                opts.eu_members = cs
                    .iter()
                    .map(|c| c.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            let fed = casebridge::tools::pki::init(&opts)?;
            println!("federation written to {}", fed.dir.display());
            for p in &fed.broker_configs {
                println!("  broker:   casebridge broker --config {}", p.display());
            }
            for (cc, p) in &fed.node_configs {
                println!("  node {cc}:  casebridge node --config {}", p.display());
            }
            println!(
                "  {} agency profiles under {}",
                fed.agency_profiles.len(),
                fed.dir.join("agencies").display()
            );
            for (name, p) in &fed.auditor_profiles {
                println!("  auditor {name}: {}", p.display());
            }
            Ok(true)
        }
        Command::Keys(cmd) => casebridge::tools::ca::run_keys(cmd),
        Command::Ca(cmd) => casebridge::tools::ca::run_ca(cmd),
        Command::Directory(cmd) => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::directory_cli::run(cmd)
        }
        Command::Policy(cmd) => {
            init_logging(LogFormat::Human, "warn");
            match cmd {
                PolicyCmd::Validate { dir, federation } => {
                    casebridge::tools::policy_cli::validate(&dir, federation.as_deref())
                }
                PolicyCmd::Sign {
                    dir,
                    federation,
                    key,
                    cert,
                } => {
                    casebridge::tools::policy_cli::sign(
                        &dir,
                        federation.as_deref(),
                        key.as_deref(),
                        cert.as_deref(),
                    )?;
                    Ok(true)
                }
                PolicyCmd::Explain(args) => {
                    casebridge::tools::policy_cli::explain(&args).map(|_| true)
                }
            }
        }
        Command::Broker {
            cmd: Some(BrokerCmd::Migrate { from, to }),
            ..
        } => {
            private_files();
            let cfg: BrokerConfig = config::load(&to)?;
            init_logging(cfg.log, "info");
            let moved = casebridge::daemon::broker::migrate(&from, &cfg).await?;
            println!(
                "{}: {} log entries ({} integrated), {} queued items, {} payloads, {} checkpoints, \
                 {} cosignatures copied into PostgreSQL database {}",
                from.display(),
                moved.log_entries,
                moved.integrated,
                moved.queued,
                moved.payloads,
                moved.checkpoints,
                moved.cosignatures,
                cfg.storage
                    .postgres
                    .as_ref()
                    .map_or("(none)", |p| p.url.as_str()),
            );
            Ok(true)
        }
        Command::Broker {
            config,
            check_log,
            cmd: None,
        } => {
            private_files();
            exit_with_parent();
            let Some(config) = config else {
                anyhow::bail!("broker: --config is required (or a subcommand: migrate)");
            };
            let cfg: BrokerConfig = config::load(&config)?;
            init_logging(cfg.log, "info");
            if check_log {
                return match casebridge::daemon::broker::Broker::check_log(&cfg).await? {
                    Some(size) => {
                        println!(
                            "audit log in {}: every entry of the checkpoint of size {size} re-hashed; \
                             the leaves, the stored tree and the signed root agree",
                            cfg.data_dir.display()
                        );
                        Ok(true)
                    }
                    None => {
                        println!("audit log in {}: no checkpoint yet", cfg.data_dir.display());
                        Ok(true)
                    }
                };
            }
            let broker = casebridge::daemon::broker::Broker::from_config(&cfg).await?;
            let listener = bind(cfg.listen, "broker").await?;
            broker
                .serve(listener, casebridge::daemon::shutdown::shutdown_signal())
                .await?;
            Ok(true)
        }
        Command::Node {
            cmd: Some(NodeCmd::NewKeys { config }),
            ..
        } => {
            private_files();
            let cfg: NodeConfig = config::load(&config)?;
            let next = casebridge::tools::ca::new_node_keys(&cfg)?;
            println!("{}", casebridge::tools::ca::new_keys_report(&cfg, &next));
            Ok(true)
        }
        Command::Node { config, cmd: None } => {
            private_files();
            exit_with_parent();
            let Some(config) = config else {
                anyhow::bail!("node: --config is required (or a subcommand: new-keys)");
            };
            let cfg: NodeConfig = config::load(&config)?;
            init_logging(cfg.log, "info");
            let node = casebridge::daemon::node::Node::from_config(&cfg).await?;
            let listener = bind(cfg.listen, &format!("node {}", cfg.country)).await?;
            node.serve(listener, casebridge::daemon::shutdown::shutdown_signal())
                .await?;
            Ok(true)
        }
        Command::Send {
            profile,
            to,
            kind,
            record,
            labels,
            idempotency_key,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::send(
                &profile,
                &to,
                &kind,
                &record,
                &labels,
                idempotency_key,
                json,
            )
            .await
        }
        Command::Inbox {
            profile,
            follow,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::inbox(&profile, follow, json).await?;
            Ok(true)
        }
        Command::Status {
            profile,
            envelope_id,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::status(&profile, &envelope_id, json).await?;
            Ok(true)
        }
        Command::Fetch {
            profile,
            envelope_id,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::fetch(&profile, &envelope_id, json).await?;
            Ok(true)
        }
        Command::Sent { profile, json } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::sent(&profile, json).await?;
            Ok(true)
        }
        Command::Forward {
            profile,
            envelope_id,
            to,
            labels,
            idempotency_key,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::forward(
                &profile,
                &envelope_id,
                &to,
                &labels,
                idempotency_key,
                json,
            )
            .await
        }
        Command::RequestPermission {
            profile,
            envelope_id,
            to,
            justification,
            idempotency_key,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::request_permission(
                &profile,
                &envelope_id,
                &to,
                &justification,
                idempotency_key,
                json,
            )
            .await
        }
        Command::GrantPermission {
            profile,
            request_envelope_id,
            conditions,
            idempotency_key,
            json,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::cli::grant_permission(
                &profile,
                &request_envelope_id,
                &conditions,
                idempotency_key,
                json,
            )
            .await
        }
        Command::Config(ConfigCmd::Check { file, broker, node }) => {
            use casebridge::tools::config_check::{self, Kind};
            let kind = match (broker, node) {
                (true, _) => Some(Kind::Broker),
                (_, true) => Some(Kind::Node),
                _ => None,
            };
            match config_check::check(&file, kind, casebridge::daemon::clock::now_ms()) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(true)
                }
                Err(problems) => {
                    for p in problems {
                        eprintln!("error: {p}");
                    }
                    Ok(false)
                }
            }
        }
        Command::Audit(cmd) => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::audit::run(cmd).await
        }
        Command::Bench(args) => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::bench::run(*args).await
        }
        Command::BenchEcho { config, listen } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::bench::echo::serve(
                &config,
                listen,
                casebridge::daemon::shutdown::shutdown_signal(),
            )
            .await?;
            Ok(true)
        }
        Command::Health {
            config,
            node,
            address,
            service,
            timeout_secs,
        } => {
            init_logging(LogFormat::Human, "warn");
            casebridge::tools::health::check(&casebridge::tools::health::Target {
                config: &config,
                node,
                address: address.as_deref(),
                service: service.as_deref(),
                timeout: std::time::Duration::from_secs(timeout_secs.max(1)),
            })
            .await
        }
        Command::Demo { dir, report_dir } => {
            // The demo tells its own story; the daemons' warnings about the
            // misbehaving node it plays would only repeat it.
            init_logging(LogFormat::Human, "error");
            casebridge::tools::demo::run(dir, report_dir).await
        }
    }
}

/// A daemon started by the benchmark (which sets
/// [`casebridge::tools::bench::EXIT_WITH_PARENT_ENV`]) is stopped with it,
/// even when the benchmark is killed and has no chance to stop its children.
fn exit_with_parent() {
    #[cfg(target_os = "linux")]
    if std::env::var_os(casebridge::tools::bench::EXIT_WITH_PARENT_ENV).is_some() {
        use rustix::process::{Signal, getppid, set_parent_process_death_signal};
        if let Err(e) = set_parent_process_death_signal(Some(Signal::TERM)) {
            eprintln!("warning: cannot ask to be stopped with the parent process: {e}");
        }
        // The parent may have gone before the request was made.
        if getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
            std::process::exit(1);
        }
    }
}

/// The daemons create nothing that group or others can read: the stores
/// make their directories 0700 and their files 0600 at open, and this covers
/// the files sled creates later (blobs, snapshots).
fn private_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: could not install the ring crypto provider");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", casebridge::tools::cli::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every command, subcommand and option a person can see, with no help
    /// text, by its path.
    fn without_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        if cmd.is_hide_set() {
            return;
        }
        let here = format!("{path} {}", cmd.get_name()).trim().to_string();
        if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
            out.push(here.clone());
        }
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                out.push(format!("{here} <{}>", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                without_help(sub, &here, out);
            }
        }
    }

    #[test]
    fn every_command_and_option_has_help() {
        let mut missing = Vec::new();
        without_help(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "without help text:\n{}",
            missing.join("\n")
        );
    }
}
