//! Many clients at once, each independent.

mod common;
use common::*;

#[test]
fn fifty_clients_upload_and_download_at_once() {
    let s = Scratch::new();
    // Half the clients download files that are already there while the other half upload.
    for i in 0..25 {
        random_file(
            &s.share.join(format!("existing-{i}.bin")),
            512 * 1024 + i,
            &format!("e{i}"),
        );
    }
    let hub = Hub::start(&s.share, &[]);
    for i in 0..25 {
        random_file(
            &s.client.join(format!("new-{i}.bin")),
            512 * 1024 + i,
            &format!("n{i}"),
        );
    }
    let down = s.tmp.path().join("down");
    std::fs::create_dir(&down).unwrap();
    std::thread::scope(|scope| {
        let mut jobs = Vec::new();
        for i in 0..25 {
            let (hub, s, down) = (&hub, &s, &down);
            jobs.push(
                scope.spawn(move || ok(&hub.troca(&s.client, &["put", &format!("new-{i}.bin")]))),
            );
            jobs.push(
                scope.spawn(move || ok(&hub.troca(down, &["get", &format!("existing-{i}.bin")]))),
            );
        }
        for j in jobs {
            j.join().unwrap();
        }
    });
    for i in 0..25 {
        assert_eq!(
            hash_file(&s.share.join(format!("new-{i}.bin"))),
            hash_file(&s.client.join(format!("new-{i}.bin")))
        );
        assert_eq!(
            hash_file(&down.join(format!("existing-{i}.bin"))),
            hash_file(&s.share.join(format!("existing-{i}.bin")))
        );
    }
    assert_eq!(files_under(&s.share).len(), 50);
}

#[test]
fn two_uploads_of_one_name_at_once_do_not_mix() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    random_file(&s.client.join("a.bin"), 32 << 20, "a");
    random_file(&s.client.join("b.bin"), 32 << 20, "b");
    let (ra, rb) = std::thread::scope(|scope| {
        let a =
            scope.spawn(|| hub.troca(&s.client, &["put", "a.bin", "--as", "same.bin", "--force"]));
        let b =
            scope.spawn(|| hub.troca(&s.client, &["put", "b.bin", "--as", "same.bin", "--force"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    // Either both ran one after the other, or one was told the name is busy; the stored file is
    // always exactly one of the two.
    assert!(ra.status.success() || rb.status.success());
    for r in [&ra, &rb] {
        if !r.status.success() {
            assert!(String::from_utf8_lossy(&r.stderr).contains("being uploaded"));
        }
    }
    let stored = hash_file(&s.share.join("same.bin"));
    assert!(
        stored == hash_file(&s.client.join("a.bin"))
            || stored == hash_file(&s.client.join("b.bin"))
    );
}
