//! `tsmfs fsck`, `tsmfs scrub`, `tsmfs gc`: a progress bar on a terminal,
//! a summary, and a non-zero exit on problems left.

use std::process::ExitCode;

use anyhow::Result;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tsmfs::fs::Fs;

fn bar(template: &str) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal.
    ProgressBar::new(0)
        .with_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()))
}

fn follow(bar: &ProgressBar) -> impl Fn(u64, u64) + '_ {
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}

pub fn fsck(fs: &Fs, repair: bool) -> Result<ExitCode> {
    let progress = bar("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} objects");
    let report = fs.check(repair, &follow(&progress))?;
    progress.finish_and_clear();
    for problem in &report.problems {
        let tag = if !problem.repairable() {
            "not repairable"
        } else if repair {
            "repaired"
        } else {
            "repairable"
        };
        let kind = if problem.is_garbage() { "garbage: " } else { "" };
        println!("{kind}{problem} [{tag}]");
    }
    // Garbage (objects a crash left unreferenced) is no inconsistency.
    let (garbage, problems): (Vec<_>, Vec<_>) = report.problems.iter().partition(|p| p.is_garbage());
    let left = if repair { problems.iter().filter(|p| !p.repairable()).count() } else { problems.len() };
    println!(
        "fsck: {} contents, {} inodes, {} chunks; {} problems, {} garbage, {} repaired, {left} left",
        report.contents,
        report.inodes,
        report.objects,
        problems.len(),
        garbage.len(),
        report.repaired
    );
    Ok(if left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn scrub(fs: &Fs) -> Result<ExitCode> {
    let progress =
        bar("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})");
    let report = fs.scrub(&follow(&progress))?;
    progress.finish_and_clear();
    for (id, reason, moved) in &report.corrupt {
        println!("object {} is corrupt ({reason}); quarantined at {}", id.etag_tag(), moved.display());
    }
    for path in &report.corrupt_variants {
        println!("corrupt variant {} (removed; made again when asked for)", path.display());
    }
    for id in &report.missing {
        println!("object {} is missing", id.etag_tag());
    }
    println!(
        "scrub: {} objects, {} hashed (SHA-1 and blake3); {} corrupt, {} missing; {} variants, {} corrupt",
        report.objects,
        HumanBytes(report.bytes),
        report.corrupt.len(),
        report.missing.len(),
        report.variants,
        report.corrupt_variants.len()
    );
    Ok(if report.corrupt.is_empty() && report.missing.is_empty() && report.corrupt_variants.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `beside_server`: another process serves the data directory (`fs` is
/// open read-only).
pub fn gc(fs: &Fs, beside_server: bool) -> Result<ExitCode> {
    let progress = bar("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} objects");
    let report =
        if beside_server { fs.gc_beside_server(&follow(&progress))? } else { fs.gc(&follow(&progress))? };
    progress.finish_and_clear();
    println!(
        "gc: removed {} objects, {}; {} orphaned compressed variants, {}; {} orphaned outboards",
        report.objects,
        HumanBytes(report.bytes),
        report.orphan_variants,
        HumanBytes(report.orphan_variant_bytes),
        report.orphan_outboards
    );
    Ok(ExitCode::SUCCESS)
}
