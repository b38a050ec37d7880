//! The subcommands of the `governance` binary.

use std::sync::Arc;

use anyhow::Context;
use governance_core::{policy::SnapshotCache, store::Store, tenancy};
use governance_workers::{WorkerDeps, jobs::RecordEvaluation};
use tokio_util::sync::CancellationToken;

use crate::{
    app::{self, Application},
    cli::{Cli, Command, KeyCommand, SigningKeyCommand, TenantCommand},
    config::Config,
    graphql, telemetry,
};

fn print_key(key: &tenancy::IssuedKey) {
    println!(
        "Tenant `{}` ({}): API key `{}` ({}), shown once:\n\n    {}\n",
        key.tenant_name,
        key.tenant_id,
        key.key_id,
        governance_core::roles::encode(&key.roles).replace(',', ", "),
        key.secret
    );
}

/// Run the command the user asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Some(Command::Schema)) {
        // Needs no configuration, database or logging.
        print!("{}", graphql::sdl());
        return Ok(());
    }
    if let Some(Command::Verify { file, keys, json }) = &cli.command {
        // Offline by design: no configuration, database or network.
        let code = crate::offline_verify::run(file, keys, *json);
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    let config = Config::load(cli.global.config.clone(), &cli.overrides())
        .context("invalid configuration")?;
    // The demo prints its own story; only warnings from the service it runs.
    let level = match cli.command {
        Some(Command::Demo { .. }) => "warn",
        _ => config.log_level.as_str(),
    };
    telemetry::init(config.log_format, level);
    match cli.command {
        None | Some(Command::Serve(_)) => {
            let app = Application::build(config).await?;
            app::cancel_on_signals(app.shutdown_token());
            app.run_until_stopped().await
        }
        Some(Command::Backup { path }) => {
            let db = app::open_database(&config).await?;
            let bytes = governance_core::db::backup(&db, &path).await?;
            println!(
                "Backed up the database to {} ({bytes} bytes). To restore: stop the service, put this file in place of governance.db in the data directory (removing governance.db-wal and governance.db-shm), and start it.",
                path.display()
            );
            Ok(())
        }
        Some(Command::SigningKey { command }) => {
            let path = config.signing.key_path(&config.data_dir);
            match command {
                SigningKeyCommand::Show => {
                    let (ring, created) = governance_core::signing::KeyRing::load_or_create(
                        &path,
                        &config.signing.name,
                    )?;
                    if created {
                        eprintln!("Created the signing key at {}.", path.display());
                    }
                    for key in ring.published() {
                        println!("{} {}", key.status, key.verifier_key);
                    }
                }
                SigningKeyCommand::Rotate => {
                    let new =
                        governance_core::signing::KeyRing::rotate(&path, &config.signing.name)?;
                    println!(
                        "Rotated the signing key at {}. New verifier key:\n\n    {}\n\nThe old one stays published as RETIRED. Restart every replica so they sign with the new key.",
                        path.display(),
                        new.encoded()
                    );
                }
            }
            Ok(())
        }
        Some(Command::Worker) => {
            let egress = config.webhooks.rules()?.egress;
            let db = app::open_database(&config).await?;
            app::migrate(&config, &db).await?;
            let jobs = app::open_queue(&config, &db).await?;
            let shutdown = CancellationToken::new();
            app::cancel_on_signals(shutdown.clone());
            let bus = app::open_bus(&config, shutdown.clone()).await?;
            tracing::info!("governance worker started");
            let store = Store::new(db).with_secrets(app::open_secrets_key(&config)?);
            governance_core::sealing::seal_stored_secrets(&store).await?;
            let cache = SnapshotCache::new();
            governance_workers::run(
                WorkerDeps {
                    recorder: governance_core::steps::Recorder::new(
                        store.clone(),
                        cache.clone(),
                        config.limits.evaluation_budget(),
                    ),
                    store,
                    jobs,
                    bus,
                    cache,
                    renderer: config.renderer(),
                    egress,
                    log: app::log_deps(&config, Arc::new(app::open_signing_key(&config)?)),
                },
                shutdown,
            )
            .await
        }
        Some(Command::Migrate) => {
            let db = app::open_database(&config).await?;
            app::migrate(&config, &db).await?;
            println!("database is up to date");
            Ok(())
        }
        Some(Command::Schema | Command::Verify { .. }) => unreachable!("handled above"),
        // Its own service in a fresh directory: the configuration does not apply.
        Some(Command::Demo { out }) => crate::demo::run(out).await,
        Some(Command::Seed {
            tenant,
            runs,
            steps,
            ended,
        }) => {
            let db = app::open_database(&config).await?;
            app::migrate(&config, &db).await?;
            let store = Store::new(db);
            let tenant_id = tenancy::tenant_id_by_name(store.db(), &tenant).await?;
            let started = std::time::Instant::now();
            let loaded = governance_core::steps::load_synthetic(
                &store,
                &SnapshotCache::new(),
                &tenant_id,
                runs,
                steps,
                ended,
            )
            .await?;
            println!(
                "loaded {} synthetic {}runs, {} steps, in {:.1} s",
                loaded.len(),
                if ended { "ended " } else { "" },
                loaded.len() as u64 * steps,
                started.elapsed().as_secs_f64()
            );
            if ended {
                // The jobs `completeRun` would have enqueued, after the commit as there.
                let started = std::time::Instant::now();
                let jobs = app::open_queue(&config, store.db()).await?;
                for chunk in loaded.chunks(1000) {
                    jobs.enqueue_evaluations(
                        chunk
                            .iter()
                            .map(|run| RecordEvaluation {
                                tenant_id: run.tenant_id.clone(),
                                run_id: run.id.clone(),
                            })
                            .collect(),
                    )
                    .await?;
                }
                println!(
                    "enqueued {} evaluation-record jobs in {:.1} s",
                    loaded.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        Some(Command::Tenant {
            command: TenantCommand::Create { name, roles },
        }) => {
            let roles = governance_core::roles::parse_all(&roles)?;
            let db = app::open_database(&config).await?;
            app::migrate(&config, &db).await?;
            let key = tenancy::create_tenant(&Store::new(db), &name, &roles).await?;
            print_key(&key);
            Ok(())
        }
        Some(Command::Key { command }) => {
            let db = app::open_database(&config).await?;
            app::migrate(&config, &db).await?;
            match command {
                KeyCommand::Create {
                    tenant,
                    name,
                    roles,
                } => {
                    let roles = governance_core::roles::parse_all(&roles)?;
                    let key = tenancy::create_key(&db, &tenant, &name, &roles).await?;
                    print_key(&key);
                }
                KeyCommand::Revoke { key_id } => {
                    let key = tenancy::revoke_key(&db, &key_id).await?;
                    println!(
                        "revoked key `{}` ({}) at {}",
                        key.id,
                        key.name,
                        key.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}
