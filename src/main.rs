//! The `tsmfs` command: parse arguments, run one subcommand, map errors to
//! a one-line message and an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TSMFS_LOG")
                // fuser warns when asked to unmount what `umount` removed.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser::mnt=error")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match cli::run(cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `tsmfs get ... | head` is not an error.
                return ExitCode::SUCCESS;
            }
            eprintln!("tsmfs: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: our messages often include
/// their cause's text already.
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
