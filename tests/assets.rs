//! Static assets: compressed variants, made once and stampede-safe, with
//! an in-process server so the test can count compressions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tsmfs::fs::{Fs, FsOptions, PutOptions};
use tsmfs::id::Ino;

use crate::util::{TestFs, caller, sha1_id};

/// A server in this process, on its own runtime.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    server: Option<tsmfs::http::Server>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    fn start(fs: Arc<Fs>) -> (InProcess, Arc<tsmfs::http::Stats>) {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = runtime
            .block_on(tsmfs::http::Server::bind(fs, "127.0.0.1:0".parse().unwrap(), Default::default()))
            .expect("bind");
        let addr = server.local_addr().expect("address");
        let stats = server.stats();
        let mut running = InProcess { runtime, server: Some(server), addr, stop: None, done: None };
        let server = running.server.take().expect("server");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        running.done = Some(running.runtime.spawn(server.serve(async move {
            let _ = stopped.await;
        })));
        running.stop = Some(stop);
        (running, stats)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        let done = self.done.take().expect("running");
        self.runtime.block_on(done).expect("join").expect("serve");
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

struct Got {
    status: u16,
    encoding: Option<String>,
    etag: Option<String>,
    vary: Option<String>,
    body: Vec<u8>,
}

fn get(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().expect("GET");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (encoding, etag, vary) = (header("content-encoding"), header("etag"), header("vary"));
    let body = response.body_mut().with_config().limit(1 << 30).read_to_vec().expect("body");
    Got { status: response.status().as_u16(), encoding, etag, vary, body }
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).expect("valid brotli");
    out
}

fn css() -> Vec<u8> {
    (0..4000)
        .flat_map(|i| {
            format!(".c{i} {{ color: #{:06x}; margin: {}px }}\n", i * 2654435761u64 % 0xffffff, i % 17)
                .into_bytes()
        })
        .collect()
}

#[test]
fn five_hundred_concurrent_requests_for_a_cold_variant_start_one_compression() {
    let t = TestFs::new();
    let body = css();
    t.fs.put(Ino::ROOT, b"site.css", &mut &body[..], PutOptions::default(), &caller()).unwrap();
    let dir = t.dir;
    let fs = Arc::new(t.fs);
    let (server, stats) = InProcess::start(fs.clone());
    let url = server.url("/site.css");

    // 500 clients, each on its own connection, released together.
    let barrier = Arc::new(std::sync::Barrier::new(500));
    let workers: Vec<_> = (0..500)
        .map(|_| {
            let (barrier, url, body) = (barrier.clone(), url.clone(), body.clone());
            std::thread::spawn(move || {
                let agent = agent();
                barrier.wait();
                (0..1)
                    .map(|_| {
                        let got = get(&agent, &url, &[("Accept-Encoding", "gzip, br")]);
                        assert_eq!(got.vary.as_deref(), Some("accept-encoding"));
                        let decoded = match got.encoding.as_deref() {
                            None => got.body,
                            Some("br") => unbrotli(&got.body),
                            Some(other) => panic!("encoding {other}"),
                        };
                        got.status == 200 && decoded == body
                    })
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    let succeeded: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert_eq!(succeeded, 500, "every request answered 200 with the right bytes");
    // The one compression may still be finishing; no second one starts.
    let agent = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let got = get(&agent, &url, &[("Accept-Encoding", "br")]);
        if got.encoding.as_deref() == Some("br") {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "the variant never became ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats.compressions(), 1, "one compression for 500 concurrent requests");
    let id = sha1_id(&body);
    let br_tag = format!("\"{}-br\"", id.etag_tag());
    assert_eq!(ready.etag.as_deref(), Some(br_tag.as_str()), "a variant has its own strong ETag");
    assert_eq!(unbrotli(&ready.body), body);
    assert!(ready.body.len() * 5 < body.len(), "{} of {} bytes", ready.body.len(), body.len());

    // Conditionals per representation.
    let got = get(&agent, &url, &[("Accept-Encoding", "br"), ("If-None-Match", &br_tag)]);
    assert_eq!((got.status, got.vary.as_deref()), (304, Some("accept-encoding")));
    assert_eq!(got.etag.as_deref(), Some(br_tag.as_str()));
    let identity_tag = id.etag();
    let got = get(&agent, &url, &[("Accept-Encoding", "identity"), ("If-None-Match", &identity_tag)]);
    assert_eq!((got.status, got.encoding), (304, None));
    let got = get(&agent, &url, &[("Accept-Encoding", "br"), ("If-None-Match", &identity_tag)]);
    assert_eq!((got.status, got.encoding.as_deref()), (200, Some("br")), "another representation");
    // Ranges come from the identity bytes.
    let got = get(&agent, &url, &[("Accept-Encoding", "br"), ("Range", "bytes=0-2")]);
    assert_eq!((got.status, got.encoding, got.body), (206, None, b".c0".to_vec()));
    // gzip: made once too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(&agent, &url, &[("Accept-Encoding", "gzip")]);
        if got.encoding.as_deref() == Some("gzip") {
            assert_eq!(got.etag, Some(format!("\"{}-gzip\"", id.etag_tag())));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no gzip variant");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats.compressions(), 2);
    server.stop();
    drop(fs);

    // Variants are kept in the store: a restarted server computes none.
    let fs = Arc::new(Fs::open(&dir.path().join("data"), FsOptions::default()).unwrap());
    let (server, stats) = InProcess::start(fs.clone());
    let url = server.url("/site.css");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get(&agent, &url, &[("Accept-Encoding", "br")]).encoding.is_none() {
        assert!(std::time::Instant::now() < deadline, "the stored variant was not found");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats.compressions(), 0);

    // They go with their content.
    fs.put(Ino::ROOT, b"site.css", &mut &b"replaced"[..], PutOptions::default(), &caller()).unwrap();
    fs.sync().unwrap();
    let variants = walkdir::WalkDir::new(dir.path().join("data/variants"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(variants, 0, "the old content's variants are removed with it");
    server.stop();
}

#[test]
fn incompressible_and_small_contents_are_sent_as_they_are() {
    let t = TestFs::new();
    let noise = crate::util::noise(1, 50_000);
    t.fs.put(Ino::ROOT, b"noise.txt", &mut &noise[..], PutOptions::default(), &caller()).unwrap();
    t.fs.put(Ino::ROOT, b"tiny.css", &mut &b"a{}"[..], PutOptions::default(), &caller()).unwrap();
    t.fs.put(Ino::ROOT, b"photo.jpg", &mut &css()[..], PutOptions::default(), &caller()).unwrap();
    let fs = Arc::new(t.fs);
    let (server, stats) = InProcess::start(fs.clone());
    let agent = agent();
    for _ in 0..20 {
        let got = get(&agent, &server.url("/noise.txt"), &[("Accept-Encoding", "br")]);
        assert_eq!((got.encoding, got.body == noise), (None, true));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(stats.compressions() <= 1, "tried once at most");
    let got = get(&agent, &server.url("/tiny.css"), &[("Accept-Encoding", "br")]);
    assert_eq!((got.encoding, got.vary), (None, None), "too small to vary");
    let got = get(&agent, &server.url("/photo.jpg"), &[("Accept-Encoding", "br")]);
    assert_eq!((got.encoding, got.vary), (None, None), "not a compressible type");
    server.stop();
}
