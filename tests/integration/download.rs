//! `vggtiny download` against a real HTTP server on 127.0.0.1, started here, serving zip files
//! built here: a plain download, one cut off and resumed with a Range request, a wrong MD5, an
//! archive whose entry tries to escape the target folder, unpacking that meets what an earlier
//! attempt left, and a redirect loop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use md5::{Digest, Md5};

/// Serves `files` over HTTP/1.1 with Range support. The first `cut_first` bytes-limited
/// response is cut off after that many body bytes (the connection closes early), once.
struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
    ranged: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Vec<u8>>, cut_first: Option<usize>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let ranged = Arc::new(AtomicUsize::new(0));
    let (count, ranges) = (Arc::clone(&requests), Arc::clone(&ranged));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let cut = if n == 0 { cut_first } else { None };
            respond(stream.unwrap(), &files, cut, &ranges);
        }
    });
    Server {
        url,
        requests,
        ranged,
    }
}

fn respond(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    cut: Option<usize>,
    ranged: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut start = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            start = v.trim().trim_end_matches('-').parse().unwrap();
            ranged.fetch_add(1, Ordering::SeqCst);
        }
    }
    let Some(body) = files.get(&path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
            body.len() - start,
            start,
            body.len() - 1,
            body.len()
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
    };
    stream.write_all(head.as_bytes()).unwrap();
    let rest = &body[start..];
    let sent = cut.map_or(rest.len(), |c| c.min(rest.len()));
    let _ = stream.write_all(&rest[..sent]);
    let _ = stream.flush();
}

/// A zip of a small Tiny ImageNet tree (under `tiny-imagenet-200/`).
fn dataset_zip(dir: &Path) -> Vec<u8> {
    zip_of_dataset(dir, "tiny-imagenet-200/")
}

/// A zip of a small Tiny ImageNet tree made in `dir`, each name after `prefix`.
fn zip_of_dataset(dir: &Path, prefix: &str) -> Vec<u8> {
    let data = dataset(dir, 2, 3);
    let mut bytes = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
        let options = zip::write::SimpleFileOptions::default();
        for entry in walk(&data) {
            let rel = entry.strip_prefix(&data).unwrap();
            let name = format!("{prefix}{}", rel.display());
            zip.start_file(name, options).unwrap();
            let mut content = Vec::new();
            std::fs::File::open(&entry)
                .unwrap()
                .read_to_end(&mut content)
                .unwrap();
            zip.write_all(&content).unwrap();
        }
        zip.finish().unwrap();
    }
    bytes
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A download that stopped part way: exit 1, the way to resume said, and `kept` bytes of
/// `tiny.zip` kept for the next attempt.
fn assert_stopped_resumably(out: &std::process::Output, to: &Path, kept: u64) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    let part = std::fs::metadata(to.join(".tiny.zip.part")).unwrap();
    assert_eq!(part.len(), kept);
}

fn download(url: &str, to: &Path, md5: &str) -> std::process::Output {
    vggtiny(&["download", "--to", s(to), "--url", url, "--md5", md5])
}

#[test]
fn downloads_checks_and_unpacks_a_dataset_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dataset_zip(&dir.path().join("src"));
    let md5 = md5_hex(&zip);
    let server = serve(HashMap::from([("/tiny.zip".to_string(), zip)]), None);
    let to = dir.path().join("data");
    let out = download(&format!("{}/tiny.zip", server.url), &to, &md5);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = to.join("tiny-imagenet-200");
    assert!(root.join("train").is_dir() && root.join("val/val_annotations.txt").is_file());
    assert!(to.join("tiny.zip").is_file());
    // what came down trains
    let view = ok(&["inspect", "dataset", "--data", s(&root), "--holdout", "0.5"]);
    assert!(view.contains("n90000001"));
    // a second run finds everything in place and downloads nothing
    let before = server.requests.load(Ordering::SeqCst);
    let again = download(&format!("{}/tiny.zip", server.url), &to, &md5);
    assert!(again.status.success());
    assert_eq!(server.requests.load(Ordering::SeqCst), before);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dataset_zip(&dir.path().join("src"));
    let md5 = md5_hex(&zip);
    let half = zip.len() / 2;
    let server = serve(HashMap::from([("/tiny.zip".to_string(), zip)]), Some(half));
    let to = dir.path().join("data");
    let url = format!("{}/tiny.zip", server.url);

    let first = download(&url, &to, &md5);
    assert_stopped_resumably(&first, &to, half as u64);
    assert!(!to.join("tiny-imagenet-200").exists(), "no half dataset");

    let second = download(&url, &to, &md5);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(server.ranged.load(Ordering::SeqCst), 1);
    assert!(to.join("tiny-imagenet-200/train").is_dir());
    assert!(!to.join(".tiny.zip.part").exists());
}

/// A wrong MD5 unpacks nothing and keeps what came down: run again with the right one, and
/// nothing is fetched again. A damaged archive already in place is named with the way out.
#[test]
fn a_wrong_checksum_is_refused_and_nothing_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dataset_zip(&dir.path().join("src"));
    let md5 = md5_hex(&zip);
    let half = zip[..zip.len() / 2].to_vec();
    let server = serve(HashMap::from([("/tiny.zip".to_string(), zip)]), None);
    let to = dir.path().join("data");
    let url = format!("{}/tiny.zip", server.url);
    let out = download(&url, &to, "00000000000000000000000000000000");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("MD5") && stderr.contains("if --md5 is mistyped"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [".tiny.zip.part"], "unpacked or not kept");

    let again = download(&url, &to, &md5);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(server.ranged.load(Ordering::SeqCst), 1, "fetched again");
    assert!(to.join("tiny-imagenet-200/train").is_dir());

    std::fs::write(to.join("tiny.zip"), half).unwrap();
    let out = download(&url, &to, &md5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("damaged or incomplete: delete it"),
        "{stderr}"
    );
}

