//! An image folder in trouble: undecodable files (stopping the run, or skipped and recorded),
//! a named pipe and a decompression bomb, a skipped file whose name is not UTF-8, and an image
//! replaced after the run was split on it. Real datasets hold such files, and one of them must
//! neither hang, crash nor silently change a run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

fn jpeg(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn cmyk_jpeg() -> Vec<u8> {
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    comp.set_size(64, 64);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    let pixels: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 13 % 256) as u8).collect();
    started.write_scanlines(&pixels).unwrap();
    started.finish().unwrap()
}

/// A dataset with every kind of trouble an image folder holds.
fn troubled_dataset(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let data = dataset(dir, 2, 10);
    let class = data.join("train/n90000000/images");
    let gradient: Vec<u8> = (0..128 * 96 * 3).map(|i| (i % 251) as u8).collect();
    let good = jpeg(&gradient[..64 * 64 * 3], 64, 64);
    let bad = vec![
        (
            class.join("truncated.JPEG"),
            good[..good.len() / 2].to_vec(),
        ),
        (class.join("empty.JPEG"), Vec::new()),
        (class.join("text.JPEG"), b"this is not an image".to_vec()),
    ];
    for (path, bytes) in &bad {
        std::fs::write(path, bytes).unwrap();
    }
    let mut png = Vec::new();
    let rgba: Vec<u8> = (0..64 * 64 * 4).map(|i| (i % 256) as u8).collect();
    image::RgbaImage::from_raw(64, 64, rgba)
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(class.join("alpha.png"), png).unwrap();
    std::fs::write(class.join("cmyk.JPEG"), cmyk_jpeg()).unwrap();
    std::fs::write(class.join("large.JPEG"), jpeg(&gradient, 128, 96)).unwrap();
    (data, bad.into_iter().map(|(p, _)| p).collect())
}

#[test]
fn undecodable_images_stop_the_run_or_are_skipped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (data, bad) = troubled_dataset(dir.path());
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 2 --no-cache";
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(err.contains("3 image(s) could not be decoded"), "{err}");
    for path in &bad {
        assert!(err.contains(s(path)), "{err}");
    }
    for fine in ["alpha.png", "cmyk.JPEG", "large.JPEG"] {
        assert!(!err.contains(fine), "{fine} should decode: {err}");
    }

    let out = vggtiny(&train_args(
        &data,
        &run,
        &format!("{flags} --skip-bad-images"),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 images were not 64x64: resized (shorter side to 64"),
        "{stderr}"
    );
    let meta: Value = meta_json(&run);
    let skipped: Vec<&str> = meta["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 3);
    assert_eq!(meta["split"]["dataset_size"], 20 + 3);
    // eval recovers the same holdout (5 of the 23 decodable images) without the skipped ones
    let report = eval_json(&data, &run, "--device cpu");
    assert_eq!(report["samples"], 5);
    assert_eq!(report["top1"], meta["epochs"][0]["holdout_top1"]);
}

/// `--resume` and eval check that the dataset holds the very images the run was split on:
/// one image replaced by another (the count unchanged) is refused by both, naming the run;
/// the same images in another place resume and score.
#[test]
fn a_replaced_image_is_refused_and_a_moved_dataset_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let moved = dataset(&dir.path().join("elsewhere"), 2, 8);
    // an undecodable image in both, left out and recorded (relative to train/)
    for tree in [&data, &moved] {
        std::fs::write(tree.join("train/n90000000/images/junk.JPEG"), b"junk").unwrap();
    }
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --skip-bad-images";
    train_random(&data, &run, &format!("{flags} --max-steps 2"));
    let image = std::fs::read_dir(data.join("train/n90000001/images"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gradient: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 253) as u8).collect();
    std::fs::write(&image, jpeg(&gradient, 64, 64)).unwrap();

    let resume = resume_args(&data, &run, flags);
    let err = fails(&resume, 2);
    assert!(err.contains("split over other images"), "{err}");
    let scored = ["eval", "--data", s(&data), "--checkpoint", s(&run)];
    let err = fails(&scored, 2);
    assert!(err.contains("split over other images"), "{err}");

    let resume = resume_args(&moved, &run, flags);
    ok(&resume);
    eval_json(&moved, &run, "");
}

/// Image files that would hang or exhaust the decoder end in a clear error instead: a named
/// pipe among the images (reading it would wait forever) and an image of more pixels than PIL
/// allows (a 30000x30000 JPEG header: 900 megapixels, 2.7 GB decoded). `--skip-bad-images`
/// leaves them out; `--max-image-pixels` moves the cap, and the image cache follows it.
#[test]
fn a_named_pipe_and_a_decompression_bomb_are_refused_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let class = data.join("train/n90000000/images");
    let pipe = class.join("pipe.JPEG");
    let c_path = std::ffi::CString::new(s(&pipe)).unwrap();
    // SAFETY: creates a FIFO at a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let gradient: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 251) as u8).collect();
    let mut bomb = jpeg(&gradient, 64, 64);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]); // 30000 x 30000
    std::fs::write(class.join("bomb.JPEG"), bomb).unwrap();

    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --max-steps 1 --no-cache";
    let started = Instant::now();
    let err = fails(&train_args(&data, &run, flags), 2);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(err.contains("pipe.JPEG: not a regular file"), "{err}");
    assert!(
        err.contains("bomb.JPEG: cannot decode JPEG: 30000x30000 is more than 178956970 pixels"),
        "{err}"
    );
    train_random(&data, &run, &format!("{flags} --skip-bad-images --force"));
    assert_eq!(meta_json(&run)["skipped"].as_array().unwrap().len(), 2);

    // the cap moves both ways, through the image cache too
    let small = dir.path().join("small");
    std::fs::remove_file(&pipe).unwrap();
    std::fs::remove_file(class.join("bomb.JPEG")).unwrap();
    let cached = "--batch-size 4 --holdout 0.25 --max-steps 1";
    let mut args = train_args(&data, &small, cached);
    args.extend(["--max-image-pixels", "4000"]);
    let err = fails(&args, 2);
    assert!(err.contains("64x64 is more than 4000 pixels"), "{err}");
    train_random(&data, &small, cached);
}

/// An undecodable image whose file name is not UTF-8, left out with `--skip-bad-images`: the
/// run records it (lossily: JSON holds text) and ends normally, and eval and `--resume`
/// recover its split.
#[test]
fn a_skipped_image_with_a_non_utf8_name_is_recorded() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2, 8);
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.JPEG");
    std::fs::write(
        data.join("train/n90000000/images").join(name),
        b"not a jpeg",
    )
    .unwrap();
    let run = dir.path().join("run");
    let flags = "--batch-size 4 --holdout 0.25 --epochs 2 --skip-bad-images";
    train_random(&data, &run, &format!("{flags} --max-steps 2"));
    let skipped = meta_json(&run)["skipped"].clone();
    assert!(
        skipped[0].as_str().unwrap().ends_with("bad\u{fffd}.JPEG"),
        "{skipped}"
    );
    eval_json(&data, &run, "");
    let resume = resume_args(&data, &run, flags);
    ok(&resume);
}
