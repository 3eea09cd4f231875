//! The `berth` binary: parses the command line, calls into the libraries and
//! maps the outcome to an exit code. No logic lives here that another front
//! door (daemon, shim) would also need.

mod commands;
mod daemon;
mod home;
mod supervisor;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{container, image, kube};

/// Exit code for berth's own failures (bad flags, unreadable or invalid
/// programs, bad quantities), as docker uses for its own errors.
pub const EXIT_BERTH_ERROR: u8 = 125;

/// berth runs WebAssembly programs as containers: the same bytes and the
/// same behaviour on every machine, with limits and nothing shared unless
/// granted.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Deferred: parsing builds the arguments of the subcommand given only, not
// of all twenty (a tenth of a millisecond of every start). Help texts come
// from the variants, so the Args structs carry plain comments, which clap
// would otherwise apply over them.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Run a WebAssembly program or image in a new sandbox.
    Run(Box<commands::run::RunArgs>),
    /// Build an image from a Dockerfile.
    Build(image::BuildArgs),
    /// List images.
    Images(image::ImagesArgs),
    /// Give an image another name.
    Tag(image::TagArgs),
    /// Remove image names (blobs are freed by `berth image prune`).
    Rmi(image::RmiArgs),
    /// Show containers or images as JSON.
    Inspect(image::InspectArgs),
    /// Save images to an OCI image-layout tar.
    Save(image::SaveArgs),
    /// Load images from an OCI image-layout tar.
    Load(image::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Download an image from a registry.
    Pull(image::PullArgs),
    /// Upload an image to a registry.
    Push(image::PushArgs),
    /// Store credentials for a registry.
    Login(image::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(image::LogoutArgs),
    /// List containers run with -d.
    Ps(container::PsArgs),
    /// Print a container's output, or a pod's (from the daemon).
    Logs(container::LogsArgs),
    /// Stop running containers.
    Stop(container::StopArgs),
    /// Start stopped containers with their recorded configuration.
    Start(container::StartArgs),
    /// Stop, then start containers.
    Restart(container::StopArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Run the daemon: Deployments, ReplicaSets and Pods, served by a
    /// Kubernetes-style API (foreground).
    Daemon(daemon::DaemonArgs),
    /// Create or update objects from manifests (files, folders or -).
    Apply(kube::ManifestArgs),
    /// Create objects from manifests; objects that exist are refused.
    Create(kube::ManifestArgs),
    /// List the daemon's objects (pods, deployments, replicasets, namespaces).
    Get(kube::GetArgs),
    /// Show an object in detail, with its events.
    Describe(kube::DescribeArgs),
    /// Delete objects by manifest or by type and name.
    Delete(kube::DeleteArgs),
    /// Set the replicas of a Deployment or ReplicaSet.
    Scale(kube::ScaleArgs),
    /// Follow, list or undo a Deployment's rollouts.
    #[command(subcommand)]
    Rollout(kube::RolloutCommand),
    /// Show the CPU and memory pods use.
    Top(kube::TopArgs),
    /// Supervise one container (started by `run -d` and `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The container's ID.
        id: String,
    },
    /// Compile one program under limits (started by berth itself; reads a
    /// compile request on stdin, writes the code on stdout).
    #[command(name = "__compile", hide = true)]
    Compile,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    init_tracing(matches!(cli.command, Command::Daemon(_)));
    let result = match cli.command {
        Command::Daemon(args) => daemon::daemon_command(args),
        Command::Apply(args) => kube::apply_command(args),
        Command::Create(args) => kube::create_command(args),
        Command::Get(args) => kube::get_command(args),
        Command::Describe(args) => kube::describe_command(args),
        Command::Delete(args) => kube::delete_command(args),
        Command::Scale(args) => kube::scale_command(args),
        Command::Rollout(command) => kube::rollout_command(command),
        Command::Top(args) => kube::top_command(args),
        Command::Run(args) => commands::run::run(*args),
        Command::Build(args) => image::build_command(args),
        Command::Images(args) => image::images_command(args),
        Command::Tag(args) => image::tag_command(args),
        Command::Rmi(args) => image::rmi_command(args),
        Command::Inspect(args) => image::inspect_command(args),
        Command::Save(args) => image::save_command(args),
        Command::Load(args) => image::load_command(args),
        Command::Image(command) => image::image_command(command),
        Command::Pull(args) => image::pull_command(args),
        Command::Push(args) => image::push_command(args),
        Command::Login(args) => image::login_command(args),
        Command::Logout(args) => image::logout_command(args),
        Command::Ps(args) => container::ps_command(args),
        Command::Logs(args) => container::logs_command(args),
        Command::Stop(args) => container::stop_command(args),
        Command::Start(args) => container::start_command(args),
        Command::Restart(args) => container::restart_command(args),
        Command::Rm(args) => container::rm_command(args),
        Command::Supervise { id } => container::supervise_command(&id),
        Command::Compile => {
            let code = berth_runtime::compile::child_main();
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("berth: {error:#}");
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}

/// Prints a clap error as one line (help and version go to stdout, exit 0).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(EXIT_BERTH_ERROR);
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("berth: {}", one_line(&error.render().to_string()));
            ExitCode::from(EXIT_BERTH_ERROR)
        }
    }
}

/// Condenses clap's multi-line message (error, details, tip, usage) into
/// one line: the error and the detail lines that belong to it.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    if !first.ends_with(':') {
        return first;
    }
    let details: Vec<&str> = lines
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    format!("{first} {}", details.join(", "))
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings from berth;
/// the daemon, which runs in the foreground, also logs what it does).
fn init_tracing(daemon: bool) {
    let default = if daemon {
        "berth=info,berth_scheduler=info,berth_container=warn,berth_runtime=warn"
    } else {
        "berth=warn,berth_runtime=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <FILE>\n\nUsage: berth run <FILE>\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: <FILE>"
        );
        assert_eq!(
            one_line("error: unexpected argument '--x' found\n\n  tip: ..."),
            "unexpected argument '--x' found"
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
