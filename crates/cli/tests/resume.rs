//! Interrupted transfers continue where they stopped and are still verified end to end.

mod common;
use common::*;

const MIB: u64 = 1 << 20;

fn prefix_of(path: &std::path::Path, len: u64) -> Vec<u8> {
    let mut v = std::fs::read(path).unwrap();
    v.truncate(len as usize);
    v
}

#[test]
fn an_interrupted_get_resumes_from_its_part_file() {
    let s = Scratch::new();
    random_file(&s.share.join("big.bin"), 8 * MIB, "resume-get");
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(
        s.client.join("big.bin.part"),
        prefix_of(&s.share.join("big.bin"), 3 * MIB),
    )
    .unwrap();

    let out = hub.troca(&s.client, &["get", "big.bin"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resuming big.bin at byte {}", 3 * MIB)),
        "{err}"
    );
    assert_eq!(
        hash_file(&s.client.join("big.bin")),
        hash_file(&s.share.join("big.bin"))
    );
    assert!(!s.client.join("big.bin.part").exists());
}

#[test]
fn a_stale_part_file_is_detected_and_the_download_starts_over() {
    let s = Scratch::new();
    random_file(&s.share.join("big.bin"), 4 * MIB, "new version");
    let hub = Hub::start(&s.share, &[]);
    random_file(&s.client.join("big.bin.part"), 2 * MIB, "old version");

    let out = hub.troca(&s.client, &["get", "big.bin"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("starting over"), "{err}");
    assert_eq!(
        hash_file(&s.client.join("big.bin")),
        hash_file(&s.share.join("big.bin"))
    );
}

#[test]
fn a_part_file_longer_than_the_remote_file_is_replaced() {
    let s = Scratch::new();
    std::fs::write(s.share.join("small.txt"), "small").unwrap();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("small.txt.part"), "much longer than the file").unwrap();
    ok(&hub.troca(&s.client, &["get", "small.txt"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("small.txt")).unwrap(),
        "small"
    );
}

fn wait_for_partial(share: &std::path::Path, len: u64) {
    let uploads = share.join(".troca/uploads");
    for _ in 0..500 {
        let held = std::fs::read_dir(&uploads)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .map(|e| e.metadata().unwrap().len())
            .max();
        if held == Some(len) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the hub never held {len} bytes of the partial upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_put_resumes_from_what_the_hub_holds() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let src = s.client.join("big.bin");
    random_file(&src, 8 * MIB, "resume-put");
    abandon_upload(&hub, &src, "big.bin", 5 * MIB).await;
    wait_for_partial(&s.share, 5 * MIB);
    assert!(
        !s.share.join("big.bin").exists(),
        "nothing under the real name yet"
    );

    let out = hub.troca(&s.client, &["put", "big.bin"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resuming upload of big.bin at byte {}", 5 * MIB)),
        "{err}"
    );
    assert_eq!(hash_file(&s.share.join("big.bin")), hash_file(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_file_does_not_resume_a_stale_upload() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let src = s.client.join("f.bin");
    random_file(&src, 4 * MIB, "one");
    abandon_upload(&hub, &src, "f.bin", 2 * MIB).await;
    wait_for_partial(&s.share, 2 * MIB);
    // The local file changes (new mtime): the hub's partial bytes belong to another file.
    let before = std::fs::metadata(&src).unwrap().modified().unwrap();
    random_file(&src, 4 * MIB, "two");
    std::fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_modified(before + std::time::Duration::from_secs(1))
        .unwrap();

    let out = hub.troca(&s.client, &["put", "f.bin"]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("resuming"));
    assert_eq!(hash_file(&s.share.join("f.bin")), hash_file(&src));
}
