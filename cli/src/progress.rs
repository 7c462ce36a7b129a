//! Progress of long commands (`health`, `health --repair`, `audit verify`,
//! `import-legacy`) on stderr: what is being done, how far, and an
//! estimate of the time left. Only when stderr is a terminal and `--json`
//! is not given; scripts and logs see nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wfstate::store::{Progress, ProgressHook};

/// How often a bar is updated at most: a check of 100,000 items must not
/// spend its time drawing.
const UPDATE_EVERY: Duration = Duration::from_millis(100);

/// The bar of the task under way, if one is shown, and when it was last
/// updated.
static CURRENT: Mutex<Option<(String, ProgressBar, Instant)>> = Mutex::new(None);

/// The hook that draws progress, or `None` where nothing is to be drawn.
pub fn hook(json: bool) -> Option<ProgressHook> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(show))
}

fn show(progress: &Progress<'_>) {
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if current.as_ref().map(|(task, _, _)| task.as_str()) != Some(progress.task) {
        if let Some((_, bar, _)) = current.take() {
            bar.finish_and_clear();
        }
        let template = if progress.bytes {
            "{msg} [{bar:30}] {bytes}/{total_bytes}, {eta} left"
        } else {
            "{msg} [{bar:30}] {pos}/{len}, {eta} left"
        };
        let bar = ProgressBar::with_draw_target(Some(progress.total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(template)
                    .expect("the templates are valid")
                    .progress_chars("=> "),
            )
            .with_message(crate::terminal::for_terminal(progress.task).to_string());
        bar.set_position(progress.done);
        *current = Some((progress.task.to_string(), bar, Instant::now()));
        return;
    }
    if let Some((_, bar, updated)) = current.as_mut()
        && updated.elapsed() >= UPDATE_EVERY
    {
        bar.set_length(progress.total);
        bar.set_position(progress.done);
        *updated = Instant::now();
    }
}

/// Clears the bar of the last task, before the command's own output.
pub fn finish() {
    if let Some((_, bar, _)) = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bar.finish_and_clear();
    }
}
