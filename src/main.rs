use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use settings_api::{
    Application, Config,
    auth::{Issuer, TokenRequest},
    config::LogFormat,
    telemetry,
};

/// Per-user settings over GraphQL and legacy REST routes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Mint a bearer token signed with the configured key.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    sub: String,
    #[arg(long)]
    email: Option<String>,
    /// A role to grant; repeat for several (`admin` marks an administrator).
    #[arg(long = "role")]
    roles: Vec<String>,
    /// OAuth scopes to limit the token to, space-separated, such as `settings:read`.
    #[arg(long)]
    scope: Option<String>,
    /// How long the token is valid, such as `30m`, `1h` or `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// PEM private key, needed to sign RS256, ES256 and EdDSA tokens.
    #[arg(long)]
    private_key: Option<PathBuf>,
}

/// A request allocates and frees many small strings and JSON trees; under load the system
/// allocator was a sixth of the server's CPU (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Schema => {
            print!("{}", settings_api::graphql::sdl());
            Ok(())
        }
        Command::Token(args) => {
            let config = Config::from_env()?;
            let key = config.jwt.key.as_ref().context(
                "no key is configured: set JWT_SECRET (or JWT_PUBLIC_KEY_FILE and JWT_ALGORITHM); \
                 without one, `settings-api serve` prints a development token",
            )?;
            let private_key = args
                .private_key
                .map(|path| {
                    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
                })
                .transpose()?;
            let issuer = Issuer::new(&config.jwt, key, private_key.as_deref())?;
            println!(
                "{}",
                issuer.mint(&TokenRequest {
                    sub: args.sub,
                    email: args.email,
                    roles: args.roles,
                    scope: args.scope,
                    ttl: args.ttl,
                })?
            );
            Ok(())
        }
        Command::Migrate => {
            let config = Config::from_env()?;
            telemetry::init(config.log_format == LogFormat::Json);
            settings_api::app::migrate(&config).await
        }
        Command::Serve => {
            let config = Config::from_env()?;
            telemetry::init(config.log_format == LogFormat::Json);
            tracing::info!(?config, "starting");
            let app = Application::build(config).await?;
            let url = format!("http://{}/graphql", app.local_addr());
            match app.dev_token() {
                Some(token) => tracing::info!(
                    graphiql = %url,
                    token = %token,
                    "development mode: no JWT key is configured, so one was generated for this run; \
                     GraphiQL sends this token already, other clients send `Authorization: Bearer <token>`"
                ),
                None => tracing::info!(graphiql = %url, "listening"),
            }
            app.run_until_stopped().await?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}
