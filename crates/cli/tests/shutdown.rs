//! SIGTERM shuts the hub down gracefully: idle connections close, an upload in progress either
//! finishes or leaves nothing under its real name.

mod common;
use common::*;
use std::time::Duration;
use troca_net::HubClient;
use troca_proto::msg::Put;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_at_sigterm_finishes_and_the_hub_exits() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut idle = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    idle.list("").await.unwrap();
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let body = vec![5u8; 3 << 20];
    let mut up = client
        .put(Put {
            name: "inflight.bin".into(),
            size: body.len() as u64,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    up.write(&body[..1 << 20]).await.unwrap();

    hub.signal_term();
    // The hub has taken the signal once it stops accepting connections.
    while tokio::net::TcpStream::connect(&hub.addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    up.write(&body[1 << 20..]).await.unwrap();
    let done = up.finish(*blake3::hash(&body).as_bytes()).await.unwrap();
    assert_eq!(done.size, body.len() as u64);
    drop(client);
    let (status, _) = tokio::task::spawn_blocking(move || hub.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read(s.share.join("inflight.bin")).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_outlives_the_grace_period_leaves_nothing_under_its_name() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--shutdown-grace", "500ms"]);
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut up = client
        .put(Put {
            name: "cut.bin".into(),
            size: 2 << 20,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    up.write(&[1u8; 1 << 20]).await.unwrap();
    let (status, _) = tokio::task::spawn_blocking(move || hub.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        files_under(&s.share).is_empty(),
        "{:?}",
        files_under(&s.share)
    );
}
