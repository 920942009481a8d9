//! `krunner pull IMAGE`: make the image's rootfs ready and print its path.

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::cli::{GlobalArgs, PullArgs, RegistryArgs};
use crate::image::{
    registry::RegistryOptions, unpack::UnpackOptions, Cancel, ImageStore, PullOptions,
};

/// Builds pull options from the registry arguments (also used by later commands that pull).
pub fn pull_options(global: &GlobalArgs, reg: &RegistryArgs, offline: bool) -> PullOptions {
    PullOptions {
        platform: reg.platform.clone(),
        image_repo: reg.image_repo.clone(),
        registry: RegistryOptions {
            insecure: reg.insecure_registries.clone(),
            auth_files: crate::image::auth::candidate_files(|k| std::env::var(k).ok()),
        },
        offline,
        interactive: std::io::stderr().is_terminal() && !global.quiet,
        parallel_downloads: usize::from(reg.parallel_downloads),
        unpack: UnpackOptions::default(),
    }
}

/// Runs the command.
pub fn run(global: &GlobalArgs, args: PullArgs) -> anyhow::Result<ExitCode> {
    let store = ImageStore::new(super::open_cache(global)?);
    let opts = pull_options(global, &args.registry, args.offline);
    let image = super::runtime()?.block_on(async {
        let cancel = Cancel::default();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("interrupted: stopping the pull and removing partial files");
                on_signal.cancel();
            }
        });
        store.pull(&args.image, &opts, &cancel).await
    })?;
    println!("{}", image.rootfs.display());
    Ok(ExitCode::SUCCESS)
}
