//! `s3-put`: the upload benchmark's baseline. A file sent straight to an S3 bucket as a
//! multipart upload, with the part size and parts in flight a hub uses, through the same S3
//! client library, and nothing else (no hashing, no hub). Keys from AWS_ACCESS_KEY_ID and
//! AWS_SECRET_ACCESS_KEY. Prints the seconds taken.

use anyhow::{Context, Result};
use object_store::aws::AmazonS3Builder;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::ClientOptions;
use std::io::Read;
use tokio::task::JoinSet;

pub async fn put(
    endpoint: &str,
    bucket: &str,
    file: &std::path::Path,
    key: &str,
    part: usize,
    in_flight: usize,
) -> Result<()> {
    let s3 = bucket_at(endpoint, bucket)?;
    let s3 = std::sync::Arc::new(s3);
    let started = std::time::Instant::now();
    let path = Path::from(key);
    let id = s3.create_multipart(&path).await?;
    let mut f = std::fs::File::open(file).context("open the file")?;
    let mut sending = JoinSet::new();
    let mut ids = Vec::new();
    let mut index = 0;
    loop {
        let mut buf = vec![0u8; part];
        let mut filled = 0;
        while filled < part {
            let n = f.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        while sending.len() >= in_flight {
            ids.push(sending.join_next().await.expect("a part")??);
        }
        let (s3, path, id) = (s3.clone(), path.clone(), id.clone());
        let i = index;
        sending.spawn(async move {
            s3.put_part(&path, &id, i, bytes::Bytes::from(buf).into())
                .await
                .map(|p| (i, p))
        });
        index += 1;
    }
    while let Some(done) = sending.join_next().await {
        ids.push(done??);
    }
    ids.sort_by_key(|(i, _)| *i);
    s3.complete_multipart(&path, &id, ids.into_iter().map(|(_, p)| p).collect())
        .await?;
    println!("{}", started.elapsed().as_secs_f64());
    Ok(())
}

/// `s3-put-files`: every file under `dir` sent straight to the bucket, each as one PUT under
/// `prefix/` and its path, `in_flight` at a time (the small-files upload baseline: what a hub
/// on the store must do for each file besides recording its name). Prints the seconds taken.
pub async fn put_files(
    endpoint: &str,
    bucket: &str,
    dir: &std::path::Path,
    prefix: &str,
    in_flight: usize,
) -> Result<()> {
    use futures_util::StreamExt as _;
    use object_store::ObjectStore as _;
    let s3 = bucket_at(endpoint, bucket)?;
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let started = std::time::Instant::now();
    let puts = futures_util::stream::iter(files).map(|file| {
        let s3 = &s3;
        async move {
            let rest = file.strip_prefix(dir).expect("beneath dir");
            let key = Path::from(format!("{prefix}/{}", rest.display()));
            let data = tokio::fs::read(&file).await?;
            s3.put(&key, bytes::Bytes::from(data).into()).await?;
            anyhow::Ok(())
        }
    });
    let mut puts = puts.buffer_unordered(in_flight);
    while let Some(done) = puts.next().await {
        done?;
    }
    println!("{}", started.elapsed().as_secs_f64());
    Ok(())
}

fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), files)?;
        } else {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// `s3-get-keys`: the objects named on stdin (one key a line) read straight from the bucket,
/// `in_flight` at a time, each written to a file of `dir` (the small-files download baseline).
/// Prints the seconds taken.
pub async fn get_keys(
    endpoint: &str,
    bucket: &str,
    dir: &std::path::Path,
    in_flight: usize,
) -> Result<()> {
    use futures_util::StreamExt as _;
    use object_store::ObjectStore as _;
    let s3 = bucket_at(endpoint, bucket)?;
    let mut keys = String::new();
    std::io::stdin().read_to_string(&mut keys)?;
    std::fs::create_dir_all(dir)?;
    let started = std::time::Instant::now();
    let gets = futures_util::stream::iter(keys.lines().enumerate()).map(|(i, key)| {
        let s3 = &s3;
        async move {
            let data = s3.get(&Path::from(key)).await?.bytes().await?;
            tokio::fs::write(dir.join(i.to_string()), data).await?;
            anyhow::Ok(())
        }
    });
    let mut gets = gets.buffer_unordered(in_flight);
    while let Some(done) = gets.next().await {
        done?;
    }
    println!("{}", started.elapsed().as_secs_f64());
    Ok(())
}

/// The bucket, reached with the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
fn bucket_at(endpoint: &str, bucket: &str) -> Result<object_store::aws::AmazonS3> {
    Ok(AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_virtual_hosted_style_request(false)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()?)
}
