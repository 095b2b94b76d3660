//! `tsmfs serve` (FUSE and WebDAV over one fs core, in one process) and
//! `tsmfs webdav` (the same without the mount), until SIGINT or SIGTERM.

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
    pub listen: tsmfs::http::Listen,
    pub fs_options: FsOptions,
    pub mount_options: MountOptions,
    pub http: tsmfs::http::ServerOptions,
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let fs = Arc::new(Fs::open(&args.data, args.fs_options)?);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    // Catch the signals before mounting or saying we listen: a SIGTERM
    // from then on must stop us cleanly (unmounting), not kill us.
    let stop = runtime.block_on(async { stop_signal() })?;
    let mounted = match &args.mountpoint {
        Some(mountpoint) => mount_or_explain(&fs, mountpoint, &args.mount_options),
        None => None,
    };
    let served = runtime.block_on(async {
        let server = tsmfs::http::Server::listen(fs.clone(), &args.listen, args.http.clone())
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let url = server.url().context("bound address")?;
        eprintln!("tsmfs: serving {} over WebDAV, listening on {url}", args.data.display());
        server.serve(stop).await.context("serve")
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
    match tsmfs::fuse::clear_stale_mount(mountpoint) {
        Ok(true) => {
            eprintln!("tsmfs: {} was a stale mount (a tsmfs that died); detached it", mountpoint.display())
        }
        Ok(false) => {}
        Err(e) => eprintln!("tsmfs: {} is a stale mount, and detaching it failed: {e}", mountpoint.display()),
    }
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

/// A future that resolves on the first SIGINT or SIGTERM; the handlers
/// are in place when this returns.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("tsmfs: stopping");
    })
}
