//! `put --dry-run` and `get --dry-run`: what a transfer would do (send, replace, download,
//! delete), found with the same listings, hash checks and mirror decisions as the transfer
//! itself, with nothing sent, written or deleted. One line per step on stdout (`--json`: an
//! array), as `rsync --dry-run` lists what it would do.

use crate::args::Global;
use crate::client::{
    below_folder, entry_of, extra_here, folder_files, held_here, leave_out_identical, local_target,
    upload_plan, AfterSending, Held, Naming, Notes, Placing, PutRow, UploadSink,
};
use crate::mirror;
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use troca_net::{ClientError, HubClient};

/// One thing the transfer would do.
#[derive(Debug, Serialize)]
struct Step {
    /// `send`, `replace`, `refuse` (taken on the hub; --force would replace it), `create` (an
    /// empty folder), `download`, `delete`.
    action: &'static str,
    /// The hub's name, or a local path for what is deleted here.
    name: String,
    /// Where it would go, for a download.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

impl Step {
    fn new(action: &'static str, name: impl Into<String>) -> Step {
        Step {
            action,
            name: name.into(),
            to: None,
        }
    }
}

/// What a dry run learns while it asks: the files already on the hub, identical, and
/// whether something could not be asked.
#[derive(Default)]
struct Asked {
    identical: Vec<String>,
    failed: bool,
}

impl Notes for Asked {
    fn not_done(&mut self, _: &str, _: &ClientError) {
        self.failed = true;
    }
    fn failed(&self) -> bool {
        self.failed
    }
    fn note(&mut self, _: &str) {}
}

impl UploadSink for Asked {
    fn sent(&mut self, row: PutRow) {
        self.identical.push(row.name);
    }
    fn refused(&mut self, _: &Path, _: &ClientError) {}
    fn stopped(&mut self, _: &ClientError) {}
    fn made(&mut self, _: &str, _: bool) {}
    fn deleted(&mut self, _: &str, _: bool) {}
}

/// `put --dry-run`.
pub(crate) async fn put(
    global: &Global,
    client: &mut HubClient,
    files: &[PathBuf],
    naming: Naming,
    how: Placing,
) -> Result<ExitCode> {
    if files.iter().any(|f| f == Path::new("-")) {
        anyhow::bail!("--dry-run cannot tell what standard input holds: give files");
    }
    let plan = upload_plan(files, &naming)?;
    let after = AfterSending::new(
        &plan.files,
        &plan.skipped,
        &plan.folders,
        &plan.dirs,
        how.delete,
    );
    let mut asked = Asked::default();
    let sorted = leave_out_identical(client, plan.files.clone(), &plan.folders, true, &mut asked)
        .await
        .map_err(|u| u.error)?;
    let mut steps = Vec::new();
    // Files the same on the hub are left alone, but for --force alone, which sends them again.
    if !how.skips_identical() {
        steps.extend(asked.identical.drain(..).map(|n| Step::new("replace", n)));
    }
    for (_, name) in sorted.rest {
        // Below a place listed whole, a name not listed is new; anything else is asked.
        let listed_place = plan
            .folders
            .iter()
            .any(|p| !p.is_empty() && name.starts_with(p.as_str()));
        let there = match sorted.listed.contains_key(&name) {
            true => true,
            false if listed_place => false,
            false => entry_of(client, &name).await?.is_some(),
        };
        let action = match (there, how.replaces()) {
            (false, _) => "send",
            (true, true) => "replace",
            (true, false) => "refuse",
        };
        steps.push(Step::new(action, name));
    }
    for folder in &after.empty {
        // An empty folder already on the hub is left as it is.
        if client.list(&format!("{folder}/")).await?.is_empty() {
            steps.push(Step::new("create", format!("{folder}/")));
        }
    }
    if let Some((places, wanted)) = &after.delete {
        let refused = steps.iter().any(|s| s.action == "refuse");
        if refused || plan.skipped.iter().any(|s| s.why.is_failure()) {
            eprintln!(
                "troca: nothing would be deleted on the hub, as not everything would be sent"
            );
        } else {
            steps.extend(deletions_on_hub(client, places, wanted).await?);
        }
    }
    finish(global, &steps)
}

/// What `put --delete` would delete below each place on the hub (see `mirror::extra`).
async fn deletions_on_hub(
    client: &mut HubClient,
    places: &[String],
    wanted: &mirror::Wanted,
) -> Result<Vec<Step>, ClientError> {
    let mut steps = Vec::new();
    for place in places {
        let listed = client.list(place).await?;
        let extra = mirror::extra(place, listed.iter().map(|e| e.name.as_str()), wanted);
        let folders = extra.folders.into_iter().map(|f| format!("{f}/"));
        steps.extend(folders.chain(extra.files).map(|n| Step::new("delete", n)));
    }
    Ok(steps)
}

/// `get --dry-run`.
pub(crate) async fn get(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    output: Option<PathBuf>,
    how: Placing,
) -> Result<ExitCode> {
    if output.as_deref() == Some(Path::new("-")) {
        anyhow::bail!("--dry-run writes nothing: -o - has nothing to show");
    }
    let mut steps = Vec::new();
    for name in names {
        let Some(files) = folder_files(client, name).await? else {
            let entry = entry_of(client, name).await?;
            let Some(entry) = entry else {
                anyhow::bail!("{} is not on the hub", crate::output::safe(name));
            };
            let target = local_target(name, output.as_deref());
            steps.extend(download_step(entry, target, how).await);
            continue;
        };
        let root = output.clone().unwrap_or_else(|| PathBuf::from("."));
        let folder = name.trim_end_matches('/');
        let parent_len = folder.rfind('/').map_or(0, |i| i + 1);
        for f in &files {
            let Some(rel) = below_folder(&f.name, parent_len) else {
                continue;
            };
            let target = root.join(rel);
            if rel.ends_with('/') {
                if !target.is_dir() {
                    steps.push(Step::new("create", target.display().to_string()));
                }
                continue;
            }
            steps.extend(download_step(f.clone(), target, how).await);
        }
        if how.delete {
            for extra in extra_here(name, &files, &root) {
                let slash = if extra.folder { "/" } else { "" };
                let path = format!("{}{slash}", extra.path.display());
                steps.push(Step::new("delete", path));
            }
        }
    }
    finish(global, &steps)
}

/// What downloading the hub's file `entry` to `target` would do: nothing when `target`
/// holds it already (unless `--force` alone), else where it would land.
async fn download_step(
    entry: troca_proto::msg::Entry,
    target: PathBuf,
    how: Placing,
) -> Option<Step> {
    if how.skips_identical() && target.is_file() {
        let held = held_here(std::iter::once(Held::of(&target, Some(&entry)))).await;
        if held.first() == Some(&true) {
            return None;
        }
    }
    let (action, to) = match target.exists() {
        false => ("download", target),
        true if how.replaces() => ("replace", target),
        true => ("download", troca_net::durable::free_local_path(&target)),
    };
    Some(Step {
        action,
        name: entry.name,
        to: Some(to.display().to_string()),
    })
}

/// Prints the steps (one line each, or a JSON array) and says when there is nothing to do.
fn finish(global: &Global, steps: &[Step]) -> Result<ExitCode> {
    if global.json {
        crate::output::print_json(&steps)?;
        return Ok(ExitCode::SUCCESS);
    }
    if steps.is_empty() && !global.quiet {
        eprintln!("troca: nothing to do (dry run)");
    }
    for s in steps {
        let name = crate::output::safe(&s.name);
        match &s.to {
            Some(to) => println!("{} {name} -> {}", s.action, crate::output::safe(to)),
            None => println!("{} {name}", s.action),
        }
    }
    Ok(ExitCode::SUCCESS)
}
