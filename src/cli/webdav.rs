//! `tsmfs webdav`: serve the tree over WebDAV until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tsmfs::fs::{Fs, FsOptions};

pub fn webdav(data: &Path, listen: SocketAddr, read_only: bool) -> Result<ExitCode> {
    let fs = Arc::new(Fs::open(data, FsOptions { read_only })?);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    runtime.block_on(async {
        let server = tsmfs::http::Server::bind(fs.clone(), listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let addr = server.local_addr().context("bound address")?;
        eprintln!("tsmfs: serving {} over WebDAV, listening on http://{addr}/", data.display());
        server.serve(stop_signal()).await.context("serve")
    })?;
    fs.checkpoint().context("checkpoint the metadata")?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot catch SIGINT/SIGTERM; serving until killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("tsmfs: stopping");
}