/// Unpacking: an empty dataset folder in the way is unpacked into, a partly unpacked one is
/// refused with what it holds, the temporary folder of a killed unpacking goes, and an archive
/// without one top-level folder unpacks into `--to`, which is then the dataset.
#[test]
fn unpacking_completes_or_names_what_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dataset_zip(&dir.path().join("src"));
    let flat = zip_of_dataset(&dir.path().join("flat-src"), "");
    let (md5, flat_md5) = (md5_hex(&zip), md5_hex(&flat));
    let files = HashMap::from([
        ("/tiny.zip".to_string(), zip),
        ("/flat.zip".to_string(), flat),
    ]);
    let server = serve(files, None);
    let to = dir.path().join("data");
    let root = to.join("tiny-imagenet-200");
    std::fs::create_dir_all(&root).unwrap();
    let mut ended = Command::new("true").spawn().unwrap();
    ended.wait().unwrap();
    let abandoned = to.join(format!(".unpacking-{}", ended.id()));
    std::fs::create_dir_all(abandoned.join("tiny-imagenet-200")).unwrap();
    // untouched for an hour; a fresh one may be a live unpacking in another pid namespace
    let touched = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&abandoned)
        .status();
    assert!(touched.is_ok_and(|s| s.success()));
    let fresh = to.join(format!(".unpacking-{}", ended.id() + 4_194_304));
    std::fs::create_dir(&fresh).unwrap();

    let url = format!("{}/tiny.zip", server.url);
    let out = download(&url, &to, &md5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        root.join("train").is_dir() && !abandoned.exists(),
        "{stderr}"
    );
    assert!(fresh.exists(), "a fresh folder removed");

    std::fs::remove_file(root.join("wnids.txt")).unwrap();
    let out = download(&url, &to, &md5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let files = walk(&root).len();
    let said = format!("holds {files} of the archive's {} files", files + 1);
    assert!(stderr.contains(&said), "no '{said}' in {stderr}");

    let flat_to = dir.path().join("flat");
    let out = download(&format!("{}/flat.zip", server.url), &flat_to, &flat_md5);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("dataset ready in {}", flat_to.display())
    );
    assert!(flat_to.join("wnids.txt").is_file());
}

/// A redirect loop is an error of its own, not an offer to resume; a timeout past a day is
/// refused as a flag.
#[test]
fn a_redirect_loop_is_not_resumable_and_the_timeout_has_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/loop.zip", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let moved = "HTTP/1.1 302 Found\r\nLocation: /loop.zip\r\nContent-Length: 0\r\n\r\n";
            let _ = stream.write_all(moved.as_bytes());
        }
    });
    let to = dir.path().join("data");
    let out = download(&url, &to, &"0".repeat(32));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("redirect") && !stderr.contains("resume"),
        "{stderr}"
    );
    let huge = [
        "download",
        "--to",
        s(&to),
        "--timeout",
        "10000000000000000000",
    ];
    let err = fails(&huge, 2);
    assert!(err.contains("--timeout"), "{err}");
}

#[test]
fn an_entry_escaping_the_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("tiny-imagenet-200/wnids.txt", options)
            .unwrap();
        zip.write_all(b"n1\n").unwrap();
        zip.start_file("../escaped.txt", options).unwrap();
        zip.write_all(b"gotcha").unwrap();
        zip.finish().unwrap();
    }
    let md5 = md5_hex(&bytes);
    let server = serve(HashMap::from([("/evil.zip".to_string(), bytes)]), None);
    let to = dir.path().join("data");
    let out = download(&format!("{}/evil.zip", server.url), &to, &md5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("outside the target folder"), "{stderr}");
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!to.join("tiny-imagenet-200").exists());
}

/// A server that sends part of the file and then stalls, the connection open: the download
/// gives up after `--timeout` instead of waiting forever, keeps what came, and says how to
/// resume.
#[test]
fn a_stalled_server_times_out_with_a_way_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tiny.zip", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        stream.write_all(&[7u8; 300]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    let to = dir.path().join("data");
    let started = std::time::Instant::now();
    let md5 = "00000000000000000000000000000000";
    let out = vggtiny(&[
        "download",
        "--to",
        s(&to),
        "--url",
        &url,
        "--md5",
        md5,
        "--timeout",
        "1",
    ]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stopped_resumably(&out, &to, 300);
}

/// A file the server does not have is an error with the HTTP status, not an offer to resume;
/// a timeout of 0 is refused.
#[test]
fn a_missing_file_names_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(HashMap::new(), None);
    let to = dir.path().join("data");
    let out = download(&format!("{}/none.zip", server.url), &to, &"0".repeat(32));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP status 404"), "{stderr}");
    assert!(!stderr.contains("resume"), "{stderr}");
    let err = fails(&["download", "--to", s(&to), "--timeout", "0"], 2);
    assert!(err.contains("--timeout"), "{err}");
}
