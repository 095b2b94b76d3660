//! `tsmfs serve` (FUSE and WebDAV over one fs core, in one process) and
//! `tsmfs webdav` (the same without the mount), until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tsmfs::fs::{Fs, FsOptions, Origin};
use tsmfs::fuse::{MountOptions, Mounted};

pub struct ServeArgs {
    pub data: PathBuf,
    /// Where to mount; `None`: WebDAV only.
    pub mountpoint: Option<PathBuf>,
    pub listen: SocketAddr,
    pub mount_options: MountOptions,
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let fs = Arc::new(Fs::open(&args.data, FsOptions { read_only: args.mount_options.read_only })?);
    let mounted = match &args.mountpoint {
        Some(mountpoint) => mount_or_explain(&fs, mountpoint, &args.mount_options),
        None => None,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    let served = runtime.block_on(async {
        let server = tsmfs::http::Server::bind(fs.clone(), args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let addr = server.local_addr().context("bound address")?;
        eprintln!("tsmfs: serving {} over WebDAV, listening on http://{addr}/", args.data.display());
        server.serve(stop_signal()).await.context("serve")
    });
    // Requests in flight are done: now the mount, then the metadata.
    if let Some(mounted) = mounted {
        let mountpoint = mounted.mountpoint().to_owned();
        let ended = if mounted.is_finished() { mounted.join() } else { mounted.unmount() };
        ended.with_context(|| format!("unmount {}", mountpoint.display()))?;
        fs.release_all(Origin::Fuse).context("commit files left open on the mount")?;
        eprintln!("tsmfs: unmounted {}", mountpoint.display());
    }
    served?;
    fs.checkpoint().context("checkpoint the metadata")?;
    Ok(ExitCode::SUCCESS)
}

/// Mount, or say on stderr why not and go on without the mount.
fn mount_or_explain(fs: &Arc<Fs>, mountpoint: &Path, options: &MountOptions) -> Option<Mounted> {
    let mounted = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", mountpoint.display()))
        .and_then(|mountpoint| Ok(tsmfs::fuse::mount(fs.clone(), &mountpoint, options)?));
    match mounted {
        Ok(mounted) => {
            eprintln!("tsmfs: mounted at {} (FUSE)", mounted.mountpoint().display());
            Some(mounted)
        }
        Err(e) => {
            eprintln!("tsmfs: not mounted, serving WebDAV only: {e:#}");
            None
        }
    }
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
