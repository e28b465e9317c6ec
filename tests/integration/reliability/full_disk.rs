//! A full disk while a checkpoint is written: a write torn part way by a file-size limit, and
//! a real tmpfs that fills. The save in progress fails with the OS's words, and the previous
//! checkpoint must stay whole, with no temporary file left, so the run can still resume.

use std::path::Path;
use std::process::Command;

use super::assert_no_temporary_files;
use crate::common::*;
use vggtiny::run_dir::checkpoint::{load_checkpoint, Saved};

/// A write torn part way by the kernel: a file-size limit (RLIMIT_FSIZE, as `ulimit -f` sets
/// it) above the model's size and below the checkpoint's lets the second epoch's checkpoint be
/// written only in part before the write fails ("File too large"). The first epoch's
/// checkpoint must stay as it was byte for byte, load, and resume the run to its end; no
/// temporary file may stay.
#[test]
fn a_write_torn_part_way_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let run = dir.path().join("run");
    // 12 training images in batches of 4: 3 steps an epoch
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --no-cache";
    train_random(&data, &run, &format!("{flags} --max-steps 3"));
    let checkpoint = run.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let model = std::fs::metadata(run.join("model.safetensors"))
        .unwrap()
        .len();
    let limit = (model + before.len() as u64) / 2;
    let mut cmd = command();
    cmd.args(resume_args(&data, &run, flags));
    limit_file_size(&mut cmd, limit);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("checkpoint.safetensors") && stderr.contains("File too large"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Os {"),
        "the OS's words, not a debug form: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_temporary_files(&run);
    assert_eq!(meta_json(&run)["epochs"].as_array().map(Vec::len), Some(1));
    assert!(
        std::fs::read(&checkpoint).unwrap() == before,
        "the previous checkpoint changed"
    );
    let (_, Saved { state, .. }) =
        load_checkpoint(&run).expect("the first epoch's checkpoint loads");
    assert_eq!((state.epoch, state.batch), (2, 0));
    ok(&resume_args(&data, &run, flags));
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 2);
}

/// Starts `cmd` with files limited to `bytes`: a write beyond it fails with EFBIG, after what
/// fits is written (SIGXFSZ, which would kill the process instead, is ignored).
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, two plain system calls (on Linux), no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A real full file system: a tmpfs of 600 MB holds one epoch's files (best model 111 MB,
/// checkpoint 216 MB, model 111 MB) but not a second checkpoint written beside the first.
/// The run must fail with the OS's message, leave no temporary file, and keep the first
/// epoch's checkpoint, model and meta.json.
#[test]
#[ignore = "needs permission to mount a tmpfs (root): scripts/test runs it where mount works"]
fn tmpfs_full_disk_fails_the_save_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600m", "tmpfs", s(&mount)])
        .status()
        .is_ok_and(|st| st.success());
    assert!(mounted, "cannot mount a tmpfs at {}", mount.display());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let run = mount.join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --no-cache";
    let out = vggtiny(&train_args(&data, &run, flags));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        !stderr.contains("Os {"),
        "the OS's words, not a debug form: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_temporary_files(&run);
    let (_, Saved { state, .. }) =
        load_checkpoint(&run).expect("the first epoch's checkpoint is intact");
    assert_eq!(
        (state.epoch, state.batch),
        (2, 0),
        "resumes at the start of epoch 2"
    );
    // every file of the first epoch was written: the disk filled in the second
    assert_eq!(meta_json(&run)["epochs"].as_array().unwrap().len(), 1);
    assert!(run.join("model.safetensors").is_file());
}
