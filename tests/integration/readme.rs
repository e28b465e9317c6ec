//! The README's commands, as a newcomer would type them: every `vggtiny` line of the blocks it
//! marks for this test runs, in order, on a synthetic dataset, with the training commands cut
//! to a few steps. `vggtiny download` is left out (it needs the internet; `download.rs` tests
//! it against a local server).

use std::path::Path;

use tch::Device;
use vggtiny::model::Vgg16;

use crate::common::*;

const MARK: &str = "<!-- The README test (tests/integration/readme.rs) runs";

/// The `vggtiny` lines of every marked block, in order.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut commands = Vec::new();
    for block in readme.split(MARK).skip(1) {
        let body = block
            .split("```sh\n")
            .nth(1)
            .and_then(|b| b.split("\n```").next())
            .expect("a sh block after the mark");
        commands.extend(
            body.lines()
                .map(|l| l.split(" #").next().unwrap().trim())
                .filter(|l| l.starts_with("vggtiny ") && !l.starts_with("vggtiny download"))
                .map(String::from),
        );
    }
    commands
}

#[test]
fn the_readmes_commands_run_as_written() {
    let commands = readme_commands();
    assert!(commands.len() >= 12, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3, 8);
    // ImageNet-style weights where train-base looks for them by default
    let cache = dir.path().join("cache");
    let weights = cache.join("vggtiny/vgg16-imagenet.safetensors");
    std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
    let features: Vec<_> = Vgg16::new(1000, Device::Cpu)
        .state()
        .into_iter()
        .map(|(n, t)| (n.trim_start_matches("vgg16.").to_string(), t))
        .filter(|(n, _)| n.starts_with("features."))
        .collect();
    vggtiny::io::safetensors::save_tensors(&weights, &features).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vggtiny")).parent().unwrap();
    for line in &commands {
        let mut line = line.clone();
        if line.starts_with("vggtiny train-base") || line.starts_with("vggtiny finetune") {
            line.push_str(" --max-steps 2 --batch-size 8 --log-interval 1 --device cpu");
        }
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .current_dir(dir.path())
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("data", &data)
            .env("OMP_NUM_THREADS", "1")
            .env("XDG_CACHE_HOME", &cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README line `{line}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("runs/report.png").is_file());
    assert!(dir.path().join("runs/third/model.safetensors").is_file());
}
